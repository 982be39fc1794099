"""PyCudaHandler on the CPU emulation against NumpyHandler (3b of issue 6).

The handler's own code runs unchanged; its device runs the ``.cu`` kernels
compiled by g++ (see ``brainstorm.handlers.cuda.emulation``). So these tests
check the kernels' index arithmetic and reductions, the strides and launch
arguments the handler computes, and its mapping of row-major products onto
column-major cuBLAS (the emulated sgemm checks arguments as cuBLAS does).

Every array of a comparison lives inside a bigger parent array, in one of
several layouts; after each op the *whole* parents of both handlers must
agree, so a write outside a view fails too.
"""

import itertools

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.handlers.cuda import _kernels
from brainstorm.handlers.numpy_handler import NumpyHandler
from brainstorm.testing.handler_conformance import (
    CONFORMANCE_CASES,
    check_op,
    reference_maxpool2d_forward,
)
from brainstorm.testing.handler_conformance import POOL_CONFIGS as CONFORMANCE_POOL_CONFIGS

RTOL = ATOL = 2e-5

# ----------------------------------------------------------------- helpers

#: How an array of a comparison sits in its parent.
LAYOUTS = ("contiguous", "last_axis_slice", "every_axis_slice")


def _place(handler, values, layout, rng):
    """``(view, parent, index)``: ``values`` in ``layout`` inside a bigger random parent."""
    shape = values.shape
    if layout == "contiguous" or not shape:
        parent_shape, index = shape, ...
    elif layout == "last_axis_slice":  # what the network layout hands out
        parent_shape = shape[:-1] + (shape[-1] + 3,)
        index = (slice(None),) * (len(shape) - 1) + (slice(2, 2 + shape[-1]),)
    else:  # a gap after every axis: nothing collapses, more launches
        parent_shape = tuple(n + 2 for n in shape)
        index = tuple(slice(1, 1 + n) for n in shape)
    parent = handler.create_from_numpy(rng.standard_normal(parent_shape))
    view = parent[index]
    handler.set_from_numpy(view, values)
    return view, parent, index


def _compare(emulated, call, arrays, layouts=LAYOUTS, seed=0, what=""):
    """Run ``call(handler, **views)`` on both handlers and compare every parent array.

    Args:
        arrays: name -> float values (float32-representable is best).
        call: the op; may return a value, which must agree too.
    """
    reference = NumpyHandler(np.float32)
    for layout in layouts:
        results = []
        for handler in (reference, emulated):
            rng = np.random.RandomState(seed)
            placed = {n: _place(handler, np.asarray(v), layout, rng) for n, v in arrays.items()}
            returned = call(handler, **{n: view for n, (view, _, _) in placed.items()})
            parents = {n: handler.get_numpy_copy(parent) for n, (_, parent, _) in placed.items()}
            results.append((returned, parents))
        (want_return, want), (got_return, got) = results
        assert got_return == want_return, f"{what} [{layout}]: returned {got_return!r}"
        for name in arrays:
            np.testing.assert_allclose(
                got[name],
                want[name],
                rtol=RTOL,
                atol=ATOL,
                err_msg=f"{what} [{layout}]: array {name!r}",
            )


def _values(rng, shape, kind="normal"):
    if kind == "positive":
        return rng.uniform(0.5, 2.0, shape).astype(np.float32)
    if kind == "nonzero":
        return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)).astype(np.float32)
    if kind == "mask":
        return (rng.uniform(size=shape) < 0.5).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


SHAPES = [(1,), (7,), (3, 5), (1, 9), (4, 1), (2, 3, 4), (3, 1, 5), (2, 3, 4, 5), (2, 1, 3, 2, 3)]


# ------------------------------------------------------- conformance suite


@pytest.mark.parametrize("case", [case.name for case in CONFORMANCE_CASES])
def test_conformance(emulated, case):
    check_op(emulated, case)


# ------------------------------------------------------------- elementwise

UNARY = {
    "abs_t": "normal",
    "sign_t": "normal",
    "log_t": "positive",
    "sqrt_t": "positive",
    "sigmoid": "normal",
    "tanh": "normal",
    "rel": "normal",
    "el": "normal",
}
BINARY = {
    "add_tt": "normal",
    "subtract_tt": "normal",
    "mult_tt": "normal",
    "mult_add_tt": "normal",
    "divide_tt": "nonzero",
    "modulo_tt": "nonzero",
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_ops(emulated, op, shape):
    rng = np.random.RandomState(1)
    a = _values(rng, shape, UNARY[op]) * (3 if op in ("sigmoid", "el") else 1)
    out = _values(rng, shape)
    _compare(emulated, lambda h, a, out: getattr(h, op)(a, out), {"a": a, "out": out}, what=op)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_ops(emulated, op, shape):
    rng = np.random.RandomState(2)
    arrays = {"a": 3 * _values(rng, shape), "b": _values(rng, shape, BINARY[op])}
    arrays["out"] = _values(rng, shape)
    _compare(emulated, lambda h, a, b, out: getattr(h, op)(a, b, out), arrays, what=op)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scalar_clip_and_conditional_ops(emulated, shape):
    rng = np.random.RandomState(3)
    t, out, cond = _values(rng, shape), _values(rng, shape), _values(rng, shape, "mask")
    arrays = {"t": t, "out": out}
    for op, s in (("add_st", 0.3), ("mult_st", -1.7), ("mult_add_st", 0.6)):
        _compare(emulated, lambda h, t, out, op=op, s=s: getattr(h, op)(s, t, out), arrays, what=op)
    _compare(emulated, lambda h, t, out: h.clip_t(t, -0.4, 0.9, out), arrays, what="clip_t")
    arrays = {"a": t, "out": out, "cond": cond}
    _compare(emulated, lambda h, a, out, cond: h.copy_to_if(a, out, cond), arrays, what="copy_if")
    _compare(emulated, lambda h, a, out, cond: h.add_into_if(a, out, cond), arrays, what="add_if")
    _compare(emulated, lambda h, a, out, cond: h.fill_if(out, 2.5, cond), arrays, what="fill_if")
    _compare(emulated, lambda h, a, out, cond: h.copy_to(a, out), arrays, what="copy_to")
    _compare(emulated, lambda h, a, out, cond: h.fill(out, -3.0), arrays, what="fill")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "rel", "el"])
def test_activation_derivatives(emulated, name, shape):
    rng = np.random.RandomState(4)
    x = _values(rng, shape)
    y = NumpyHandler(np.float32).allocate(shape)
    getattr(NumpyHandler(np.float32), name)(x, y)
    arrays = {"x": x, "y": y, "dy": _values(rng, shape), "dx": _values(rng, shape)}

    def deriv(h, x, y, dy, dx):
        return getattr(h, f"{name}_deriv")(x, y, dy, dx)

    _compare(emulated, deriv, arrays, what=f"{name}_deriv")


@pytest.mark.parametrize("rows, cols", [(1, 1), (5, 7), (13, 1), (1, 17), (33, 65)])
@pytest.mark.parametrize("op", ["add_mv", "subtract_mv", "mult_mv", "mult_add_mv", "divide_mv"])
def test_matrix_vector_ops(emulated, op, rows, cols):
    rng = np.random.RandomState(5)
    shapes = [(1, cols), (rows, 1)] + ([(rows, cols)] if "mult" in op else [])
    for v_shape in shapes:
        arrays = {"m": _values(rng, (rows, cols)), "v": _values(rng, v_shape, "nonzero")}
        arrays["out"] = _values(rng, (rows, cols))
        _compare(emulated, lambda h, m, v, out: getattr(h, op)(m, v, out), arrays, what=op)


@pytest.mark.parametrize(
    "a_shape, axis, out_shape",
    [
        ((1, 5), 0, (6, 5)),
        ((4, 1), 1, (4, 7)),
        ((3, 1, 5), 1, (3, 4, 5)),
        ((2, 3, 1), 2, (2, 3, 9)),
    ],
)
def test_broadcast_t(emulated, a_shape, axis, out_shape):
    rng = np.random.RandomState(6)
    arrays = {"a": _values(rng, a_shape), "out": _values(rng, out_shape)}
    _compare(emulated, lambda h, a, out: h.broadcast_t(a, axis, out), arrays, what="broadcast_t")


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (1, 1), (0, 4)], ids=str)
def test_is_fully_finite(emulated, shape):
    rng = np.random.RandomState(7)
    for special in (None, np.nan, np.inf, -np.inf):
        values = _values(rng, shape)
        if special is not None and values.size:
            values.flat[values.size // 2] = special
        _compare(emulated, lambda h, a: h.is_fully_finite(a), {"a": values}, what=str(special))


# ------------------------------------------------------- structure and sums


@pytest.mark.parametrize("lead", [(), (1,), (5,), (2, 3), (2, 1, 3)], ids=str)
@pytest.mark.parametrize("na, nb", [(1, 1), (2, 3), (7, 1)])
def test_merge_and_split(emulated, lead, na, nb):
    rng = np.random.RandomState(8)
    a, b = _values(rng, lead + (na,)), _values(rng, lead + (nb,))
    whole = _values(rng, lead + (na + nb,))
    arrays = {"a": a, "b": b, "out": whole}
    _compare(emulated, lambda h, a, b, out: h.merge_tt(a, b, out), arrays, what="merge_tt")
    _compare(emulated, lambda h, a, b, out: h.split_add_tt(out, a, b), arrays, what="split")


SUMS = [
    ((7,), 0, (1,)),
    ((7,), None, (1,)),
    ((300,), None, (1, 1)),
    ((5, 6), 0, (6,)),
    ((5, 6), 1, (5, 1)),
    ((5, 6), None, (1,)),
    ((513, 3), 0, (1, 3)),
    ((3, 4, 5), 1, (3, 5)),
    ((3, 4, 5), 0, (1, 4, 5)),
    ((3, 4, 5), None, (1,)),
    ((2, 3, 4, 5), 2, (2, 3, 1, 5)),
    ((2, 3, 4, 5), -1, (2, 3, 4)),
    ((2, 3, 4, 5), 0, (3, 4, 5)),
    ((0, 3), 0, (3,)),
]


@pytest.mark.parametrize("a_shape, axis, out_shape", SUMS, ids=str)
def test_sum_t(emulated, a_shape, axis, out_shape):
    rng = np.random.RandomState(9)
    arrays = {"a": _values(rng, a_shape), "out": _values(rng, out_shape)}
    _compare(emulated, lambda h, a, out: h.sum_t(a, axis, out), arrays, what="sum_t")


@pytest.mark.parametrize(
    "rows, cols", [(1, 1), (3, 5), (2, 31), (4, 32), (3, 33), (2, 257), (5, 1000)]
)
def test_softmax(emulated, rows, cols):
    rng = np.random.RandomState(10)
    m = (20 * _values(rng, (rows, cols))) + 300 * np.arange(rows)[:, None]
    arrays = {"m": m.astype(np.float32), "out": _values(rng, (rows, cols))}
    _compare(emulated, lambda h, m, out: h.softmax_m(m, out), arrays, what="softmax")
    _compare(emulated, lambda h, m, out: h.softmax_m(m, m), arrays, what="softmax in place")


def test_binarize_and_index_m_by_v(emulated):
    rng = np.random.RandomState(11)
    for rows, k in [(1, 1), (7, 4), (40, 13)]:
        v = rng.randint(0, k, (rows, 1)).astype(np.float32)
        arrays = {"v": v, "out": _values(rng, (rows, k))}
        _compare(emulated, lambda h, v, out: h.binarize_v(v, out), arrays, what="binarize")
        arrays = {"m": _values(rng, (rows, k)), "v": v, "out": _values(rng, (rows, 1))}
        _compare(emulated, lambda h, m, v, out: h.index_m_by_v(m, v, out), arrays, what="index")


def _reference_index_rows(m, v):
    return m[v[:, 0].astype(int)]


def _reference_scatter_add_rows(m, v, out):
    result = out.copy()
    np.add.at(result, v[:, 0].astype(int), m)
    return result


@pytest.mark.parametrize("n, rows, cols", [(1, 1, 1), (6, 4, 5), (50, 7, 3), (9, 20, 33)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_index_rows_and_scatter_add_rows(emulated, n, rows, cols, layout):
    rng = np.random.RandomState(12)
    v = rng.randint(0, rows, (n, 1)).astype(np.float32)  # with duplicates
    table, picked = _values(rng, (rows, cols)), _values(rng, (n, cols))
    reference = NumpyHandler(np.float32)
    h, placement = emulated, np.random.RandomState(0)
    m_view, _, _ = _place(h, table, layout, placement)
    v_view, _, _ = _place(h, v, layout, placement)
    out_view, out_parent, index = _place(h, picked, layout, placement)
    want_parent = h.get_numpy_copy(out_parent)
    h.index_rows_mv(m_view, v_view, out_view)
    want_parent[index] = _reference_index_rows(table, v)
    if hasattr(reference, "index_rows_mv"):  # NumpyHandler gains the op concurrently
        reference.index_rows_mv(table, v, want_parent[index])
    np.testing.assert_allclose(h.get_numpy_copy(out_parent), want_parent, rtol=RTOL, atol=ATOL)

    grads, grads_parent, index = _place(h, table, layout, placement)
    want_parent = h.get_numpy_copy(grads_parent)
    h.scatter_add_rows_mv(out_view, v_view, grads)
    picked = h.get_numpy_copy(out_view)
    expected = _reference_scatter_add_rows(picked, v, table)
    if hasattr(reference, "scatter_add_rows_mv"):
        expected = table.copy()
        reference.scatter_add_rows_mv(picked, v, expected)
    want_parent[index] = expected
    np.testing.assert_allclose(h.get_numpy_copy(grads_parent), want_parent, rtol=1e-4, atol=1e-5)


def test_index_ops_use_nan_for_ids_out_of_range(emulated):
    m = emulated.create_from_numpy(np.ones((3, 2)))
    v = emulated.create_from_numpy(np.array([[0.0], [5.0], [-1.0]]))
    out = emulated.allocate((3, 2))
    emulated.index_rows_mv(m, v, out)
    result = emulated.get_numpy_copy(out)
    assert np.all(result[0] == 1) and np.all(np.isnan(result[1:]))
    picked = emulated.allocate((3, 1))
    emulated.index_m_by_v(m, v, picked)
    assert np.isnan(emulated.get_numpy_copy(picked)[1:]).all()


# ---------------------------------------------------------- matrix products


def _operand(handler, values, kind, rng):
    """``values`` as a handler matrix: contiguous, a column slice, column-major, or no unit stride."""
    rows, cols = values.shape
    if kind == "contiguous":
        view = handler.allocate((rows, cols))
    elif kind == "slice":
        view = handler.allocate((rows, cols + 5))[:, 3 : 3 + cols]
    elif kind == "column_major":
        view = handler.allocate((cols, rows + 2))[:, 1 : 1 + rows].T
    else:  # every other element of a row: no unit stride at all
        view = handler.allocate((rows, cols, 2))[:, :, 0]
    handler.set_from_numpy(view, values)
    return view


KINDS = ("contiguous", "slice", "column_major", "no_unit_stride")
DOT_SIZES = [(1, 1, 1), (5, 1, 3), (1, 7, 1), (4, 6, 1), (17, 33, 9), (3, 0, 4)]


@pytest.mark.parametrize("m, k, n", DOT_SIZES, ids=str)
@pytest.mark.parametrize("transa, transb", list(itertools.product((False, True), repeat=2)))
def test_dot_mm_all_layouts(emulated, m, k, n, transa, transb):
    rng = np.random.RandomState(13)
    a = _values(rng, (k, m) if transa else (m, k))
    b = _values(rng, (n, k) if transb else (k, n))
    start = _values(rng, (m, n))
    want = (a.T if transa else a) @ (b.T if transb else b)
    for kind_a, kind_b, kind_out in itertools.product(KINDS, KINDS, KINDS):
        if kind_a == kind_b == "no_unit_stride" and kind_out != "contiguous":
            continue  # covered by the others; keeps the test fast
        views = [_operand(emulated, x, kind, rng) for x, kind in ((a, kind_a), (b, kind_b))]
        out = _operand(emulated, start, kind_out, rng)
        emulated.dot_mm(*views, out, transa=transa, transb=transb)
        got = emulated.get_numpy_copy(out)
        np.testing.assert_allclose(
            got, want, rtol=1e-5, atol=1e-5, err_msg=str((kind_a, kind_b, kind_out))
        )
        emulated.dot_add_mm(*views, out, transa=transa, transb=transb)
        np.testing.assert_allclose(emulated.get_numpy_copy(out), 2 * want, rtol=1e-5, atol=1e-5)
        for x, view in ((a, views[0]), (b, views[1])):
            assert np.array_equal(emulated.get_numpy_copy(view), x), "an input changed"


def test_dot_mm_reports_shape_mismatch(emulated):
    a, b, out = emulated.allocate((2, 3)), emulated.allocate((4, 5)), emulated.allocate((2, 5))
    with pytest.raises(ValueError, match="cannot multiply"):
        emulated.dot_mm(a, b, out)


# ------------------------------------------------------------------ images

#: (N, H, W, C, F, kh, kw, padding, stride): odd sizes, stride 2 with kernel > stride,
#: padding 2, 1x1, non-square, a single output column, kernels larger than the image
CONV_CONFIGS = [
    (2, 5, 6, 3, 4, 3, 3, 1, (1, 1)),
    (3, 7, 7, 1, 2, 3, 3, 0, (2, 2)),
    (1, 8, 9, 2, 3, 5, 3, 2, (2, 1)),
    (2, 4, 4, 3, 5, 1, 1, 0, (1, 1)),
    (2, 6, 5, 2, 2, 4, 3, 1, (3, 2)),
    (1, 3, 3, 2, 3, 5, 5, 2, (1, 1)),
    (4, 5, 3, 2, 1, 3, 3, 0, (1, 1)),
    (5, 9, 11, 4, 6, 3, 4, 1, (2, 3)),
]


def _conv_arrays(rng, n, h, w, c, f, kh, kw, padding, stride):
    ho, wo = (h + 2 * padding - kh) // stride[0] + 1, (w + 2 * padding - kw) // stride[1] + 1
    return {
        "inputs": _values(rng, (n, h, w, c)),
        "weights": _values(rng, (f, kh, kw, c)),
        "bias": _values(rng, (f,)),
        "outputs": _values(rng, (n, ho, wo, f)),
        "in_deltas": _values(rng, (n, h, w, c)),
        "out_deltas": _values(rng, (n, ho, wo, f)),
        "weight_deltas": _values(rng, (f, kh, kw, c)),
        "bias_deltas": _values(rng, (f,)),
    }


@pytest.mark.parametrize("chunked", [False, True], ids=["whole_batch", "chunks_of_images"])
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=str)
def test_convolution(emulated, config, chunked):
    *_, padding, stride = config
    if chunked:
        emulated.workspace_bytes = 1  # one image per im2col: the chunked path
    arrays = _conv_arrays(np.random.RandomState(14), *config)

    def forward(h, inputs, weights, bias, outputs, **_):
        h.conv2d_forward_batch(inputs, weights, bias, outputs, padding, stride)

    def backward(h, inputs, weights, in_deltas, out_deltas, weight_deltas, bias_deltas, **_):
        h.conv2d_backward_batch(
            inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
        )

    _compare(emulated, forward, arrays, what=f"conv forward {config}")
    _compare(emulated, backward, arrays, what=f"conv backward {config}")


def test_convolution_is_batched(emulated):
    """One im2col and one product for the whole batch, not a loop over the images."""
    arrays = _conv_arrays(np.random.RandomState(15), *CONV_CONFIGS[-1])
    views = {n: emulated.create_from_numpy(v) for n, v in arrays.items()}
    device = emulated._device
    device.launches.clear()
    gemms = device.gemms
    emulated.conv2d_forward_batch(
        views["inputs"], views["weights"], views["bias"], views["outputs"], 1, (2, 3)
    )
    assert device.launches["im2col_nhwc"] == 1 and device.gemms - gemms == 1


#: (N, H, W, C, window, padding, stride): those of the conformance suite (windows
#: larger than the stride, windows of padding only, stride 3, 1x1) and two more
POOL_CONFIGS = [
    *CONFORMANCE_POOL_CONFIGS,
    (3, 9, 8, 4, (3, 3), 1, (1, 1)),
    (1, 10, 3, 5, (5, 2), 2, (2, 1)),
]


@pytest.mark.parametrize("config", POOL_CONFIGS, ids=str)
def test_pooling(emulated, config):
    n, h, w, c, window, padding, stride = config
    ho = (h + 2 * padding - window[0]) // stride[0] + 1
    wo = (w + 2 * padding - window[1]) // stride[1] + 1
    rng = np.random.RandomState(16)
    arrays = {
        "inputs": _values(rng, (n, h, w, c)),
        "outputs": _values(rng, (n, ho, wo, c)),
        "argmax": _values(rng, (n, ho, wo, c)),
        "in_deltas": _values(rng, (n, h, w, c)),
        "out_deltas": _values(rng, (n, ho, wo, c)),
    }

    def max_pool(h, inputs, outputs, argmax, in_deltas, out_deltas):
        h.maxpool2d_forward_batch(inputs, window, outputs, padding, stride, argmax)
        h.maxpool2d_backward_batch(
            inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
        )

    def avg_pool(h, inputs, outputs, argmax, in_deltas, out_deltas):
        h.avgpool2d_forward_batch(inputs, window, outputs, padding, stride)
        h.avgpool2d_backward_batch(inputs, window, outputs, padding, stride, in_deltas, out_deltas)

    _compare(emulated, max_pool, arrays, what=f"max pooling {config}")
    _compare(emulated, avg_pool, arrays, what=f"average pooling {config}")


def test_pooling_ties_pick_the_first_maximum(emulated):
    arrays = {
        "inputs": np.ones((1, 4, 4, 2), np.float32),
        "outputs": np.zeros((1, 3, 3, 2), np.float32),
        "argmax": np.zeros((1, 3, 3, 2), np.float32),
    }

    def forward(h, inputs, outputs, argmax):
        h.maxpool2d_forward_batch(inputs, (2, 2), outputs, 0, (1, 1), argmax)

    _compare(emulated, forward, arrays, what="ties")


def test_pooling_real_minus_infinity_next_to_padding(emulated):
    # the first real pixel counts even when it is -inf; only windows without any
    # image pixel give 0 and argmax -1
    inputs = np.full((1, 2, 2, 1), -np.inf, np.float32)
    for window, padding, stride in (((2, 2), 1, (1, 1)), ((3, 3), 2, (2, 2)), ((1, 1), 1, (1, 1))):
        expected, argmax = reference_maxpool2d_forward(
            inputs.astype(np.float64), window, padding, stride
        )
        outputs, found = emulated.zeros(expected.shape), emulated.zeros(expected.shape)
        emulated.maxpool2d_forward_batch(
            emulated.create_from_numpy(inputs), window, outputs, padding, stride, found
        )
        np.testing.assert_array_equal(emulated.get_numpy_copy(outputs), expected)
        np.testing.assert_array_equal(emulated.get_numpy_copy(found), argmax)


# -------------------------------------------------------------- randomness

_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
_MASK = 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Reference Philox4x32-10 (Salmon et al. 2011) on NumPy uint64 arrays of 32-bit words."""
    c = [np.asarray(x, dtype=np.uint64) for x in counter]
    k0, k1 = (np.uint64(x) for x in key)
    for _ in range(10):
        p0, p1 = np.uint64(_M0) * c[0], np.uint64(_M1) * c[2]
        c = [
            ((p1 >> np.uint64(32)) ^ c[1] ^ k0) & np.uint64(_MASK),
            p1 & np.uint64(_MASK),
            ((p0 >> np.uint64(32)) ^ c[3] ^ k1) & np.uint64(_MASK),
            p0 & np.uint64(_MASK),
        ]
        k0, k1 = (k0 + np.uint64(_W0)) & np.uint64(_MASK), (k1 + np.uint64(_W1)) & np.uint64(_MASK)
    return c


@pytest.mark.parametrize(
    "counter, key, expected",
    [  # Random123 tests/kat_vectors, the three "philox4x32 10" lines
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((_MASK,) * 4, (_MASK,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_reference_philox_matches_the_known_answers(counter, key, expected):
    assert tuple(int(w) for w in philox4x32_10(counter, key)) == expected


def _expected_mask(key, shape, p):
    flat = np.arange(int(np.prod(shape)), dtype=np.uint64)
    words = philox4x32_10((flat & np.uint64(_MASK), flat >> np.uint64(32), 0, 0), key)
    uniform = (words[0] >> np.uint64(8)).astype(np.float32) * np.float32(1 / 16777216)
    return (uniform < np.float32(p)).astype(np.float32).reshape(shape)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_probability_mask_is_philox_bit_for_bit(emulated, layout):
    shape, p = (3, 4, 50), 0.37
    emulated.rnd = bs.randomness.RandomState(99)
    key = tuple(int(k) for k in bs.randomness.RandomState(99).randint(0, 2**32, 2, np.uint64))
    mask, _, _ = _place(emulated, np.zeros(shape, np.float32), layout, np.random.RandomState(0))
    emulated.generate_probability_mask(mask, p)
    assert np.array_equal(emulated.get_numpy_copy(mask), _expected_mask(key, shape, p))


def test_gaussian_statistics_and_layout_independence(emulated):
    emulated.rnd = bs.randomness.RandomState(5)
    out = emulated.allocate((400, 250))
    emulated.fill_gaussian(1.5, 2.0, out)
    values = (emulated.get_numpy_copy(out) - 1.5) / 2.0
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    within = np.mean(np.abs(values) < 1), np.mean(np.abs(values) < 2)
    assert abs(within[0] - 0.6827) < 0.01 and abs(within[1] - 0.9545) < 0.005
    emulated.rnd = bs.randomness.RandomState(5)
    zeros = np.zeros((400, 250), np.float32)
    strided, _, _ = _place(emulated, zeros, "every_axis_slice", np.random.RandomState(0))
    emulated.fill_gaussian(1.5, 2.0, strided)
    assert np.array_equal(emulated.get_numpy_copy(strided), emulated.get_numpy_copy(out))


def test_random_ops_follow_global_rnd(emulation_library):
    from brainstorm.handlers.cuda import PyCudaHandler
    from brainstorm.handlers.cuda.emulation import CpuEmulatedDevice

    handler = PyCudaHandler._on_device(CpuEmulatedDevice(emulation_library))
    mask = handler.allocate((20, 30))

    def draw():
        handler.generate_probability_mask(mask, 0.5)
        return handler.get_numpy_copy(mask)

    bs.global_rnd.set_seed(42)
    first, second = draw(), draw()
    bs.global_rnd.set_seed(42)
    assert np.array_equal(draw(), first) and np.array_equal(draw(), second)
    assert not np.array_equal(first, second)


# ------------------------------------------------------------------- coverage


def test_every_kernel_is_launched_by_the_ops(emulated):
    """The ops above reach every kernel of kernels/*.cu (none is dead or untested)."""
    h, rng = emulated, np.random.RandomState(17)
    x = h.create_from_numpy(rng.standard_normal((2, 5, 5, 3)))
    w = h.create_from_numpy(rng.standard_normal((2, 3, 3, 3)))
    y = h.allocate((2, 3, 3, 2))
    h.conv2d_forward_batch(x, w, h.allocate((2,)), y, 0, (1, 1))
    h.conv2d_backward_batch(
        x, w, 0, (1, 1), h.allocate(x.shape), y, h.allocate(w.shape), h.allocate((2,))
    )
    p, arg = h.allocate((2, 2, 2, 3)), h.allocate((2, 2, 2, 3))
    h.maxpool2d_forward_batch(x, (2, 2), p, 0, (2, 2), arg)
    h.maxpool2d_backward_batch(x, (2, 2), p, 0, (2, 2), arg, h.allocate(x.shape), p)
    h.avgpool2d_forward_batch(x, (2, 2), p, 0, (2, 2))
    h.avgpool2d_backward_batch(x, (2, 2), p, 0, (2, 2), h.allocate(x.shape), p)
    m, v = h.create_from_numpy(rng.standard_normal((4, 3))), h.create_from_numpy(np.ones((4, 1)))
    h.merge_tt(m, v, h.allocate((4, 4)))
    h.split_add_tt(h.allocate((4, 4)), m, v)
    h.binarize_v(v, h.allocate((4, 3)))
    h.index_m_by_v(m, v, h.allocate((4, 1)))
    h.index_rows_mv(m, v, h.allocate((4, 3)))
    h.scatter_add_rows_mv(m, v, h.allocate((4, 3)))
    h.softmax_m(m, h.allocate((4, 3)))
    h.sum_t(m, 0, h.allocate((3,)))
    h.is_fully_finite(m)
    h.fill_gaussian(0.0, 1.0, m)
    h.generate_probability_mask(m, 0.5)
    assert set(h._device.launches) == set(_kernels.kernels())


# ------------------------------------------ NaN ids, NaN in el_deriv, 0-d arrays
# (run on the CPU emulation and, where there is one, on the GPU: casting a NaN
# id to int is undefined in C, and the GPU makes it row 0)


@pytest.mark.parametrize("which", ["emulated", "gpu_handler"])
def test_nan_ids_select_no_row(request, which):
    h = request.getfixturevalue(which)
    table = np.arange(6, dtype=np.float32).reshape(3, 2) + 1
    ids = h.create_from_numpy(np.array([[np.nan], [1.0]], np.float32))
    rows = h.allocate((2, 2))
    h.index_rows_mv(h.create_from_numpy(table), ids, rows)
    got = h.get_numpy_copy(rows)
    assert np.isnan(got[0]).all() and np.array_equal(got[1], table[1])
    picked = h.allocate((2, 1))
    h.index_m_by_v(h.create_from_numpy(table[:2]), ids, picked)
    assert np.isnan(h.get_numpy_copy(picked)[0, 0])
    sums = h.zeros((3, 2))
    h.scatter_add_rows_mv(h.create_from_numpy(np.ones((2, 2), np.float32)), ids, sums)
    assert h.get_numpy_copy(sums).tolist() == [[0, 0], [1, 1], [0, 0]]


@pytest.mark.parametrize("which", ["emulated", "gpu_handler"])
def test_ids_that_are_no_whole_numbers_in_range_give_nan_in_both_target_ops(request, which):
    # SoftmaxCE reads p[i, id] forward and one-hot(id) backward: an id of 1.5 (or 3
    # for 3 classes) must not pick column 1 in one op and nothing in the other
    h = request.getfixturevalue(which)
    p = h.create_from_numpy(np.full((4, 3), 0.5, np.float32))
    ids = h.create_from_numpy(np.array([[1.5], [3.0], [-0.5], [2.0]], np.float32))
    picked, one_hot = h.allocate((4, 1)), h.allocate((4, 3))
    h.index_m_by_v(p, ids, picked)
    h.binarize_v(ids, one_hot)
    picked, one_hot = h.get_numpy_copy(picked), h.get_numpy_copy(one_hot)
    assert np.isnan(picked[:3]).all() and picked[3, 0] == 0.5
    assert np.isnan(one_hot[:3]).all() and one_hot[3].tolist() == [0, 0, 1]


@pytest.mark.parametrize("which", ["emulated", "gpu_handler"])
def test_el_deriv_keeps_a_nan_output(request, which):
    h = request.getfixturevalue(which)
    y = h.create_from_numpy(np.array([np.nan, -0.5, 2.0], np.float32))
    dy = h.create_from_numpy(np.ones(3, np.float32))
    dx = h.allocate((3,))
    h.el_deriv(None, y, dy, dx)
    np.testing.assert_array_equal(h.get_numpy_copy(dx), [np.nan, 0.5, 1.0])


def test_a_0d_array_comes_back(emulated):
    assert float(emulated.get_numpy_copy(emulated.create_from_numpy(np.array(3.0)))) == 3.0


class _RecordingDevice:
    """Hands out address-less arrays and records every launch's arguments, packed
    as pycuda packs them (the kernel's struct format): no memory is needed."""

    name = "recording"

    def __init__(self):
        from brainstorm.handlers.cuda.emulation import HostArray

        self.array_type = HostArray
        self.packed = []

    def allocate(self, shape):
        strides, step = [], 4
        for n in reversed(shape):
            strides.append(step)
            step *= max(n, 1)
        return self.array_type(tuple(shape), tuple(reversed(strides)), None)

    def launch(self, name, grid, block, args):
        import struct

        self.packed.append((name, struct.pack(_kernels.kernels()[name].arg_format, *args)))


def test_arrays_of_2_to_the_31_elements_and_more_reach_the_kernels():
    # e.g. the whole backward buffer of a large network: cleared, updated, summed
    from brainstorm.handlers.cuda.handler import PyCudaHandler

    device = _RecordingDevice()
    h = PyCudaHandler._on_device(device)
    big = h.allocate((2**31 + 5,))
    h.fill(big, 0.0)  # (a size above int32: struct.error before)
    h.mult_add_st(0.1, big, big)
    h.sum_t(big, None, h.allocate((1,)))
    h.generate_probability_mask(big, 0.5)
    h.fill_gaussian(0.0, 1.0, big)
    column = h.allocate((2**31 + 1, 1))
    h.merge_tt(column, column, h.allocate((2**31 + 1, 2)))
    kernels = {name for name, _ in device.packed}
    assert kernels >= {"ew_map", "sum_reduce", "random_mask", "random_normal", "merge_last"}


def test_max_pooling_refuses_images_whose_argmax_a_float32_cannot_count():
    from brainstorm.handlers.cuda.handler import PyCudaHandler

    h = PyCudaHandler._on_device(_RecordingDevice())
    images, pooled = h.allocate((1, 4, 2**18, 32)), h.allocate((1, 2, 2**17, 32))
    with pytest.raises(ValueError, match="an image of 4x262144x32 = 33554432 values"):
        h.maxpool2d_forward_batch(images, (2, 2), pooled, 0, (2, 2), pooled)
    with pytest.raises(ValueError, match="an image of 4x262144x32 = 33554432 values"):
        h.maxpool2d_backward_batch(images, (2, 2), pooled, 0, (2, 2), pooled, images, pooled)
