"""Behaviour of the core handlers beyond the op-by-op conformance suite."""

import itertools
import json

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.describable import create_from_description, get_description
from brainstorm.handlers import DebugArray, DebugHandler, Handler, NumpyHandler
from brainstorm.randomness import RandomState
from brainstorm.testing.handler_conformance import check_op, handler_ops

# --- descriptions ------------------------------------------------------------


def test_numpy_handler_description_is_its_dtype():
    assert get_description(NumpyHandler()) == {"@type": "NumpyHandler", "dtype": "float32"}
    assert get_description(NumpyHandler(np.float64, seed=3)) == {
        "@type": "NumpyHandler",
        "dtype": "float64",
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_handler_rebuilt_from_description_works(dtype):
    description = json.loads(json.dumps(get_description(NumpyHandler(dtype))))
    handler = create_from_description(description)
    assert type(handler) is NumpyHandler
    assert handler.dtype == np.dtype(dtype) and handler.context == "numpy"
    assert handler.array_type is np.ndarray and handler.EMPTY.size == 0
    x = handler.create_from_numpy(np.array([[-1.0, 2.0]]))
    handler.act_func["rel"](x, x)
    assert handler.get_numpy_copy(x).tolist() == [[0.0, 2.0]]
    assert handler.get_numpy_copy(x).dtype == np.dtype(dtype)
    mask = handler.allocate((3, 4))
    handler.generate_probability_mask(mask, 0.5)
    assert get_description(handler) == description


def test_debug_handler_description_round_trip():
    handler = DebugHandler(NumpyHandler(np.float64))
    description = get_description(handler)
    assert description == {
        "@type": "DebugHandler",
        "handler": {"@type": "NumpyHandler", "dtype": "float64"},
    }
    rebuilt = create_from_description(json.loads(json.dumps(description)))
    assert isinstance(rebuilt, DebugHandler) and isinstance(rebuilt.handler, NumpyHandler)
    assert rebuilt.dtype == np.float64 and rebuilt.array_type is DebugArray
    a = rebuilt.ones((2, 3))
    rebuilt.mult_st(2.0, a, a)
    assert rebuilt.get_numpy_copy(a).tolist() == [[2.0] * 3] * 2
    assert get_description(rebuilt) == description


def test_handlers_are_exported_and_registered():
    import brainstorm.handlers as handlers
    from brainstorm import registry

    assert handlers.NumpyHandler is NumpyHandler
    assert registry.find_describable("DebugHandler") is DebugHandler
    assert isinstance(handlers.default_handler, NumpyHandler)
    assert handlers.default_handler.dtype == np.float32


def test_non_float_dtype_is_refused():
    with pytest.raises(ValueError, match="floating point"):
        NumpyHandler(np.int32)


# --- randomness --------------------------------------------------------------


def _mask(handler, shape=(20, 30)):
    mask = handler.allocate(shape)
    handler.generate_probability_mask(mask, 0.5)
    return handler.get_numpy_copy(mask)


def test_global_seed_makes_an_existing_handler_reproducible():
    handler = NumpyHandler()  # created before seeding, like the default handler
    _mask(handler)
    bs.global_rnd.set_seed(42)
    first = [_mask(handler), _mask(handler)]
    bs.global_rnd.set_seed(42)
    second = [_mask(handler), _mask(handler)]
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], first[1])
    bs.global_rnd.set_seed(43)
    assert not np.array_equal(_mask(handler), first[0])


def test_global_seed_also_covers_gaussian_fill_and_the_debug_handler():
    handler = DebugHandler(NumpyHandler(np.float64))

    def draw():
        out = handler.allocate((4, 5))
        handler.fill_gaussian(0.0, 1.0, out)
        return handler.get_numpy_copy(out)

    bs.global_rnd.set_seed(7)
    first = draw()
    bs.global_rnd.set_seed(7)
    np.testing.assert_array_equal(draw(), first)
    assert handler.rnd is handler.handler.rnd


def test_explicit_seed_is_fixed_and_ignores_the_global_state():
    a, b = NumpyHandler(seed=5), NumpyHandler(seed=5)
    bs.global_rnd.set_seed(1)
    first = _mask(a)
    bs.global_rnd.set_seed(2)
    np.testing.assert_array_equal(_mask(b), first)
    assert a.rnd.get_seed() == 5


def test_rnd_can_be_fixed_and_released():
    handler = NumpyHandler()
    handler.rnd = RandomState(11)
    expected = RandomState(11).uniform(size=(20, 30)) < 0.5
    np.testing.assert_array_equal(_mask(handler), expected)
    handler.rnd = None
    bs.global_rnd.set_seed(3)
    seeded = _mask(handler)
    bs.global_rnd.set_seed(3)
    np.testing.assert_array_equal(_mask(handler), seeded)


# --- dtype ---------------------------------------------------------------------


def test_float32_handler_computes_in_float32():
    handler = NumpyHandler()
    a = handler.create_from_numpy(np.arange(6.0).reshape(2, 3))
    out = handler.allocate((2, 3))
    handler.mult_add_st(np.float64(0.5), a, out)
    handler.add_st(np.float64(1.0), out, out)
    handler.sigmoid(out, out)
    handler.sigmoid_deriv(None, out, a, out)
    assert a.dtype == out.dtype == handler.ones((2,)).dtype == np.float32
    assert handler.get_numpy_copy(out).dtype == np.float32


# --- activation tables ---------------------------------------------------------


ACTIVATIONS = ["sigmoid", "tanh", "rel", "el", "linear"]


def test_activation_tables_hold_every_activation():
    handler = NumpyHandler()
    assert set(handler.act_func) == set(handler.act_func_deriv) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize(
    "make", [lambda: NumpyHandler(np.float64), lambda: MinimalHandler()], ids=["numpy", "generic"]
)
def test_activation_derivatives_match_finite_differences(make, name):
    handler = make()
    rng = np.random.RandomState(0)
    x = rng.standard_normal((4, 5)) * 2
    x[np.abs(x) < 0.05] = 0.5  # keep the rectifiers' kinks away from the differences
    f, deriv = handler.act_func[name], handler.act_func_deriv[name]

    def apply(values):
        out = handler.allocate(values.shape)
        f(handler.create_from_numpy(values), out)
        return handler.get_numpy_copy(out)

    y = apply(x)
    dy = rng.standard_normal(x.shape)
    dx = handler.allocate(x.shape)
    deriv(*(handler.create_from_numpy(v) for v in (x, y, dy)), dx)
    step = 1e-6
    numeric = dy * (apply(x + step) - apply(x - step)) / (2 * step)
    np.testing.assert_allclose(handler.get_numpy_copy(dx), numeric, rtol=1e-6, atol=1e-8)


# --- the generic ops of the base class -------------------------------------------

#: ops the base class writes in terms of other ops
GENERIC_OPS = [
    "ones",
    "zeros",
    "create_from_numpy",
    "mult_add_tt",
    "mult_add_st",
    "mult_add_mv",
    "dot_add_mm",
    "sigmoid_deriv",
    "tanh_deriv",
    "rel_deriv",
    "el_deriv",
]


class MinimalHandler(Handler):
    """A handler implementing only the ops the base class leaves abstract."""

    def __init__(self):
        self.inner = NumpyHandler(np.float64)
        self.dtype = self.inner.dtype
        self.context = "minimal"
        self.array_type = np.ndarray
        self.EMPTY = self.inner.EMPTY
        self.rnd = RandomState(1)
        super().__init__()

    def __repr__(self):
        return "MinimalHandler()"


for _op in set(handler_ops()) - set(GENERIC_OPS):
    setattr(
        MinimalHandler,
        _op,
        lambda self, *args, _op=_op, **kwargs: getattr(self.inner, _op)(*args, **kwargs),
    )


@pytest.mark.parametrize("op", GENERIC_OPS)
def test_generic_implementations_of_the_base_class(op):
    assert op not in vars(MinimalHandler)
    check_op(MinimalHandler(), op)


def test_abstract_ops_name_the_handler_and_op():
    with pytest.raises(NotImplementedError, match="Handler does not implement add_tt"):
        Handler().add_tt(None, None, None)


# --- convolution and pooling against naive scalar loops ------------------------------


def naive_conv(x, w, b, p, stride):
    n, h, wd, c = x.shape
    f, kh, kw, _ = w.shape
    ho, wo = (h + 2 * p - kh) // stride[0] + 1, (wd + 2 * p - kw) // stride[1] + 1
    y = np.zeros((n, ho, wo, f))
    dx_of = {}  # (n, yo, xo, f) -> list of (input index, weight index)
    for i, yo, xo, k in itertools.product(range(n), range(ho), range(wo), range(f)):
        total, links = b[k], []
        for r, s, ch in itertools.product(range(kh), range(kw), range(c)):
            row, col = yo * stride[0] + r - p, xo * stride[1] + s - p
            if 0 <= row < h and 0 <= col < wd:
                total += x[i, row, col, ch] * w[k, r, s, ch]
                links.append(((i, row, col, ch), (k, r, s, ch)))
        y[i, yo, xo, k] = total
        dx_of[i, yo, xo, k] = links
    return y, dx_of


def naive_conv_backward(x, w, links, dy):
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for out_index, pairs in links.items():
        for x_index, w_index in pairs:
            dx[x_index] += w[w_index] * dy[out_index]
            dw[w_index] += x[x_index] * dy[out_index]
    return dx, dw, dy.sum(axis=(0, 1, 2))


def naive_pool(x, window, p, stride):
    """Max and average pooling with scalar loops; also the pixels of every window."""
    n, h, w, c = x.shape
    ho, wo = (h + 2 * p - window[0]) // stride[0] + 1, (w + 2 * p - window[1]) // stride[1] + 1
    maxes, argmax, means = np.zeros((n, ho, wo, c)), np.full((n, ho, wo, c), -1.0), {}
    pixels_of = {}
    for yo, xo in itertools.product(range(ho), range(wo)):
        pixels = [
            (yo * stride[0] + r - p, xo * stride[1] + s - p)
            for r in range(window[0])
            for s in range(window[1])
        ]
        pixels = [(r, s) for r, s in pixels if 0 <= r < h and 0 <= s < w]
        pixels_of[yo, xo] = pixels
        for i, ch in itertools.product(range(n), range(c)):
            values = [x[i, r, s, ch] for r, s in pixels]
            if values:
                best = int(np.argmax(values))
                maxes[i, yo, xo, ch] = values[best]
                r, s = pixels[best]
                argmax[i, yo, xo, ch] = (r * w + s) * c + ch
            means[i, yo, xo, ch] = sum(values) / len(values) if values else 0.0
    mean_array = np.zeros((n, ho, wo, c))
    for index, value in means.items():
        mean_array[index] = value
    return maxes, argmax, mean_array, pixels_of


def _image_configs():
    """(N, H, W, C, kernel, padding, stride) combinations the loops can afford."""
    configs = []
    sizes = [(1, 5, 6, 2), (2, 7, 4, 1), (2, 4, 4, 3)]
    kernels = [(1, 1), (2, 2), (3, 3), (3, 2), (4, 4)]
    strides = [(1, 1), (2, 2), (1, 2), (3, 3)]
    for index, (kernel, stride, padding) in enumerate(
        itertools.product(kernels, strides, (0, 1, 2))
    ):
        n, h, w, c = sizes[index % len(sizes)]
        if h + 2 * padding >= kernel[0] and w + 2 * padding >= kernel[1]:
            configs.append((n, h, w, c, kernel, padding, stride))
    return configs


IMAGE_CONFIGS = _image_configs()


def _ids(configs):
    return [f"{n}x{h}x{w}x{c}-k{k}-p{p}-s{s}" for n, h, w, c, k, p, s in configs]


@pytest.mark.parametrize(
    "n, h, w, c, kernel, padding, stride", IMAGE_CONFIGS, ids=_ids(IMAGE_CONFIGS)
)
def test_convolution_matches_naive_loops(n, h, w, c, kernel, padding, stride):
    handler = NumpyHandler(np.float64)
    rng = np.random.RandomState(0)
    f = 3
    x = rng.standard_normal((n, h, w, c))
    weights = rng.standard_normal((f,) + kernel + (c,))
    bias = rng.standard_normal(f)
    expected, links = naive_conv(x, weights, bias, padding, stride)
    outputs = np.zeros(expected.shape)
    handler.conv2d_forward_batch(x, weights, bias, outputs, padding, stride)
    np.testing.assert_allclose(outputs, expected, rtol=1e-10, atol=1e-12)

    dy = rng.standard_normal(expected.shape)
    dx, dw, db = naive_conv_backward(x, weights, links, dy)
    in_deltas = np.ones_like(x)
    weight_deltas, bias_deltas = np.full_like(weights, 7.0), np.full_like(bias, 7.0)
    handler.conv2d_backward_batch(
        x, weights, padding, stride, in_deltas, dy, weight_deltas, bias_deltas
    )
    np.testing.assert_allclose(in_deltas, 1 + dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weight_deltas, dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bias_deltas, db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "n, h, w, c, window, padding, stride", IMAGE_CONFIGS, ids=_ids(IMAGE_CONFIGS)
)
def test_pooling_matches_naive_loops(n, h, w, c, window, padding, stride):
    handler = NumpyHandler(np.float64)
    rng = np.random.RandomState(1)
    x = rng.standard_normal((n, h, w, c))
    maxes, argmax, means, pixels_of = naive_pool(x, window, padding, stride)
    outputs, found = np.full(maxes.shape, 9.0), np.full(maxes.shape, 9.0)
    handler.maxpool2d_forward_batch(x, window, outputs, padding, stride, found)
    np.testing.assert_array_equal(outputs, maxes)
    np.testing.assert_array_equal(found, argmax)
    handler.avgpool2d_forward_batch(x, window, outputs, padding, stride)
    np.testing.assert_allclose(outputs, means, rtol=1e-12, atol=1e-14)

    dy = rng.standard_normal(maxes.shape)
    expected_max, expected_avg = np.zeros_like(x), np.zeros_like(x)
    for i, yo, xo, ch in itertools.product(*map(range, dy.shape)):
        pixels = pixels_of[yo, xo]
        for r, s in pixels:
            expected_avg[i, r, s, ch] += dy[i, yo, xo, ch] / len(pixels)
        if argmax[i, yo, xo, ch] >= 0:
            r, rest = divmod(int(argmax[i, yo, xo, ch]), w * c)
            expected_max[i, r, rest // c, ch] += dy[i, yo, xo, ch]
    in_deltas = np.ones_like(x)
    handler.maxpool2d_backward_batch(x, window, maxes, padding, stride, argmax, in_deltas, dy)
    np.testing.assert_allclose(in_deltas, 1 + expected_max, rtol=1e-12, atol=1e-14)
    in_deltas = np.ones_like(x)
    handler.avgpool2d_backward_batch(x, window, means, padding, stride, in_deltas, dy)
    np.testing.assert_allclose(in_deltas, 1 + expected_avg, rtol=1e-12, atol=1e-14)


def test_convolution_of_ones_counts_the_pixels_under_the_kernel():
    handler = NumpyHandler(np.float64)
    outputs = np.zeros((1, 4, 4, 1))
    handler.conv2d_forward_batch(
        np.ones((1, 4, 4, 1)), np.ones((1, 3, 3, 1)), np.zeros(1), outputs, 1, (1, 1)
    )
    assert outputs[0, :, :, 0].tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]


def test_pooling_a_window_of_padding_only():
    handler = NumpyHandler(np.float64)
    x = np.arange(4.0).reshape(1, 2, 2, 1) - 10  # all negative
    outputs, argmax = np.ones((1, 6, 6, 1)), np.ones((1, 6, 6, 1))
    handler.maxpool2d_forward_batch(x, (1, 1), outputs, 2, (1, 1), argmax)
    assert outputs[0, 0, 0, 0] == 0 and argmax[0, 0, 0, 0] == -1
    assert outputs[0, 2, 3, 0] == -9 and argmax[0, 2, 3, 0] == 1
    handler.avgpool2d_forward_batch(x, (1, 1), outputs, 2, (1, 1))
    assert outputs[0, 0, 0, 0] == 0 and outputs[0, 3, 3, 0] == -7


def test_pooling_real_minus_infinity_next_to_padding():
    # real pixels of -inf tie with the -inf padding: the first real pixel wins,
    # and only windows without any image pixel give 0 and argmax -1
    handler = NumpyHandler(np.float64)
    x = np.full((1, 2, 2, 1), -np.inf)
    x[0, 1, 1, 0] = -np.inf
    for window, padding, stride in (((2, 2), 1, (1, 1)), ((2, 2), 2, (1, 1)), ((3, 3), 2, (2, 2))):
        maxes, argmax, _, _ = naive_pool(x, window, padding, stride)
        outputs, found = np.full(maxes.shape, 9.0), np.full(maxes.shape, 9.0)
        handler.maxpool2d_forward_batch(x, window, outputs, padding, stride, found)
        np.testing.assert_array_equal(outputs, maxes)
        np.testing.assert_array_equal(found, argmax)


def test_kept_padded_images_are_not_shared_across_paddings():
    # a 6x6 image with padding 1 and a 4x4 image with padding 2 both pad to 8x8;
    # one handler must not hand the second the first one's pixels as its border
    handler = NumpyHandler(np.float64)
    rng = np.random.RandomState(4)
    weights, bias = rng.standard_normal((2, 3, 3, 3)), np.zeros(2)
    for n, size, padding in ((2, 6, 1), (2, 4, 2), (2, 6, 1)):
        x = rng.standard_normal((n, size, size, 3))
        expected, links = naive_conv(x, weights, bias, padding, (1, 1))
        outputs = np.zeros(expected.shape)
        handler.conv2d_forward_batch(x, weights, bias, outputs, padding, (1, 1))
        np.testing.assert_allclose(outputs, expected, rtol=1e-10, atol=1e-12)
        dy = rng.standard_normal(expected.shape)
        dx, dw, _ = naive_conv_backward(x, weights, links, dy)
        in_deltas, weight_deltas = np.zeros_like(x), np.zeros_like(weights)
        handler.conv2d_backward_batch(
            x, weights, padding, (1, 1), in_deltas, dy, weight_deltas, np.zeros(2)
        )
        np.testing.assert_allclose(in_deltas, dx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(weight_deltas, dw, rtol=1e-10, atol=1e-12)
        maxes, argmax, _, _ = naive_pool(x, (3, 3), padding, (1, 1))
        pooled, found = np.zeros(maxes.shape), np.zeros(maxes.shape)
        handler.maxpool2d_forward_batch(x, (3, 3), pooled, padding, (1, 1), found)
        np.testing.assert_array_equal(pooled, maxes)
        np.testing.assert_array_equal(found, argmax)


def test_convolution_accepts_strided_arguments():
    handler = NumpyHandler(np.float32)
    rng = np.random.RandomState(2)
    big_x = rng.standard_normal((2, 5, 5, 6)).astype(np.float32)
    x = big_x[..., 1:4]
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    big_out = np.zeros((2, 3, 3, 5), np.float32)
    handler.conv2d_forward_batch(x, w, np.zeros(2, np.float32), big_out[..., 2:4], 1, (2, 2))
    expected, _ = naive_conv(x.astype(np.float64), w, np.zeros(2), 1, (2, 2))
    np.testing.assert_allclose(big_out[..., 2:4], expected, rtol=1e-5, atol=1e-5)
    assert not big_out[..., :2].any() and not big_out[..., 4:].any()


# --- the debug handler ---------------------------------------------------------------


@pytest.fixture
def debug():
    return DebugHandler(NumpyHandler(np.float64))


def test_debug_arrays(debug):
    a = debug.create_from_numpy(np.arange(24.0).reshape(2, 3, 4))
    assert isinstance(a, DebugArray) and isinstance(a.array, np.ndarray)
    assert (a.shape, a.size, a.ndim, len(a), a.dtype) == ((2, 3, 4), 24, 3, 2, np.float64)
    assert a[1].shape == (3, 4)
    assert a[..., 1:3].shape == (2, 3, 2)
    assert a[0, :, 2].shape == (3,)
    assert a[:, 1:2, ::1].shape == (2, 1, 4)
    assert a.reshape(6, 4).shape == a.reshape((6, 4)).shape == (6, 4)
    with pytest.raises(IndexError, match="step"):
        a[::2]
    with pytest.raises(IndexError, match="only ints"):
        a[np.array([0, 1])]
    with pytest.raises(IndexError, match="only ints"):
        a[None]
    with pytest.raises(ValueError, match="non-negative"):
        a.reshape(-1, 4)
    element = a[1, 2, 3]  # an int for every axis: a 0-d view that ops write through
    assert element.shape == () and isinstance(element.array, np.ndarray)
    debug.fill(element, -5.0)
    assert debug.get_numpy_copy(a)[1, 2, 3] == -5.0


def test_debug_handler_reports_a_shape_mismatch(debug):
    a, b, out = debug.ones((3, 4)), debug.ones((3, 4)), debug.zeros((3, 5))
    with pytest.raises(
        ValueError,
        match=r"DebugHandler.add_tt: shapes differ: a \(3, 4\), b \(3, 4\), out \(3, 5\)",
    ):
        debug.add_tt(a, b, out)


def test_debug_handler_reports_nan_naming_op_and_argument(debug):
    a = debug.create_from_numpy(np.array([[1.0, np.nan]]))  # moving data is not checked
    assert not debug.is_fully_finite(a)
    out = debug.zeros((1, 2))
    with pytest.raises(ValueError, match="DebugHandler.mult_st: argument 't' contains NaN"):
        debug.mult_st(2.0, a, out)
    zero = debug.zeros((1, 2))
    message = "DebugHandler.log_t: argument 'out' contains NaN or inf"
    with pytest.raises(ValueError, match=message), np.errstate(divide="ignore"):
        debug.log_t(zero, out)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda d: d.add_tt(np.ones(3), d.ones((3,)), d.ones((3,))),
            TypeError,
            "'a' must be a DebugArray",
        ),
        (lambda d: d.mult_st("2", d.ones((3,)), d.ones((3,))), TypeError, "'s' must be a number"),
        (lambda d: d.add_st(np.nan, d.ones((3,)), d.ones((3,))), ValueError, "'s' must be finite"),
        (
            lambda d: d.add_mv(d.ones((3, 4)), d.ones((3, 4)), d.ones((3, 4))),
            ValueError,
            r"\(1, 4\) or \(3, 1\)",
        ),
        (
            lambda d: d.mult_mv(d.ones((3, 4)), d.ones((4, 1)), d.ones((3, 4))),
            ValueError,
            r"or \(3, 4\)",
        ),
        (
            lambda d: d.dot_mm(d.ones((3, 4)), d.ones((3, 2)), d.ones((3, 2))),
            ValueError,
            "inner dimensions 4 != 3",
        ),
        (
            lambda d: d.dot_mm(d.ones((3, 4)), d.ones((4, 2)), d.ones((2, 3))),
            ValueError,
            "expected \\(3, 2\\)",
        ),
        (
            lambda d: d.dot_mm(d.ones((3, 4)), d.ones((4, 2)), d.ones((3, 2)), transa=1),
            TypeError,
            "'transa' must be a bool",
        ),
        (lambda d: d.sum_t(d.ones((3, 4)), 2, d.ones((3,))), ValueError, "out of range"),
        (
            lambda d: d.sum_t(d.ones((3, 4)), 0, d.ones((3,))),
            ValueError,
            r"gives \(1, 4\) or \(4,\)",
        ),
        (lambda d: d.generate_probability_mask(d.ones((3,)), 1.5), ValueError, r"in \[0, 1\]"),
        (lambda d: d.fill_gaussian(0.0, -1.0, d.ones((3,))), ValueError, "std must be >= 0"),
        (lambda d: d.clip_t(d.ones((3,)), 1.0, 0.0, d.ones((3,))), ValueError, "must not exceed"),
        (
            lambda d: d.broadcast_t(d.ones((3, 2)), 1, d.ones((3, 5))),
            ValueError,
            "must have size 1",
        ),
        (
            lambda d: d.merge_tt(d.ones((3, 2)), d.ones((3, 2)), d.ones((3, 5))),
            ValueError,
            "do not concatenate",
        ),
        (
            lambda d: d.binarize_v(d.create_from_numpy(np.array([[0.0], [4.0]])), d.ones((2, 4))),
            ValueError,
            r"outside \[0, 4\)",
        ),
        (
            lambda d: d.index_m_by_v(
                d.ones((2, 3)), d.create_from_numpy(np.array([[0.5], [1.0]])), d.ones((2, 1))
            ),
            ValueError,
            "integer values",
        ),
        (lambda d: d.allocate((2, -1)), TypeError, "non-negative ints"),
        (lambda d: d.add_tt(*[DebugArray(np.ones(3, np.float32))] * 3), TypeError, "dtype float32"),
    ],
)
def test_debug_handler_checks_arguments(debug, call, error, message):
    with pytest.raises(error, match=message):
        call(debug)


def test_debug_handler_checks_images(debug):
    x, w, b = debug.ones((2, 5, 5, 3)), debug.ones((4, 3, 3, 3)), debug.ones((4,))
    debug.conv2d_forward_batch(x, w, b, debug.zeros((2, 3, 3, 4)), 1, (2, 2))
    with pytest.raises(
        ValueError, match=r"outputs has shape \(2, 5, 5, 4\), expected \(2, 3, 3, 4\)"
    ):
        debug.conv2d_forward_batch(x, w, b, debug.zeros((2, 5, 5, 4)), 1, (2, 2))
    with pytest.raises(TypeError, match="'stride' must be a tuple of two ints"):
        debug.conv2d_forward_batch(x, w, b, debug.zeros((2, 3, 3, 4)), 1, [2, 2])
    with pytest.raises(ValueError, match="inputs must have 4 dimensions"):
        debug.conv2d_forward_batch(x[0], w, b, debug.zeros((2, 3, 3, 4)), 1, (2, 2))
    with pytest.raises(ValueError, match="have 2 channels"):
        debug.conv2d_forward_batch(
            x, debug.ones((4, 3, 3, 2)), b, debug.zeros((2, 3, 3, 4)), 1, (2, 2)
        )
    with pytest.raises(TypeError, match="'padding' must be an int"):
        debug.avgpool2d_forward_batch(x, (2, 2), debug.zeros((2, 2, 2, 3)), 0.0, (2, 2))
    with pytest.raises(TypeError, match="'window' must be a tuple of two ints"):
        debug.avgpool2d_forward_batch(x, (2, 2.0), debug.zeros((2, 2, 2, 3)), 0, (2, 2))
    with pytest.raises(ValueError, match="larger than the padded H"):
        debug.avgpool2d_forward_batch(x, (8, 2), debug.zeros((2, 1, 4, 3)), 1, (1, 1))
    with pytest.raises(ValueError, match="argmax has shape"):
        debug.maxpool2d_forward_batch(
            x, (2, 2), debug.zeros((2, 2, 2, 3)), 0, (2, 2), debug.zeros((2, 2, 2, 1))
        )


def test_debug_handler_allows_in_place_but_not_partial_overlap(debug):
    big = debug.create_from_numpy(np.arange(24.0).reshape(4, 6))
    a, shifted, b = big[:, 0:4], big[:, 1:5], debug.ones((4, 4))
    debug.add_tt(a, b, a)  # in place: fine
    assert debug.get_numpy_copy(big)[0].tolist() == [1, 2, 3, 4, 4, 5]
    with pytest.raises(ValueError, match="DebugHandler.add_tt: out overlaps a"):
        debug.add_tt(a, b, shifted)
    with pytest.raises(ValueError, match="out must not share memory with a"):
        debug.dot_mm(a, b, a)
    with pytest.raises(ValueError, match="out_a must not share memory with out_b"):
        debug.split_add_tt(debug.ones((4, 8)), a, a)
