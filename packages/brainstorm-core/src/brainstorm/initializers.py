"""Initializers: the values a network's parameters start from.

An initializer is a small describable object; calling it with a shape returns a
NumPy array (float64) of that shape. ``Network.initialize`` decides which
initializer each parameter gets, derives a seed for it and casts the result to
the handler's dtype::

    net.initialize({'Hid*': {'W': Gaussian(0.01), 'bias': 0}},
                   default=DenseSqrtFanIn(), fallback=Gaussian())

Weights of a layer are laid out as ``(units, inputs...)``: rows (the first
axis) are the units, the remaining axes are their incoming connections.

An initializer that cannot handle a shape (wrong number of dimensions, not
square, too few units) raises :class:`~brainstorm.utils.InitializationError`,
so that ``evaluate_initializer`` can use a *fallback* instead.
"""

from __future__ import annotations

import numbers

import numpy as np

from brainstorm.randomness import Seedable
from brainstorm.utils import InitializationError

__all__ = [
    "Initializer",
    "ArrayInitializer",
    "DenseSqrtFanIn",
    "DenseSqrtFanInOut",
    "EchoState",
    "Gaussian",
    "Identity",
    "LstmOptInit",
    "Orthogonal",
    "RandomWalk",
    "SparseInputs",
    "SparseOutputs",
    "Uniform",
    "evaluate_initializer",
]


# ############################## base class ###################################


class Initializer(Seedable):
    """Base class of all initializers.

    Subclasses implement ``__call__(shape)``; they draw random numbers only from
    ``self.rnd`` so that reseeding it (``evaluate_initializer(..., seed=s)``)
    makes the result reproducible. Their constructor arguments are stored as
    attributes of the same name, which makes the description list exactly those.
    """

    def __call__(self, shape):
        """Return initial values.

        Args:
            shape (tuple[int]): the shape of the parameter to initialize.

        Returns:
            numpy.ndarray: an array of exactly that shape.

        Raises:
            InitializationError: if this initializer cannot produce that shape.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement __call__")

    def __repr__(self):
        args = ", ".join(f"{key}={value!r}" for key, value in self.__dict__.items() if key != "rnd")
        return f"{type(self).__name__}({args})"

    # helpers for subclasses: each raises InitializationError naming the class

    def _fail(self, message, shape):
        raise InitializationError(f"{type(self).__name__}: {message}, but shape was {shape}")

    def _require_at_least_2d(self, shape):
        if len(shape) < 2:
            self._fail("needs a parameter with at least 2 dimensions", shape)

    def _require_matrix(self, shape, square=False):
        if len(shape) != 2:
            self._fail("works only on 2-D matrices", shape)
        if square and shape[0] != shape[1]:
            self._fail("needs a square matrix", shape)


# ############################## initializers #################################


class ArrayInitializer(Initializer):
    """Use the values of a given array.

    Plain lists and arrays in an initialization dict are wrapped in this
    automatically. Its description is the plain (nested) list of values.

    Args:
        array (array_like): the values; the parameter must have exactly its shape.

    Example:
        >>> ArrayInitializer([[1, 2], [3, 4]])((2, 2))
        array([[1., 2.],
               [3., 4.]])
    """

    def __init__(self, array):
        super().__init__()
        self.array = np.array(array)

    def __call__(self, shape):
        return _values_from_array(self.array, shape)

    def __describe__(self):
        return self.array.tolist()

    def __repr__(self):
        return f"ArrayInitializer(<array of shape {self.array.shape}>)"


_DENSE_FAN_IN_SCALES = {
    "rel": np.sqrt(6),
    "tanh": np.sqrt(3),
    "sigmoid": 4 * np.sqrt(3),
    "linear": 1.0,
}
_DENSE_FAN_IN_OUT_SCALES = {
    "rel": np.sqrt(12),
    "tanh": np.sqrt(6),
    "sigmoid": 4 * np.sqrt(6),
    "linear": 1.0,
}


def _resolve_scale(scale, table, cls_name):
    if isinstance(scale, str):
        if scale not in table:
            raise ValueError(
                f"{cls_name}: unknown scale {scale!r}; use a number or one of {sorted(table)}"
            )
        return table[scale]
    return scale


class _DenseSqrt(Initializer):
    """Common part of the ``DenseSqrt*`` initializers: uniform in
    ``[-scale/sqrt(n), scale/sqrt(n)]``, with ``n`` from :meth:`_fan` and named
    scales from ``_scales``."""

    __default_values__ = {"scale": "rel"}
    _scales = {}

    def __init__(self, scale="rel"):
        super().__init__()
        _resolve_scale(scale, self._scales, type(self).__name__)
        self.scale = scale

    def _fan(self, shape):
        raise NotImplementedError

    def __call__(self, shape):
        self._require_at_least_2d(shape)
        scale = _resolve_scale(self.scale, self._scales, type(self).__name__)
        return scale * self.rnd.uniform(-1.0, 1.0, size=shape) / np.sqrt(self._fan(shape))


class DenseSqrtFanIn(_DenseSqrt):
    """Uniform in ``[-scale/sqrt(n), scale/sqrt(n)]``, n = number of inputs per unit.

    ``n`` is the product of all but the first dimension. Named scales, suited to
    the activation function of the layer: ``'rel'`` sqrt(6), ``'tanh'`` sqrt(3),
    ``'sigmoid'`` 4*sqrt(3), ``'linear'`` 1. When the numbers of inputs and
    units are equal this equals :class:`DenseSqrtFanInOut`.

    Args:
        scale (float | str): the scaling factor or its name. Defaults to ``'rel'``.
    """

    _scales = _DENSE_FAN_IN_SCALES

    def _fan(self, shape):
        return np.prod(shape[1:])


class DenseSqrtFanInOut(_DenseSqrt):
    """Uniform in ``[-scale/sqrt(n1+n2), scale/sqrt(n1+n2)]`` (Glorot & Bengio 2010).

    ``n1`` is the number of units (first dimension), ``n2`` the number of inputs
    per unit (product of the others). Named scales: ``'rel'`` sqrt(12),
    ``'tanh'`` sqrt(6), ``'sigmoid'`` 4*sqrt(6), ``'linear'`` 1.

    Args:
        scale (float | str): the scaling factor or its name. Defaults to ``'rel'``.
    """

    _scales = _DENSE_FAN_IN_OUT_SCALES

    def _fan(self, shape):
        return shape[0] + np.prod(shape[1:])


class EchoState(Initializer):
    """Classic echo-state initialization of a square (recurrent) matrix.

    Draws uniformly from ``[-0.5, 0.5]`` and rescales the matrix so that its
    spectral radius (largest absolute eigenvalue) is ``spectral_radius``.
    It should be below 1 for the echo-state property.

    Args:
        spectral_radius (float): the spectral radius of the result. Defaults to 1.

    Example:
        >>> net.initialize(default=Gaussian(), Recurrent={'R': EchoState(0.77)})
    """

    __default_values__ = {"spectral_radius": 1.0}

    def __init__(self, spectral_radius=1.0):
        super().__init__()
        self.spectral_radius = spectral_radius

    def __call__(self, shape):
        self._require_matrix(shape, square=True)
        weights = self.rnd.uniform(-0.5, 0.5, size=shape)
        radius = np.max(np.abs(np.linalg.eigvals(weights)))
        if radius == 0:  # only for degenerate draws such as a 1x1 zero
            return weights
        return weights * (self.spectral_radius / radius)


class Gaussian(Initializer):
    """Normally distributed values with the given mean and standard deviation.

    Args:
        std (float): standard deviation. Defaults to 0.1.
        mean (float): mean. Defaults to 0.

    Example:
        >>> net.initialize({'Conv*': {'W': Gaussian(0.01), 'bias': 0}})
    """

    __default_values__ = {"mean": 0.0}

    def __init__(self, std=0.1, mean=0.0):
        super().__init__()
        self.std = std
        self.mean = mean

    def __call__(self, shape):
        return self.rnd.standard_normal(shape) * self.std + self.mean


class Identity(Initializer):
    """A (scaled) identity matrix plus a little Gaussian noise.

    Args:
        scale (float): factor of the identity. Defaults to 1.
        std (float): standard deviation of the added noise. Defaults to 0.01.
        enforce_square (bool): raise ``InitializationError`` for non-square
            matrices (otherwise use a rectangular "identity" with ones on the
            main diagonal). Defaults to True.
    """

    __default_values__ = {"scale": 1.0, "std": 0.01, "enforce_square": True}

    def __init__(self, scale=1.0, std=0.01, enforce_square=True):
        super().__init__()
        self.scale = scale
        self.std = std
        self.enforce_square = enforce_square

    def __call__(self, shape):
        self._require_matrix(shape, square=self.enforce_square)
        weights = np.eye(shape[0], shape[1]) * self.scale
        weights += self.rnd.standard_normal(shape) * self.std
        return weights


class LstmOptInit(Initializer):
    """Initialize four stacked LSTM blocks separately.

    The first dimension is split into four equal parts (input block, input gate,
    forget gate, output gate, in that order); each part is initialized by its
    own number or initializer (seeded from this initializer's random state).
    Useful whenever the parameters of the four blocks are concatenated.

    Args:
        input_block (float | Initializer): for the first quarter. Defaults to 0.
        input_gate (float | Initializer): for the second quarter. Defaults to 0.
        forget_gate (float | Initializer): for the third quarter. Defaults to 0.
        output_gate (float | Initializer): for the last quarter. Defaults to 0.

    Example:
        >>> LstmOptInit(input_block=Gaussian(), forget_gate=1.0)((8, 3)).shape
        (8, 3)
    """

    __default_values__ = {
        "input_block": 0.0,
        "input_gate": 0.0,
        "forget_gate": 0.0,
        "output_gate": 0.0,
    }

    def __init__(self, input_block=0.0, input_gate=0.0, forget_gate=0.0, output_gate=0.0):
        super().__init__()
        self.input_block = input_block
        self.input_gate = input_gate
        self.forget_gate = forget_gate
        self.output_gate = output_gate

    def __call__(self, shape):
        if len(shape) < 1 or shape[0] % 4 != 0:
            self._fail("needs a first dimension divisible by 4", shape)
        n = shape[0] // 4
        sub_shape = (n,) + tuple(shape[1:])
        parts = (self.input_block, self.input_gate, self.forget_gate, self.output_gate)
        weights = np.zeros(shape)
        for i, part in enumerate(parts):
            weights[i * n : (i + 1) * n] = evaluate_initializer(
                part, sub_shape, seed=self.rnd.generate_seed()
            )
        return weights


class Orthogonal(Initializer):
    """A (scaled) matrix with orthonormal columns or rows (Saxe et al. 2013).

    Takes the orthogonal factor of the SVD of a Gaussian matrix: for a tall or
    square shape the columns are orthonormal, for a wide shape the rows.

    Args:
        scale (float): factor applied to the orthogonal matrix. Defaults to 1.

    Reference:
        Saxe, McClelland and Ganguli. "Exact solutions to the nonlinear dynamics
        of learning in deep linear neural networks." arXiv:1312.6120 (2013).
    """

    __default_values__ = {"scale": 1.0}

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale

    def __call__(self, shape):
        self._require_matrix(shape)
        u, _, vt = np.linalg.svd(self.rnd.standard_normal(shape), full_matrices=False)
        q = u if u.shape == tuple(shape) else vt
        return self.scale * q


_RANDOM_WALK_ACT_FUNCS = ("linear", "rel")


class RandomWalk(Initializer):
    """Random-walk initialization of a square matrix (Sussillo & Abbott 2014).

    Returns ``scale * N(0, 1) / sqrt(N)`` for an ``N x N`` matrix. Without an
    explicit ``scale`` it depends on the activation function:
    ``'linear'``: exp(1 / (2N)); ``'rel'``: sqrt(2) * exp(1.2 / (max(N, 6) - 2.4)).
    (The reference implementation divided by N instead of sqrt(N); this follows
    the paper.)

    Args:
        act_func (str): ``'linear'`` or ``'rel'``. Defaults to ``'linear'``.
        scale (float | None): explicit scale, overrides ``act_func``.

    Reference:
        Sussillo and Abbott. "Random Walk Initialization for Training Very Deep
        Feedforward Networks." arXiv:1412.6558 (2014).
    """

    __default_values__ = {"act_func": "linear", "scale": None}

    def __init__(self, act_func="linear", scale=None):
        super().__init__()
        if scale is None and act_func not in _RANDOM_WALK_ACT_FUNCS:
            raise ValueError(
                f"RandomWalk: unknown act_func {act_func!r}; use one of "
                f"{list(_RANDOM_WALK_ACT_FUNCS)} or give a scale"
            )
        self.act_func = act_func
        self.scale = scale

    def __call__(self, shape):
        self._require_matrix(shape, square=True)
        n = shape[0]
        scale = self.scale
        if scale is None:
            if self.act_func == "linear":
                scale = np.exp(1.0 / (2 * n))
            else:
                scale = np.sqrt(2) * np.exp(1.2 / (max(n, 6) - 2.4))
        return scale * self.rnd.standard_normal(shape) / np.sqrt(n)


def _random_k_of_n_mask(rnd, rows, cols, k):
    """A (rows, cols) 0/1 mask with exactly ``k`` ones, at random, in every row."""
    chosen = np.argsort(rnd.random_sample((rows, cols)), axis=1)[:, :k]
    mask = np.zeros((rows, cols))
    mask[np.arange(rows)[:, None], chosen] = 1.0
    return mask


class _SparseConnections(Initializer):
    """Common part of :class:`SparseInputs` and :class:`SparseOutputs`.

    Keeps ``connections`` randomly chosen values of ``sub_initializer`` in every
    row (``_per_input`` False) or every column (True) and sets the rest to 0.
    """

    __default_values__ = {"connections": 15}
    _per_input = False

    def __init__(self, sub_initializer, connections=15):
        super().__init__()
        self.sub_initializer = sub_initializer
        self.connections = connections

    def __call__(self, shape):
        self._require_at_least_2d(shape)
        units, inputs = shape[0], int(np.prod(shape[1:]))
        # each of the mask's rows keeps `connections` of its columns
        if self._per_input:
            rows, cols, row_name, col_name = inputs, units, "input", "units"
        else:
            rows, cols, row_name, col_name = units, inputs, "unit", "inputs"
        if cols < self.connections:
            self._fail(
                f"cannot connect each {row_name} to {self.connections} {col_name} when there "
                f"are only {cols}",
                shape,
            )
        values = evaluate_initializer(self.sub_initializer, shape, seed=self.rnd.generate_seed())
        mask = _random_k_of_n_mask(self.rnd, rows, cols, self.connections)
        return values * (mask.T if self._per_input else mask).reshape(shape)


class SparseInputs(_SparseConnections):
    """Every unit gets only ``connections`` non-zero incoming weights.

    With weights laid out as ``(units, inputs...)`` every row (every unit) keeps
    ``connections`` randomly chosen values of ``sub_initializer`` and the rest
    are set to 0. Needs at least ``connections`` inputs per unit.

    Args:
        sub_initializer (Initializer | float): provides the non-zero values.
        connections (int): number of inputs per unit. Defaults to 15.

    Example:
        >>> net.initialize(FullyConnected=SparseInputs(Gaussian(), connections=10))
    """


class SparseOutputs(_SparseConnections):
    """Every input sends only ``connections`` non-zero outgoing weights.

    With weights laid out as ``(units, inputs...)`` every column (every input)
    keeps ``connections`` randomly chosen values of ``sub_initializer`` and the
    rest are set to 0. Needs at least ``connections`` units.

    Args:
        sub_initializer (Initializer | float): provides the non-zero values.
        connections (int): number of units each input feeds. Defaults to 15.

    Example:
        >>> net.initialize(FullyConnected=SparseOutputs(Gaussian(), connections=10))
    """

    _per_input = True


class Uniform(Initializer):
    """Uniformly distributed values in ``[low, high]``.

    Args:
        low (float): lower bound, or the half-width of a symmetric interval
            ``[-|low|, |low|]`` when ``high`` is None. Defaults to 0.1.
        high (float | None): upper bound. Defaults to None.

    Example:
        >>> bool(Uniform(0.5)((2, 3)).max() <= 0.5)
        True
    """

    __default_values__ = {"low": 0.1, "high": None}

    def __init__(self, low=0.1, high=None):
        super().__init__()
        self.low = low
        self.high = high
        lo, hi = self._bounds()
        if not lo < hi:
            raise ValueError(f"Uniform: low must be smaller than high, but {lo} >= {hi}")

    def _bounds(self):
        if self.high is None:
            return -abs(self.low), abs(self.low)
        return self.low, self.high

    def __call__(self, shape):
        lo, hi = self._bounds()
        return self.rnd.uniform(lo, hi, size=shape)


# ############################## evaluation ###################################


def _values_from_array(array, shape):
    array = np.asarray(array)
    if array.shape != tuple(shape):
        raise InitializationError(
            f"ArrayInitializer: shape mismatch, array has shape {array.shape} but the "
            f"parameter has shape {tuple(shape)}"
        )
    return np.array(array, dtype=np.float64)


def evaluate_initializer(initializer, shape, fallback=None, seed=None):
    """Compute initial values of the given shape.

    Args:
        initializer (Initializer | float | int | list | numpy.ndarray): an
            initializer object, a constant, or the values themselves (treated
            like :class:`ArrayInitializer`).
        shape (tuple[int]): shape of the result.
        fallback: used (with the same rules) when ``initializer`` raises
            ``InitializationError``. Defaults to None (re-raise).
        seed (int | None): if given, an initializer's random state is reseeded
            with it first (and so is the fallback's), which makes the result
            reproducible.

    Returns:
        numpy.ndarray: float64 values of exactly ``shape``.

    Raises:
        InitializationError: if the initializer (and the fallback, if any)
            cannot produce this shape.
        TypeError: for values that are not initializers.
        ValueError: if an initializer returns an array of another shape (a bug
            in that initializer, so the fallback is not tried).

    Example:
        >>> evaluate_initializer(Identity(), (2, 3), fallback=0.5)
        array([[0.5, 0.5, 0.5],
               [0.5, 0.5, 0.5]])
    """
    shape = tuple(int(s) for s in shape)
    try:
        if isinstance(initializer, Initializer):
            if seed is not None:
                initializer.rnd.set_seed(seed)
            result = np.asarray(initializer(shape), dtype=np.float64)
            if result.shape != shape:  # a bug in the initializer, not a reason to fall back
                raise ValueError(
                    f"{initializer!r} returned shape {result.shape} instead of {shape}"
                )
            return result
        if isinstance(initializer, numbers.Real):
            return np.full(shape, float(initializer))
        if isinstance(initializer, (list, tuple, np.ndarray)):
            return _values_from_array(initializer, shape)
    except InitializationError:
        if fallback is None:
            raise
        return evaluate_initializer(fallback, shape, seed=seed)
    raise TypeError(
        f"{type(initializer).__name__} {initializer!r} is not an initializer: use a "
        f"number, an array (or nested list) or an Initializer object"
    )
