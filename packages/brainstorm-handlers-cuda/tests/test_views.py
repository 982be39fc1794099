"""The pure-Python layout code shared by the GPU and the CPU emulation, against NumPy."""

import itertools

import numpy as np
import pytest

from brainstorm.handlers.cuda._layout import (
    OP_N,
    OP_T,
    blas_layout,
    blocks,
    broadcast_strides,
    collapse,
    is_contiguous,
)
from brainstorm.handlers.cuda._views import index_view, reshape_strides
from brainstorm.handlers.cuda.emulation import CpuEmulatedDevice


def _views(rng):
    """Strided NumPy views like the network layout (and stranger ones) produces."""
    base = np.arange(4 * 5 * 6 * 7, dtype=np.float32).reshape(4, 5, 6, 7)
    yield base
    yield base[..., 2:5]
    yield base[:, 1:4, :, 3:]
    yield base[1:3, :, 2, 1:6]
    yield base[:, :, :, 0:1]
    yield base[::2, :, ::3]
    yield base.transpose(0, 2, 1, 3)
    yield base[2:3]
    yield base[:, :0]
    for _ in range(20):
        view = base
        for axis in range(4):
            start = rng.randint(0, view.shape[axis])
            stop = rng.randint(start, view.shape[axis] + 1)
            index = [slice(None)] * view.ndim
            index[axis] = slice(start, max(stop, start + 1))
            view = view[tuple(index)]
        yield view


def _factorizations(shape):
    size = int(np.prod(shape))
    yield (size,)
    yield shape + (1,)
    yield (1,) + shape
    if len(shape) >= 2:
        yield (shape[0] * shape[1],) + shape[2:]
        yield shape[:-2] + (shape[-2] * shape[-1],)
        yield shape[:1] + (1,) + shape[1:]
    if len(shape) >= 3:
        yield (shape[0], shape[1] * shape[2]) + shape[3:]
    if size and size % 2 == 0:
        yield (2, size // 2)


def test_reshape_strides_match_numpy():
    rng = np.random.RandomState(0)
    checked = refused = 0
    for view in _views(rng):
        for new_shape in _factorizations(view.shape):
            ours = reshape_strides(view.shape, view.strides, new_shape, 4)
            try:
                theirs = np.reshape(view, new_shape, copy=False)
            except ValueError:
                assert ours is None, (view.shape, view.strides, new_shape)
                refused += 1
                continue
            assert ours is not None, (view.shape, view.strides, new_shape)
            if theirs.size:
                assert ours == theirs.strides, (view.shape, view.strides, new_shape)
            checked += 1
    assert checked > 50 and refused > 5


@pytest.mark.parametrize(
    "item",
    [
        0,
        -1,
        slice(1, 3),
        (Ellipsis, slice(2, 5)),
        (slice(None), 2, slice(None, None, 2)),
        (None, 1, Ellipsis, None),
        (slice(5, 1, -1), slice(None), 3),
        (slice(2, 2),),
        (Ellipsis,),
        (1, 2, 3),
    ],
)
def test_index_view_matches_numpy(item):
    base = np.zeros((6, 5, 4), dtype=np.float32)
    view = base[item]
    if isinstance(view, np.generic):  # NumPy returns a scalar: look at the 0-d view instead
        view = base[(*item, Ellipsis)]
    shape, strides, offset = index_view(base.shape, base.strides, item)
    assert shape == view.shape
    if view.size:
        assert strides == view.strides
        assert offset == view.__array_interface__["data"][0] - base.ctypes.data


@pytest.mark.parametrize("item", [(0, 0, 0, 0), 6, -7, (Ellipsis, Ellipsis), 1.5, [0, 1]])
def test_index_view_rejects_what_numpy_rejects(item):
    with pytest.raises(IndexError):
        index_view((6, 5, 4), (80, 16, 4), item)


def test_host_array_views_follow_numpy():
    device = CpuEmulatedDevice.__new__(CpuEmulatedDevice)  # memory only, no kernels needed
    device._allocations = __import__("weakref").WeakSet()
    array = device.allocate((4, 5, 6))
    reference = np.zeros((4, 5, 6), dtype=np.float32)
    for item in [(slice(None), slice(None), slice(1, 4)), (2,), (Ellipsis, 3)]:
        view, expected = array[item], reference[item]
        assert view.shape == expected.shape and view.strides == expected.strides
    flat = array[:, :, 1:4].reshape((20, 3))
    assert flat.strides == reference[:, :, 1:4].reshape(20, 3).strides
    with pytest.raises(ValueError, match="without a copy"):
        array[:, :, 1:4].reshape((60,))
    assert array.reshape(-1, 6).shape == (20, 6)
    assert len(array) == 4 and array.ndim == 3


def test_collapse_merges_what_every_operand_walks_contiguously():
    # a last-axis slice of a (3, 4, 10) buffer next to a contiguous (3, 4, 5) array
    dims, strides = collapse((3, 4, 5), [(40, 10, 1), (20, 5, 1)])
    assert dims == [12, 5] and strides == [[10, 1], [5, 1]]
    dims, strides = collapse((3, 4, 5), [(20, 5, 1), (20, 5, 1)])
    assert dims == [60] and strides == [[1], [1]]
    dims, strides = collapse((3, 1, 5), [(5, 99, 1)])
    assert dims == [15]
    assert collapse((2, 0, 3), [(0, 3, 1)])[0] == [0]
    assert collapse((1, 1), [(7, 7)]) == ([1], [[0]])


def test_collapse_keeps_c_order_for_broadcasting():
    rng = np.random.RandomState(1)
    for _ in range(50):
        shape = tuple(rng.randint(1, 4, size=rng.randint(1, 5)))
        base = rng.standard_normal(shape)
        v_shape = tuple(n if rng.rand() < 0.5 else 1 for n in shape)
        v = rng.standard_normal(v_shape)
        s_out = tuple(s // 8 for s in base.strides)
        s_v = broadcast_strides(_Fake(v), shape)
        dims, (so, sv) = collapse(shape, [s_out, s_v])
        got = np.empty(int(np.prod(shape)))
        flat_v = v.reshape(-1)
        for flat, index in enumerate(itertools.product(*map(range, dims))):
            got[flat] = flat_v[sum(i * s for i, s in zip(index, sv))]
        assert np.array_equal(got, np.broadcast_to(v, shape).reshape(-1))


class _Fake:
    def __init__(self, array):
        self.shape = array.shape
        self.strides = tuple(s // 2 for s in array.strides)  # float64 -> as if float32


def test_broadcast_strides_rejects_incompatible_shapes():
    with pytest.raises(ValueError, match="does not fit"):
        broadcast_strides(_Fake(np.zeros((3, 4))), (3, 5))
    with pytest.raises(ValueError, match="does not fit"):
        broadcast_strides(_Fake(np.zeros((2, 3, 4))), (3, 4))
    assert broadcast_strides(_Fake(np.zeros((1, 3, 4))), (3, 4)) == (4, 1)


def test_blocks_split_extra_leading_axes():
    dims, strides = [2, 3, 4, 5], [[100, 20, 5, 1]]
    launches = list(blocks(dims, strides, 3))
    assert len(launches) == 2
    assert [offsets for offsets, _, _ in launches] == [[0], [100]]
    assert launches[0][1] == [3, 4, 5]
    ((offsets, sub_dims, sub_strides),) = blocks([7], [[2]], 3)
    assert sub_dims == [1, 1, 7] and sub_strides == [[0, 0, 2]]


def test_is_contiguous():
    assert is_contiguous((3, 4), (4, 1))
    assert is_contiguous((3, 1), (1, 999))
    assert not is_contiguous((3, 4), (10, 1))
    assert is_contiguous((0, 4), (5, 7))


@pytest.mark.parametrize(
    "strides, rows, cols, expected",
    [
        ((7, 1), 3, 7, (OP_T, 7)),  # row-major: transpose of a column-major 7 x 3
        ((10, 1), 3, 7, (OP_T, 10)),  # last-axis slice of a wider buffer
        ((1, 3), 3, 7, (OP_N, 3)),  # column-major
        ((1, 5), 3, 7, (OP_N, 5)),
        ((1, 2), 3, 7, None),  # ld smaller than the rows: overlapping, copy
        ((2, 14), 3, 7, None),  # no unit stride
        ((0, 1), 3, 7, None),  # broadcast rows
        ((5, 1), 1, 7, (OP_N, 1)),  # a single row: any row stride
        ((1, 9), 3, 1, (OP_N, 3)),  # a single column
        ((4, 4), 1, 1, (OP_N, 1)),
    ],
)
def test_blas_layout(strides, rows, cols, expected):
    assert blas_layout(strides, rows, cols) == expected
