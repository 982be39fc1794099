"""NumPy-style views of device memory: indexing and reshaping without copies.

pycuda's ``GPUArray`` refuses to reshape a non-contiguous array, but the network
layout hands layers exactly such arrays (slices of the last axis of bigger
buffers) and layers reshape them (``flatten_time``). The functions here compute
the shape, strides and byte offset of a view the way NumPy does, and
:class:`StridedViews` gives an array class NumPy's ``a[...]`` and
``a.reshape(...)`` on top of them. Both the GPU arrays and the CPU emulation's
arrays use it, so the tests exercise the same code the GPU runs.
"""

from __future__ import annotations

import numbers
from math import prod

__all__ = ["StridedViews", "index_view", "reshape_strides", "normalize_shape"]


def normalize_shape(shape, size=None):
    """A shape tuple of ints from ``shape`` (an int or a sequence); resolves one ``-1``.

    Args:
        shape: int or sequence of ints.
        size: the number of elements, needed to resolve ``-1``.

    Raises:
        ValueError: negative dimensions, several ``-1``, or a size that does not fit.
    """
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    shape = tuple(int(n) for n in shape)
    unknown = [i for i, n in enumerate(shape) if n == -1]
    if len(unknown) > 1 or any(n < -1 for n in shape):
        raise ValueError(f"invalid shape {shape}")
    if unknown:
        if size is None:
            raise ValueError(f"cannot resolve -1 in {shape} without a size")
        known = prod(n for n in shape if n != -1)
        if known == 0 or size % known:
            raise ValueError(f"cannot reshape an array of size {size} into shape {shape}")
        shape = tuple(size // known if n == -1 else n for n in shape)
    return shape


def index_view(shape, strides, item):
    """The view ``a[item]`` of an array with the given shape and byte strides.

    Supports what NumPy's basic indexing supports: ints, slices (any step),
    ``...`` and ``None``.

    Returns:
        ``(shape, strides, offset)``: the view's shape and byte strides, and the
        byte offset of its first element.

    Raises:
        IndexError: out-of-range ints, too many indices or unsupported index types.
    """
    items = item if isinstance(item, tuple) else (item,)
    if sum(part is Ellipsis for part in items) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = sum(part is not None and part is not Ellipsis for part in items)
    if used > len(shape):
        raise IndexError(f"too many indices: {used} for an array with {len(shape)} dimensions")
    new_shape, new_strides, offset, axis = [], [], 0, 0
    for part in items:
        if part is Ellipsis:
            for _ in range(len(shape) - used):
                new_shape.append(shape[axis])
                new_strides.append(strides[axis])
                axis += 1
        elif part is None:
            new_shape.append(1)
            new_strides.append(0)
        elif isinstance(part, slice):
            start, stop, step = part.indices(shape[axis])
            length = len(range(start, stop, step))
            new_shape.append(length)
            new_strides.append(strides[axis] * step)
            if length:
                offset += start * strides[axis]
            axis += 1
        elif isinstance(part, numbers.Integral) and not isinstance(part, bool):
            index = int(part) + (shape[axis] if part < 0 else 0)
            if not 0 <= index < shape[axis]:
                raise IndexError(
                    f"index {part} is out of bounds for axis {axis} with size {shape[axis]}"
                )
            offset += index * strides[axis]
            axis += 1
        else:
            raise IndexError(
                f"only integers, slices, '...' and None are valid indices, got {part!r}"
            )
    new_shape += shape[axis:]
    new_strides += strides[axis:]
    return tuple(new_shape), tuple(new_strides), offset


def reshape_strides(shape, strides, new_shape, itemsize):
    """Byte strides of ``new_shape`` viewing the same memory, or ``None`` if that needs a copy.

    The algorithm of NumPy's ``_attempt_nocopy_reshape``: groups of axes that
    map onto each other must be contiguous among themselves in the old layout.
    """
    if prod(new_shape) != prod(shape):
        raise ValueError(f"cannot reshape an array of shape {shape} into shape {new_shape}")
    if prod(shape) == 0:
        return _c_strides(new_shape, itemsize)
    old = [(n, s) for n, s in zip(shape, strides) if n != 1]
    old_dims, old_strides = [n for n, _ in old], [s for _, s in old]
    new_strides = [0] * len(new_shape)
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < len(new_shape) and oi < len(old_dims):
        n_new, n_old = new_shape[ni], old_dims[oi]
        while n_new != n_old:
            if n_new < n_old:
                n_new *= new_shape[nj]
                nj += 1
            else:
                n_old *= old_dims[oj]
                oj += 1
        for k in range(oi, oj - 1):
            if old_strides[k] != old_dims[k + 1] * old_strides[k + 1]:
                return None
        new_strides[nj - 1] = old_strides[oj - 1]
        for k in range(nj - 1, ni, -1):
            new_strides[k - 1] = new_strides[k] * new_shape[k]
        ni, nj = nj, nj + 1
        oi, oj = oj, oj + 1
    last = new_strides[ni - 1] if ni >= 1 else itemsize
    for k in range(ni, len(new_shape)):
        new_strides[k] = last
    return tuple(new_strides)


def _c_strides(shape, itemsize):
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


class StridedViews:
    """Mixin: NumPy's basic indexing and no-copy ``reshape`` for a device array class.

    The class provides ``shape``, ``strides`` (bytes), ``dtype`` and
    ``_view(shape, strides, offset)``, which returns a new array of the class
    viewing the same memory from ``offset`` bytes on.
    """

    def __getitem__(self, item):
        shape, strides, offset = index_view(tuple(self.shape), tuple(self.strides), item)
        return self._view(shape, strides, offset)

    def reshape(self, *shape, order="C"):
        """A view with another shape (``a.reshape(2, 3)`` or ``a.reshape((2, 3))``).

        Raises:
            ValueError: the sizes differ, or the array's strides do not allow
                the new shape without a copy (NumPy would copy; a device array
                view must not, since ops write through views).
        """
        if order != "C":
            raise ValueError("only order='C' is supported")
        if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
            shape = shape[0]
        size = prod(self.shape)
        new_shape = normalize_shape(shape, size)
        strides = reshape_strides(
            tuple(self.shape), tuple(self.strides), new_shape, self.dtype.itemsize
        )
        if strides is None:
            raise ValueError(
                f"cannot view an array of shape {tuple(self.shape)} and strides "
                f"{tuple(self.strides)} as shape {new_shape} without a copy"
            )
        return self._view(new_shape, strides, 0)

    def transpose(self, *axes):
        """A view with the axes permuted (reversed by default), like ``numpy.transpose``."""
        if len(axes) == 1 and not isinstance(axes[0], numbers.Integral):
            axes = tuple(axes[0])
        axes = tuple(int(a) for a in axes) or tuple(reversed(range(len(self.shape))))
        if sorted(axes) != list(range(len(self.shape))):
            raise ValueError(f"axes {axes} do not match an array of {len(self.shape)} dimensions")
        shape = tuple(self.shape[a] for a in axes)
        return self._view(shape, tuple(self.strides[a] for a in axes), 0)

    @property
    def T(self):
        """The transposed view."""
        return self.transpose()

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    @property
    def ndim(self):
        """Number of dimensions."""
        return len(self.shape)
