"""How the handler describes arrays to its kernels and to cuBLAS.

Kernels take a pointer plus element strides per array over an iteration space
of at most three axes (two for some). :func:`collapse` merges the axes that
every operand walks through contiguously, so a contiguous array becomes one
axis and a slice of the last axis of a contiguous buffer (what the network
layout produces) two; :func:`blocks` splits whatever is left over into several
launches, so any strided layout works, just with more launches.
"""

from __future__ import annotations

import itertools
from math import prod

__all__ = [
    "ITEMSIZE",
    "OP_N",
    "OP_T",
    "THREADS",
    "blas_layout",
    "blocks",
    "broadcast_strides",
    "collapse",
    "element_strides",
    "is_contiguous",
    "launch_size",
    "reduce_threads",
]

#: Bytes per element: the handler computes in float32 only.
ITEMSIZE = 4
#: Threads per block of the elementwise kernels.
THREADS = 256
#: At most this many blocks per launch; the kernels loop over the rest.
MAX_BLOCKS = 4096
#: cublasOperation_t values.
OP_N, OP_T = 0, 1


def element_strides(array):
    """The strides of a handler array in elements (not bytes)."""
    result = []
    for stride in array.strides:
        if stride % ITEMSIZE:
            raise ValueError(f"strides {tuple(array.strides)} are not whole float32 elements")
        result.append(stride // ITEMSIZE)
    return tuple(result)


def is_contiguous(shape, strides):
    """True for a C-contiguous layout (element strides; size-1 axes may have any stride)."""
    if 0 in shape:
        return True
    expected = 1
    for n, stride in zip(reversed(shape), reversed(strides)):
        if n != 1 and stride != expected:
            return False
        expected *= n
    return True


def broadcast_strides(array, shape, what="array"):
    """Element strides of ``array`` broadcast (NumPy rules) to ``shape``: 0 along repeated axes.

    Raises:
        ValueError: the shapes are not compatible.
    """
    own_shape, own_strides = tuple(array.shape), element_strides(array)
    while len(own_shape) > len(shape) and own_shape[0] == 1:
        own_shape, own_strides = own_shape[1:], own_strides[1:]
    if len(own_shape) > len(shape):
        raise ValueError(f"{what} of shape {tuple(array.shape)} does not fit shape {shape}")
    pad = len(shape) - len(own_shape)
    own_shape, own_strides = (1,) * pad + own_shape, (0,) * pad + own_strides
    result = []
    for n_own, stride, n in zip(own_shape, own_strides, shape):
        if n_own == n:
            result.append(stride if n != 1 else 0)
        elif n_own == 1:
            result.append(0)
        else:
            raise ValueError(f"{what} of shape {tuple(array.shape)} does not fit shape {shape}")
    return tuple(result)


def collapse(shape, stride_lists):
    """Merge axes over which every operand is contiguous; drop size-1 axes.

    Args:
        shape: the iteration shape.
        stride_lists: one tuple of element strides (for ``shape``) per operand.

    Returns:
        ``(dims, strides)``: at least one dimension, and one list of strides per
        operand. Iterating over ``dims`` in C order visits the elements in the
        same order as iterating over ``shape``.
    """
    k = len(stride_lists)
    if 0 in shape:
        return [0], [[0] for _ in range(k)]
    axes = [(n, [s[i] for s in stride_lists]) for i, n in enumerate(shape) if n != 1]
    if not axes:
        return [1], [[0] for _ in range(k)]
    dims = [axes[0][0]]
    strides = [[s] for s in axes[0][1]]
    for n, axis_strides in axes[1:]:
        if all(prev[-1] == s * n for prev, s in zip(strides, axis_strides)):
            dims[-1] *= n
            for prev, s in zip(strides, axis_strides):
                prev[-1] = s
        else:
            dims.append(n)
            for prev, s in zip(strides, axis_strides):
                prev.append(s)
    return dims, strides


def blocks(dims, strides, ndim):
    """Split an iteration space into launches of exactly ``ndim`` axes.

    Yields:
        ``(offsets, dims, strides)``: the element offset of each operand for
        this launch, and the ``ndim`` dims and per-operand strides. Spaces with
        fewer axes are padded with leading size-1 axes; spaces with more are
        split into one launch per index of the leading axes.
    """
    if len(dims) <= ndim:
        pad = ndim - len(dims)
        yield (
            [0] * len(strides),
            [1] * pad + list(dims),
            [[0] * pad + list(s) for s in strides],
        )
        return
    lead = len(dims) - ndim
    for index in itertools.product(*(range(n) for n in dims[:lead])):
        offsets = [sum(i * s for i, s in zip(index, st[:lead])) for st in strides]
        yield offsets, list(dims[lead:]), [list(st[lead:]) for st in strides]


def launch_size(n, threads=THREADS):
    """``(grid, block)`` for a grid-stride kernel over ``n`` elements."""
    n_blocks = max(1, min((n + threads - 1) // threads, MAX_BLOCKS))
    return (n_blocks, 1), (threads, 1, 1)


def reduce_threads(n):
    """Threads per block for a block reduction over ``n`` elements: a power of two in [32, 256]."""
    threads = 32
    while threads < n and threads < THREADS:
        threads *= 2
    return threads


def blas_layout(strides, rows, cols):
    """How cuBLAS (column-major) can read a ``rows x cols`` matrix with these element strides.

    Returns:
        ``(OP_N, ld)`` if the matrix is column-major with leading dimension
        ``ld`` (unit stride down the columns), ``(OP_T, ld)`` if it is the
        transpose of a column-major ``cols x rows`` matrix (unit stride along
        the rows, i.e. row-major), or ``None`` if neither (copy it first).
    """
    s0, s1 = strides
    if rows == 1 or s0 == 1:
        ld = s1 if cols > 1 else max(rows, 1)
        if ld >= max(rows, 1):
            return OP_N, ld
    if cols == 1 or s1 == 1:
        ld = s0 if rows > 1 else max(cols, 1)
        if ld >= max(cols, 1):
            return OP_T, ld
    return None


def size_of(shape):
    """Number of elements of a shape."""
    return prod(shape)
