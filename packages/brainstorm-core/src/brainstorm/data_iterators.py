"""Data iterators: feed named data to a network, batch by batch.

Every data item is an array shaped ``(T, B, ...)``: T time steps, B sequences
(use T = 1 for non-sequential data; images are ``(T, B, H, W, C)``). An
iterator is created from named arrays (NumPy arrays or h5py datasets) and,
called with a handler, returns a generator of dicts ``{name: numpy array}``::

    train = Minibatches(100, default=x_train, targets=y_train)
    train = Flip(RandomCrop(Pad(train, {'default': 4}), {'default': (32, 32)}))
    for batch in train(handler):
        net.provide_external_data(batch)

Wrappers (``AddGaussianNoise``, ``Flip``, ``Pad``, ...) take another iterator and
transform some of its named items; each has its own random state, and none of
them modifies the arrays it receives.

Descriptions of iterators hold their parameters and data shapes, never the
data, so describing a trainer never embeds a data set.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from brainstorm.randomness import Seedable
from brainstorm.utils import IteratorValidationError

__all__ = [
    "DataIterator",
    "Undivided",
    "Minibatches",
    "Online",
    "AddGaussianNoise",
    "AddSaltNPepper",
    "Flip",
    "Pad",
    "RandomCrop",
    "OneHot",
    "MultiHot",
]


class DataIterator(Seedable):
    """Base class of data iterators.

    Calling an iterator with a handler returns a generator of dicts mapping
    names to NumPy arrays ``(T, B, ...)``.

    Args:
        data_shapes (dict[str, tuple[int]]): name -> shape of the whole data
            this iterator provides.
        length (int | None): number of batches per pass through the data.

    Attributes:
        data_shapes (dict[str, tuple[int]]): as given.
        length (int | None): as given.
    """

    __undescribed__ = {"data"}

    def __init__(self, data_shapes, length):
        super().__init__()
        self.data_shapes = {
            name: tuple(int(s) for s in shape) for name, shape in data_shapes.items()
        }
        self.length = length

    def __call__(self, handler=None):
        """Iterate once over the data.

        Args:
            handler (brainstorm.handlers.Handler | None): the handler of the
                network that consumes the data (unused by the built-in iterators).

        Returns:
            Iterator[dict[str, numpy.ndarray]]: one dict per batch.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def __repr__(self):
        shapes = ", ".join(f"{name}={shape}" for name, shape in self.data_shapes.items())
        return f"<{type(self).__name__} {shapes}, length={self.length}>"

    def _get_data(self):
        data = getattr(self, "data", None)
        if data is None:
            raise IteratorValidationError(
                f"{type(self).__name__} has no data: it was rebuilt from a description, "
                "which never holds the data; create it again from the data"
            )
        return data


class _Wrapper(DataIterator):
    """Common part of iterators that transform the output of another iterator."""

    def __init__(self, iter, data_shapes=None):
        if not isinstance(iter, DataIterator):
            raise IteratorValidationError(
                f"{type(self).__name__} wraps a DataIterator, got {type(iter).__name__}"
            )
        shapes = iter.data_shapes if data_shapes is None else data_shapes
        super().__init__(shapes, iter.length)
        self.iter = iter

    def _check_names(self, names, what):
        for name in names:
            if name not in self.iter.data_shapes:
                raise IteratorValidationError(
                    f"{type(self).__name__}: {what} names unknown data item {name!r}; the "
                    f"wrapped iterator provides {sorted(self.iter.data_shapes)}"
                )

    def _check_ndim(self, names, ndim, layout):
        for name in names:
            shape = self.iter.data_shapes[name]
            if len(shape) != ndim:
                raise IteratorValidationError(
                    f"{type(self).__name__}: data item {name!r} must be {ndim}-D {layout}, "
                    f"but has shape {shape}"
                )

    def _check_subset(self, given, required, given_what, required_what):
        extra = sorted(set(given) - set(required))
        if extra:
            raise IteratorValidationError(
                f"{type(self).__name__}: {given_what} given for {extra} without a {required_what}"
            )

    def __call__(self, handler=None):
        for data in self.iter(handler):
            yield self._transform(dict(data))

    def _transform(self, data):
        raise NotImplementedError


# ############################ named data #####################################


def _check_named_data(named_data, cls_name):
    """Validate named data; return (number of sequences B, number of time steps T)."""
    if not named_data:
        raise IteratorValidationError(f"{cls_name}: no named data given")
    for name, data in named_data.items():
        if not hasattr(data, "shape") or not hasattr(data, "__getitem__"):
            raise IteratorValidationError(
                f"{cls_name}: data item {name!r} must be an array (or h5py dataset), "
                f"got {type(data).__name__}"
            )
        if len(data.shape) < 3:
            raise IteratorValidationError(
                f"{cls_name}: data item {name!r} must have at least 3 dimensions "
                f"(T, B, ...), but has shape {tuple(data.shape)}"
            )
    shapes = {name: tuple(data.shape) for name, data in named_data.items()}
    for axis, label in ((0, "time steps (T, axis 0)"), (1, "sequences (B, axis 1)")):
        if len({shape[axis] for shape in shapes.values()}) > 1:
            raise IteratorValidationError(
                f"{cls_name}: all data items need the same number of {label}, got {shapes}"
            )
    first = next(iter(shapes.values()))
    if first[1] == 0:
        raise IteratorValidationError(
            f"{cls_name}: the data holds no sequences (B = 0, axis 1), shapes {shapes}"
        )
    return first[1], first[0]


def _read(data, time_slice, batch_slice):
    """A NumPy array of ``data[time_slice, batch_slice]`` (views for NumPy input)."""
    if isinstance(data, np.ndarray):
        return data[time_slice, batch_slice]
    return np.asarray(data[time_slice, batch_slice])


def _lengths_from_mask(mask):
    """Sequence lengths: index of the last time step with a non-zero entry, plus 1."""
    mask = np.asarray(mask[()] if not isinstance(mask, np.ndarray) else mask)
    nonzero = (mask.reshape(mask.shape[0], mask.shape[1], -1) != 0).any(axis=2)  # (T, B)
    lengths = mask.shape[0] - nonzero[::-1].argmax(axis=0)
    lengths[~nonzero.any(axis=0)] = 0
    return lengths


class Undivided(DataIterator):
    """All the data in one batch (one iteration per pass).

    Args:
        **named_data (numpy.ndarray | h5py.Dataset): named arrays ``(T, B, ...)``,
            all with the same T and B.

    Example:
        >>> it = Undivided(default=np.zeros((1, 10, 3)), targets=np.ones((1, 10, 1)))
        >>> [batch['default'].shape for batch in it(None)]
        [(1, 10, 3)]
    """

    def __init__(self, **named_data):
        _check_named_data(named_data, "Undivided")
        super().__init__({name: data.shape for name, data in named_data.items()}, 1)
        self.data = named_data

    def __call__(self, handler=None):
        data = self._get_data()
        everything = slice(None)
        yield {name: _read(value, everything, everything) for name, value in data.items()}


class Minibatches(DataIterator):
    """Batches of ``batch_size`` consecutive sequences.

    Every batch's time axis is cut to the longest sequence in that batch. The
    sequence lengths come from ``cut_according_to``:

    * the name of a data item (default ``'mask'``): the length of a sequence is
      the index of its last time step with a non-zero entry, plus 1. If the
      default ``'mask'`` is absent, the full T is used;
    * a list with one length per sequence;
    * ``None``: always the full T.

    Args:
        batch_size (int): sequences per batch (the last batch may be smaller).
            Defaults to 1.
        shuffle (bool): visit the batches in a random order on every pass. Only
            the order of the batches changes; their contents never do.
            Defaults to True.
        cut_according_to (str | list[int] | None): see above. Defaults to ``'mask'``.
        **named_data (numpy.ndarray | h5py.Dataset): named arrays ``(T, B, ...)``,
            all with the same T and B. h5py datasets are read batch by batch.

    Attributes:
        length (int): number of batches, ``ceil(B / batch_size)``.

    Example:
        >>> it = Minibatches(2, shuffle=False, default=np.zeros((5, 3, 4)))
        >>> [batch['default'].shape for batch in it(None)]
        [(5, 2, 4), (5, 1, 4)]
    """

    __undescribed__ = {"seq_lens", "cut_according_to"}

    def __init__(self, batch_size=1, shuffle=True, cut_according_to="mask", **named_data):
        nr_sequences, time_steps = _check_named_data(named_data, type(self).__name__)
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise IteratorValidationError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise IteratorValidationError(f"batch_size must be positive, got {batch_size}")
        length = int(math.ceil(nr_sequences / batch_size))
        super().__init__({name: data.shape for name, data in named_data.items()}, length)
        self.data = named_data
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.cut_according_to = cut_according_to
        self.seq_lens = self._sequence_lengths(cut_according_to, nr_sequences, time_steps)

    def _sequence_lengths(self, cut_according_to, nr_sequences, time_steps):
        name = type(self).__name__
        if cut_according_to is None or (
            isinstance(cut_according_to, str)
            and cut_according_to == "mask"
            and "mask" not in self.data
        ):
            return np.full(nr_sequences, time_steps, dtype=np.intp)
        if isinstance(cut_according_to, str):
            if cut_according_to not in self.data:
                raise IteratorValidationError(
                    f"{name}: cut_according_to names unknown data item "
                    f"{cut_according_to!r}; available: {sorted(self.data)}"
                )
            return _lengths_from_mask(self.data[cut_according_to])
        lengths = np.asarray(cut_according_to)
        if lengths.shape != (nr_sequences,) or not np.issubdtype(lengths.dtype, np.integer):
            raise IteratorValidationError(
                f"{name}: cut_according_to must be a data name or {nr_sequences} integer "
                f"sequence lengths, got an array of shape {lengths.shape} ({lengths.dtype})"
            )
        if lengths.min() < 0 or lengths.max() > time_steps:
            raise IteratorValidationError(
                f"{name}: sequence lengths must lie in [0, {time_steps}], got "
                f"{lengths.min()}..{lengths.max()}"
            )
        return lengths.astype(np.intp)

    def __describe__(self):
        description = super().__describe__()
        if self.cut_according_to is None or isinstance(self.cut_according_to, str):
            description["cut_according_to"] = self.cut_according_to
        return description

    def __call__(self, handler=None):
        data = self._get_data()
        order = np.arange(self.length)
        if self.shuffle:
            self.rnd.shuffle(order)
        for idx in order:
            batch_slice = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
            # at least one time step, even if every sequence in the batch is empty
            time_slice = slice(0, max(1, int(self.seq_lens[batch_slice].max())))
            yield {name: _read(value, time_slice, batch_slice) for name, value in data.items()}


class Online(Minibatches):
    """One sequence at a time: :class:`Minibatches` with ``batch_size=1``.

    Every sequence is cut to its own length (see ``Minibatches``).

    Args:
        shuffle (bool): visit the sequences in a random order. Defaults to True.
        cut_according_to (str | list[int] | None): as for ``Minibatches``.
            Defaults to ``'mask'``.
        **named_data (numpy.ndarray | h5py.Dataset): named arrays ``(T, B, ...)``.

    Example:
        >>> ds = h5py.File('demo.hdf5', 'r')
        >>> online_train_iter = Online(**ds['training'])
    """

    def __init__(self, shuffle=True, cut_according_to="mask", **named_data):
        super().__init__(1, shuffle, cut_according_to, **named_data)


# ############################ wrappers #######################################


def _check_probability(cls_name, what, name, p):
    if not 0.0 <= p <= 1.0:
        raise IteratorValidationError(
            f"{cls_name}: {what} for {name!r} must lie in [0, 1], got {p}"
        )


class AddGaussianNoise(_Wrapper):
    """Add Gaussian noise to some named data items of another iterator.

    ``x + mean + std * N(0, 1)``, with a standard deviation and mean per item.

    Args:
        iter (DataIterator): provides the data.
        std_dict (dict[str, float]): standard deviation of the noise per name;
            only these items get noise.
        mean_dict (dict[str, float] | None): mean of the noise per name
            (subset of ``std_dict``'s names). Defaults to 0 for all.

    Example:
        >>> noisy = AddGaussianNoise(Minibatches(10, default=x), {'default': 0.1})
    """

    def __init__(self, iter, std_dict, mean_dict=None):
        super().__init__(iter)
        mean_dict = {} if mean_dict is None else dict(mean_dict)
        self._check_names(std_dict, "std_dict")
        self._check_names(mean_dict, "mean_dict")
        self._check_subset(mean_dict, std_dict, "a mean", "standard deviation in std_dict")
        self.std_dict = dict(std_dict)
        self.mean_dict = mean_dict

    def _transform(self, data):
        for name, std in self.std_dict.items():
            x = data[name]
            noise = self.rnd.standard_normal(x.shape) * std + self.mean_dict.get(name, 0.0)
            data[name] = x + noise
        return data


class AddSaltNPepper(_Wrapper):
    """Salt-and-pepper noise on some named data items of another iterator.

    Every value is corrupted with probability ``p``: set to 1 (salt) for a
    fraction ``ratio`` of the corrupted values, to 0 (pepper) for the rest.

    Args:
        iter (DataIterator): provides the data.
        prob_dict (dict[str, float]): corruption probability per name; only
            these items are changed.
        ratio_dict (dict[str, float] | None): fraction of salt per name (subset
            of ``prob_dict``'s names). Defaults to 0.5 for all.

    Example:
        >>> noisy = AddSaltNPepper(Minibatches(10, default=x), {'default': 0.05})
    """

    def __init__(self, iter, prob_dict, ratio_dict=None):
        super().__init__(iter)
        ratio_dict = {} if ratio_dict is None else dict(ratio_dict)
        self._check_names(prob_dict, "prob_dict")
        self._check_names(ratio_dict, "ratio_dict")
        self._check_subset(ratio_dict, prob_dict, "a ratio", "probability in prob_dict")
        for name, p in prob_dict.items():
            _check_probability("AddSaltNPepper", "the probability", name, p)
        for name, r in ratio_dict.items():
            _check_probability("AddSaltNPepper", "the ratio", name, r)
        self.prob_dict = dict(prob_dict)
        self.ratio_dict = ratio_dict

    def _transform(self, data):
        for name, p in self.prob_dict.items():
            salt = p * self.ratio_dict.get(name, 0.5)
            x = np.array(data[name])
            r = self.rnd.random_sample(x.shape)
            x[r < salt] = 1
            x[(r >= salt) & (r < p)] = 0
            data[name] = x
        return data


class Flip(_Wrapper):
    """Flip images horizontally, each sample at random.

    Works on 5-D data ``(T, N, H, W, C)``; a flipped sample has its width axis
    reversed (for all time steps). The input arrays are not modified.

    Args:
        iter (DataIterator): provides the images.
        prob_dict (dict[str, float] | None): flip probability per name.
            Defaults to ``{'default': 0.5}``.

    Example:
        >>> augmented = Flip(Minibatches(100, default=images, targets=labels))
    """

    def __init__(self, iter, prob_dict=None):
        super().__init__(iter)
        prob_dict = {"default": 0.5} if prob_dict is None else dict(prob_dict)
        self._check_names(prob_dict, "prob_dict")
        self._check_ndim(prob_dict, 5, "(T, N, H, W, C)")
        for name, p in prob_dict.items():
            _check_probability("Flip", "the probability", name, p)
        self.prob_dict = prob_dict

    def _transform(self, data):
        for name, p in self.prob_dict.items():
            images = data[name]
            flip = self.rnd.random_sample(images.shape[1]) < p
            flipped = np.array(images)
            flipped[:, flip] = images[:, flip, :, ::-1, :]
            data[name] = flipped
        return data


class Pad(_Wrapper):
    """Pad images by the same number of pixels on all four sides.

    Works on 5-D data ``(T, N, H, W, C)``; the result is
    ``(T, N, H + 2 size, W + 2 size, C)`` with the input's dtype (the reference
    returned float64), so a padding value must be representable in it: pad
    integer images with integers, or convert them to floats first.

    Args:
        iter (DataIterator): provides the images.
        size_dict (dict[str, int]): padding width per name.
        value_dict (dict[str, float] | None): padding value per name (subset of
            ``size_dict``'s names). Defaults to 0 for all.

    Example:
        >>> padded = Pad(Minibatches(100, default=images), {'default': 4})
    """

    def __init__(self, iter, size_dict, value_dict=None):
        value_dict = {} if value_dict is None else dict(value_dict)
        super().__init__(iter)
        self._check_names(size_dict, "size_dict")
        self._check_names(value_dict, "value_dict")
        self._check_subset(value_dict, size_dict, "a padding value", "size in size_dict")
        self._check_ndim(size_dict, 5, "(T, N, H, W, C)")
        for name, size in size_dict.items():
            if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
                raise IteratorValidationError(
                    f"Pad: the size for {name!r} must be a non-negative int, got {size!r}"
                )
        self.size_dict = {name: int(size) for name, size in size_dict.items()}
        self.value_dict = value_dict
        for name, s in self.size_dict.items():
            t, n, h, w, c = self.data_shapes[name]
            self.data_shapes[name] = (t, n, h + 2 * s, w + 2 * s, c)

    def _transform(self, data):
        for name, s in self.size_dict.items():
            images = data[name]
            t, n, h, w, c = images.shape
            padded = np.full(
                (t, n, h + 2 * s, w + 2 * s, c), self.value_dict.get(name, 0), dtype=images.dtype
            )
            padded[:, :, s : s + h, s : s + w, :] = images
            data[name] = padded
        return data


class RandomCrop(_Wrapper):
    """Crop a random ``(h, w)`` window out of every image.

    Works on 5-D data ``(T, N, H, W, C)``; every sample gets its own random
    top-left corner (the same for all its time steps).

    Args:
        iter (DataIterator): provides the images.
        shape_dict (dict[str, tuple[int, int]]): crop height and width per name.

    Example:
        >>> crops = RandomCrop(Pad(train, {'default': 4}), {'default': (32, 32)})
    """

    def __init__(self, iter, shape_dict):
        super().__init__(iter)
        self._check_names(shape_dict, "shape_dict")
        self._check_ndim(shape_dict, 5, "(T, N, H, W, C)")
        checked = {}
        for name, crop in shape_dict.items():
            _, _, height, width, _ = self.data_shapes[name]
            if (
                not isinstance(crop, (tuple, list))
                or len(crop) != 2
                or not all(isinstance(v, numbers.Integral) for v in crop)
            ):
                raise IteratorValidationError(
                    f"RandomCrop: the crop shape for {name!r} must be a pair of ints "
                    f"(height, width), got {crop!r}"
                )
            if not (0 < crop[0] <= height and 0 < crop[1] <= width):
                raise IteratorValidationError(
                    f"RandomCrop: crop shape {tuple(crop)} for {name!r} does not fit into "
                    f"images of height {height} and width {width}"
                )
            checked[name] = (int(crop[0]), int(crop[1]))
        self.shape_dict = checked
        for name, (h, w) in checked.items():
            t, n, _, _, c = self.data_shapes[name]
            self.data_shapes[name] = (t, n, h, w, c)

    def _transform(self, data):
        for name, (h, w) in self.shape_dict.items():
            images = data[name]
            _, n, height, width, _ = images.shape
            top = self.rnd.randint(0, height - h + 1, size=n)
            left = self.rnd.randint(0, width - w + 1, size=n)
            rows = (top[:, None] + np.arange(h))[:, :, None]  # (n, h, 1)
            cols = (left[:, None] + np.arange(w))[:, None, :]  # (n, 1, w)
            samples = np.arange(n)[:, None, None]  # (n, 1, 1)
            data[name] = images[:, samples, rows, cols, :]  # (T, n, h, w, C)
        return data


def _check_vocab_sizes(wrapper, vocab_size_dict):
    for name, size in vocab_size_dict.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise IteratorValidationError(
                f"{type(wrapper).__name__}: the vocabulary size for {name!r} must be a "
                f"positive int, got {size!r}"
            )


def _as_indices(wrapper, name, values, vocab_size):
    indices = np.asarray(values)
    if not np.issubdtype(indices.dtype, np.integer):
        as_int = indices.astype(np.intp)
        if not np.array_equal(as_int, indices):
            raise IteratorValidationError(
                f"{type(wrapper).__name__}: data item {name!r} must hold integer indices"
            )
        indices = as_int
    if indices.size and (indices.min() < 0 or indices.max() >= vocab_size):
        raise IteratorValidationError(
            f"{type(wrapper).__name__}: indices of {name!r} must lie in [0, {vocab_size}), "
            f"got {indices.min()}..{indices.max()}"
        )
    return indices


class OneHot(_Wrapper):
    """Turn integer indices ``(T, B, 1)`` into one-hot vectors ``(T, B, V)`` (bool).

    Items without a vocabulary size are passed through unchanged.

    Args:
        iter (DataIterator): provides the indices.
        vocab_size_dict (dict[str, int]): vocabulary size V per name.

    Example:
        >>> it = OneHot(Undivided(default=np.array([[[2], [0]]])), {'default': 3})
        >>> next(it(None))['default'].astype(int).tolist()
        [[[0, 0, 1], [1, 0, 0]]]
    """

    def __init__(self, iter, vocab_size_dict):
        super().__init__(iter)
        self._check_names(vocab_size_dict, "vocab_size_dict")
        self._check_ndim(vocab_size_dict, 3, "(T, B, 1)")
        for name in vocab_size_dict:
            if self.data_shapes[name][2] != 1:
                raise IteratorValidationError(
                    f"OneHot: data item {name!r} must have shape (T, B, 1), but has shape "
                    f"{self.data_shapes[name]}"
                )
        _check_vocab_sizes(self, vocab_size_dict)
        self.vocab_size_dict = {name: int(v) for name, v in vocab_size_dict.items()}
        for name, size in self.vocab_size_dict.items():
            self.data_shapes[name] = self.data_shapes[name][:2] + (size,)

    def _transform(self, data):
        for name, size in self.vocab_size_dict.items():
            indices = _as_indices(self, name, data[name], size)
            data[name] = np.eye(size, dtype=bool)[indices[:, :, 0]]
        return data


class MultiHot(_Wrapper):
    """Turn K integer indices per step ``(T, B, K)`` into multi-hot vectors ``(T, B, V)``.

    Position ``v`` of the result is True if any of the K indices equals ``v``.
    Items without a vocabulary size are passed through unchanged.

    Args:
        iter (DataIterator): provides the indices.
        vocab_size_dict (dict[str, int]): vocabulary size V per name.

    Example:
        >>> it = MultiHot(Undivided(default=np.array([[[0, 2]]])), {'default': 3})
        >>> next(it(None))['default'].astype(int).tolist()
        [[[1, 0, 1]]]
    """

    def __init__(self, iter, vocab_size_dict):
        super().__init__(iter)
        self._check_names(vocab_size_dict, "vocab_size_dict")
        self._check_ndim(vocab_size_dict, 3, "(T, B, K)")
        _check_vocab_sizes(self, vocab_size_dict)
        self.vocab_size_dict = {name: int(v) for name, v in vocab_size_dict.items()}
        for name, size in self.vocab_size_dict.items():
            self.data_shapes[name] = self.data_shapes[name][:2] + (size,)

    def _transform(self, data):
        for name, size in self.vocab_size_dict.items():
            indices = _as_indices(self, name, data[name], size)
            hot = np.zeros(indices.shape[:2] + (size,), dtype=bool)
            np.put_along_axis(hot, indices, True, axis=2)
            data[name] = hot
        return data
