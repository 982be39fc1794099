"""Tests of Convolution2D and Pooling2D: generic checks, naive-loop references, semantics."""

from __future__ import annotations

import json
from importlib import metadata

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.testing import check_layer, get_test_configurations
from brainstorm.utils import LayerValidationError

# -- naive references: plain loops over every output, written for clarity -------------------


def naive_conv(x, W, bias, stride, padding):
    """``(N, H, W, C)`` images, ``(F, kh, kw, C)`` filters -> ``(N, Ho, Wo, F)``."""
    n, h, w, c = x.shape
    f, kh, kw, _ = W.shape
    (sh, sw), p = stride, padding
    ho, wo = (h + 2 * p - kh) // sh + 1, (w + 2 * p - kw) // sw + 1
    out = np.zeros((n, ho, wo, f))
    for b in range(n):
        for y in range(ho):
            for x_ in range(wo):
                for k in range(f):
                    total = bias[k]
                    for i in range(kh):
                        for j in range(kw):
                            row, col = y * sh + i - p, x_ * sw + j - p
                            if 0 <= row < h and 0 <= col < w:
                                total += np.dot(W[k, i, j], x[b, row, col])
                    out[b, y, x_, k] = total
    return out


def naive_conv_backward(x, W, stride, padding, dy):
    """Input deltas, weight and bias gradients of :func:`naive_conv` for output deltas dy."""
    n, h, w, c = x.shape
    f, kh, kw, _ = W.shape
    (sh, sw), p = stride, padding
    dx, dW = np.zeros_like(x), np.zeros_like(W)
    for b in range(n):
        for y in range(dy.shape[1]):
            for x_ in range(dy.shape[2]):
                for k in range(f):
                    for i in range(kh):
                        for j in range(kw):
                            row, col = y * sh + i - p, x_ * sw + j - p
                            if 0 <= row < h and 0 <= col < w:
                                dx[b, row, col] += W[k, i, j] * dy[b, y, x_, k]
                                dW[k, i, j] += x[b, row, col] * dy[b, y, x_, k]
    return dx, dW, dy.sum(axis=(0, 1, 2))


def naive_pool(x, kernel, stride, padding, kind):
    """Max or average pooling -> ``(outputs, argmax)``; argmax is None for 'avg'.

    Windows are scanned row by row, padding pixels are skipped, the first
    maximum wins; a window made only of padding gives 0 (argmax -1).
    """
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), p = kernel, stride, padding
    ho, wo = (h + 2 * p - kh) // sh + 1, (w + 2 * p - kw) // sw + 1
    out, argmax = np.zeros((n, ho, wo, c)), np.full((n, ho, wo, c), -1.0)
    for b in range(n):
        for y in range(ho):
            for x_ in range(wo):
                for ch in range(c):
                    values = []
                    for i in range(kh):
                        for j in range(kw):
                            row, col = y * sh + i - p, x_ * sw + j - p
                            if 0 <= row < h and 0 <= col < w:
                                values.append((x[b, row, col, ch], (row * w + col) * c + ch))
                    if not values:
                        continue
                    if kind == "avg":
                        out[b, y, x_, ch] = sum(v for v, _ in values) / len(values)
                    else:
                        best = values[0]
                        for candidate in values[1:]:
                            if candidate[0] > best[0]:
                                best = candidate
                        out[b, y, x_, ch], argmax[b, y, x_, ch] = best
    return out, (argmax if kind == "max" else None)


# -- helpers --------------------------------------------------------------------------------


def make_handler():
    from brainstorm.handlers.debug_handler import DebugHandler
    from brainstorm.handlers.numpy_handler import NumpyHandler

    return DebugHandler(NumpyHandler(np.float64, seed=1))


def build(layer, image_shape):
    """``Input >> layer`` on DebugHandler(NumpyHandler(float64)); returns (net, impl)."""
    bs.layers.Input({"default": ("T", "B", *image_shape)}) >> layer
    net = bs.Network.from_layer(layer, handler=make_handler())
    net.initialize(bs.initializers.Gaussian(0.5), seed=3)
    return net, net.layers[layer.layer.name]


def run(net, impl, x, dy=None, start=None):
    """Forward (training pass) on ``x`` ``(T, B, H, W, C)``; then, given output deltas
    ``dy``, the layer's backward pass adding into input deltas ``start``.

    Returns ``(outputs, input_deltas, gradients)`` as numpy (the last two None
    without ``dy``).
    """
    net.provide_external_data({"default": x})
    net.forward_pass(training_pass=True)
    outputs = net.get(f"{impl.name}.outputs.default")
    if dy is None:
        return outputs, None, None
    h, buffers = net.handler, net.buffer[impl.name]
    net.buffer_manager.clear_backward_buffers()
    h.set_from_numpy(buffers.output_deltas.default, dy)
    h.set_from_numpy(buffers.input_deltas.default, np.zeros_like(x) if start is None else start)
    impl.backward_pass(buffers)
    grads = {k: h.get_numpy_copy(v) for k, v in buffers.gradients.items()}
    return outputs, h.get_numpy_copy(buffers.input_deltas.default), grads


def flat(a):
    """``(T, B, ...) -> (T*B, ...)``."""
    return a.reshape((-1,) + a.shape[2:])


def random_cases(seed, count, with_filters):
    """Random (image, kernel, stride, padding[, filters], T, B) that fit together."""
    rng = np.random.RandomState(seed)
    cases = []
    while len(cases) < count:
        image = (rng.randint(1, 8), rng.randint(1, 8), rng.randint(1, 4))
        kernel = (rng.randint(1, 5), rng.randint(1, 5))
        stride = (rng.randint(1, 4), rng.randint(1, 4))
        padding = int(rng.randint(0, 3))
        if kernel[0] > image[0] + 2 * padding or kernel[1] > image[1] + 2 * padding:
            continue
        case = {"image": image, "kernel": kernel, "stride": stride, "padding": padding}
        if with_filters:
            case["filters"] = int(rng.randint(1, 4))
        case["T"], case["B"] = int(rng.randint(1, 3)), int(rng.randint(1, 3))
        cases.append(case)
    return cases


def case_id(case):
    (h, w, c), (kh, kw), (sh, sw) = case["image"], case["kernel"], case["stride"]
    return f"{h}x{w}x{c}-k{kh}x{kw}-s{sh}x{sw}-p{case['padding']}-T{case['T']}B{case['B']}"


# -- registration ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Convolution2D", "Pooling2D"])
def test_registered_and_resolvable(name):
    from brainstorm import registry

    eps = metadata.distribution("brainstorm-layers").entry_points
    (ep,) = [ep for ep in eps if ep.group == "brainstorm.layers" and ep.name == name]
    assert ep.load() is getattr(bs.layers, name)
    assert getattr(bs.layers, name).__doc__
    assert registry.find_layer_impl(name).__name__ == name + "LayerImpl"


# -- generic checks (finite differences in float64, adds deltas, garbage, description) -------

# (id, factory(activation) -> ConstructionWrapper, image shape (H, W, C))
CHECK_CASES = [
    ("conv_3x3_p1", lambda a: bs.layers.Convolution2D(2, 3, padding=1, activation=a), (5, 4, 2)),
    (
        "conv_stride2_p1_kernel_3x2",
        lambda a: bs.layers.Convolution2D(3, (3, 2), stride=2, padding=1, activation=a),
        (5, 4, 2),
    ),
    (
        "conv_kernel_larger_than_stride",
        lambda a: bs.layers.Convolution2D(2, (4, 3), stride=(2, 1), activation=a),
        (5, 4, 2),
    ),
    (
        "conv_stride_larger_than_kernel",
        lambda a: bs.layers.Convolution2D(2, 2, stride=3, padding=1, activation=a),
        (5, 4, 2),
    ),
    ("conv_1x1", lambda a: bs.layers.Convolution2D(3, 1, activation=a), (5, 4, 2)),
    (
        "conv_whole_padded_image",
        lambda a: bs.layers.Convolution2D(2, (7, 6), padding=1, activation=a),
        (5, 4, 2),
    ),
    ("maxpool_3_s2_p1", lambda a: bs.layers.Pooling2D(3, stride=2, padding=1), (5, 4, 2)),
    ("maxpool_default_stride", lambda a: bs.layers.Pooling2D((2, 3)), (5, 4, 2)),
    ("maxpool_2_s2", lambda a: bs.layers.Pooling2D(2, stride=(2, 2)), (5, 4, 2)),
    (
        "maxpool_windows_of_only_padding",
        lambda a: bs.layers.Pooling2D(2, stride=1, padding=2),
        (3, 2, 2),
    ),
    ("avgpool_3_s2_p1", lambda a: bs.layers.Pooling2D(3, "avg", stride=2, padding=1), (5, 4, 2)),
    ("avgpool_default_stride", lambda a: bs.layers.Pooling2D((2, 3), "avg"), (5, 4, 2)),
    ("avgpool_1x1_s2", lambda a: bs.layers.Pooling2D(1, "avg", stride=2), (5, 4, 2)),
    (
        "avgpool_windows_of_only_padding",
        lambda a: bs.layers.Pooling2D(2, "avg", stride=1, padding=2),
        (3, 2, 2),
    ),
]

CONFIGURATIONS = get_test_configurations()


def test_configurations_include_t1_b1_and_every_activation():
    assert any(c["time_steps"] == 1 for c in CONFIGURATIONS)
    assert any(c["batch_size"] == 1 for c in CONFIGURATIONS)
    assert {c["activation"] for c in CONFIGURATIONS} == {"sigmoid", "tanh", "rel", "linear", "el"}


@pytest.mark.parametrize(
    "config",
    CONFIGURATIONS,
    ids=lambda c: f"T{c['time_steps']}B{c['batch_size']}-{c['activation']}",
)
@pytest.mark.parametrize(
    "factory, image", [c[1:] for c in CHECK_CASES], ids=[c[0] for c in CHECK_CASES]
)
def test_check_layer(factory, image, config):
    check_layer(
        factory(config["activation"]),
        {"default": image},
        time_steps=config["time_steps"],
        batch_size=config["batch_size"],
        seed=11,
    )


# -- agreement with the naive loops -----------------------------------------------------------

CONV_CASES = random_cases(seed=5, count=40, with_filters=True)
POOL_CASES = random_cases(seed=6, count=40, with_filters=False)


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_convolution_matches_naive_loops(case):
    layer = bs.layers.Convolution2D(
        case["filters"],
        case["kernel"],
        stride=case["stride"],
        padding=case["padding"],
        activation="linear",
    )
    net, impl = build(layer, case["image"])
    rng = np.random.RandomState(0)
    x = rng.randn(case["T"], case["B"], *case["image"])
    out_shape = impl.out_shapes["default"].feature_shape
    dy, start = rng.randn(case["T"], case["B"], *out_shape), rng.randn(*x.shape)
    y, dx, grads = run(net, impl, x, dy, start)

    W, bias = net.get(f"{impl.name}.parameters.W"), net.get(f"{impl.name}.parameters.bias")
    expected = naive_conv(flat(x), W, bias, case["stride"], case["padding"])
    np.testing.assert_allclose(flat(y), expected, rtol=1e-10, atol=1e-12)
    ndx, ndW, nbias = naive_conv_backward(flat(x), W, case["stride"], case["padding"], flat(dy))
    np.testing.assert_allclose(flat(dx), flat(start) + ndx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["W"], ndW, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["bias"], nbias, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_pooling_matches_naive_loops(case, kind):
    layer = bs.layers.Pooling2D(
        case["kernel"], kind, stride=case["stride"], padding=case["padding"]
    )
    net, impl = build(layer, case["image"])
    x = np.random.RandomState(0).randn(case["T"], case["B"], *case["image"])
    y, _, _ = run(net, impl, x)
    expected, argmax = naive_pool(flat(x), case["kernel"], case["stride"], case["padding"], kind)
    np.testing.assert_allclose(flat(y), expected, rtol=1e-12, atol=1e-12)
    if kind == "max":
        np.testing.assert_array_equal(flat(net.get(f"{impl.name}.internals.argmax")), argmax)
    else:
        assert "argmax" not in impl.internal_shapes


@pytest.mark.parametrize("activation", ["rel", "tanh", "sigmoid", "el"])
def test_convolution_applies_the_activation(activation):
    act = {
        "rel": lambda v: np.maximum(v, 0),
        "tanh": np.tanh,
        "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
        "el": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0))),
    }[activation]
    layer = bs.layers.Convolution2D(3, (2, 3), stride=(1, 2), padding=1, activation=activation)
    net, impl = build(layer, (4, 5, 2))
    x = np.random.RandomState(1).randn(2, 3, 4, 5, 2)
    y, _, _ = run(net, impl, x)
    W, bias = net.get(f"{impl.name}.parameters.W"), net.get(f"{impl.name}.parameters.bias")
    expected = act(naive_conv(flat(x), W, bias, (1, 2), 1))
    np.testing.assert_allclose(flat(y), expected, rtol=1e-10, atol=1e-12)


def test_layers_work_on_slices_of_shared_buffers():
    """Outputs that feed a common input share one buffer side by side, so the
    layers get non-contiguous views (channel slices) as inputs and outputs."""
    inp = bs.layers.Input({"a": ("T", "B", 4, 5, 2), "b": ("T", "B", 4, 5, 3)})
    conv = bs.layers.Convolution2D(2, 3, stride=(2, 1), padding=1, activation="linear", name="c")
    pool = bs.layers.Pooling2D(2, "max", stride=1, name="p")
    other = bs.layers.Convolution2D(3, 3, (2, 1), 1, activation="linear", name="o")
    sink = bs.layers.NoOp(name="sink")
    inp - "a" >> conv >> sink
    inp - "a" >> pool
    inp - "b" >> other >> sink
    both = bs.layers.NoOp(name="both")  # puts a and b side by side
    inp - "a" >> both
    inp - "b" >> both
    net = bs.Network.from_layer(sink, handler=make_handler())
    net.initialize(bs.initializers.Gaussian(0.5), seed=3)
    assert not net.buffer.c.inputs.default.array.flags.c_contiguous
    assert not net.buffer.c.outputs.default.array.flags.c_contiguous

    rng = np.random.RandomState(2)
    a, b = rng.randn(2, 2, 4, 5, 2), rng.randn(2, 2, 4, 5, 3)
    net.provide_external_data({"a": a, "b": b})
    net.forward_pass(training_pass=True)
    W, bias = net.get("c.parameters.W"), net.get("c.parameters.bias")
    np.testing.assert_allclose(
        flat(net.get("c.outputs.default")), naive_conv(flat(a), W, bias, (2, 1), 1), rtol=1e-10
    )
    expected, argmax = naive_pool(flat(a), (2, 2), (1, 1), 0, "max")
    np.testing.assert_allclose(flat(net.get("p.outputs.default")), expected, rtol=1e-12)
    np.testing.assert_array_equal(flat(net.get("p.internals.argmax")), argmax)

    h = net.handler
    net.buffer_manager.clear_backward_buffers()
    dy = rng.randn(*net.get("c.outputs.default").shape)
    h.set_from_numpy(net.buffer.c.output_deltas.default, dy)
    net.layers["c"].backward_pass(net.buffer.c)
    ndx, ndW, _ = naive_conv_backward(flat(a), W, (2, 1), 1, flat(dy))
    np.testing.assert_allclose(flat(net.get("c.input_deltas.default")), ndx, rtol=1e-10)
    np.testing.assert_allclose(net.get("c.gradients.W"), ndW, rtol=1e-10)


# -- pooling semantics ------------------------------------------------------------------------


def test_max_pooling_argmax_is_the_flat_in_image_index():
    net, impl = build(bs.layers.Pooling2D(2, stride=2), (4, 4, 2))
    x = np.zeros((1, 1, 4, 4, 2))
    x[0, 0, 1, 0, 0] = 5.0  # window (0, 0), channel 0: pixel (1, 0)
    x[0, 0, 2, 3, 1] = 7.0  # window (1, 1), channel 1: pixel (2, 3)
    run(net, impl, x)
    argmax = net.get(f"{impl.name}.internals.argmax")[0, 0]
    assert argmax.dtype == np.float64
    assert argmax[0, 0, 0] == (1 * 4 + 0) * 2 + 0
    assert argmax[1, 1, 1] == (2 * 4 + 3) * 2 + 1


def test_max_pooling_first_maximum_wins_and_gets_the_deltas():
    net, impl = build(bs.layers.Pooling2D(2, stride=2), (2, 2, 1))
    x = np.array([1.0, 3.0, 3.0, 2.0]).reshape(1, 1, 2, 2, 1)
    y, dx, _ = run(net, impl, x, dy=np.full((1, 1, 1, 1, 1), 4.0))
    assert y.ravel().tolist() == [3.0]
    assert net.get(f"{impl.name}.internals.argmax").ravel().tolist() == [1.0]
    assert dx.ravel().tolist() == [0.0, 4.0, 0.0, 0.0]


def test_max_pooling_padding_never_wins():
    net, impl = build(bs.layers.Pooling2D(3, stride=1, padding=1), (3, 3, 1))
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3, 1)  # all negative: zero padding would win
    y, _, _ = run(net, impl, x)
    assert (y < 0).all()
    assert y[0, 0, 0, 0, 0] == -1.0  # top-left window sees pixels 1, 2, 4, 5


def test_max_pooling_window_of_only_padding_outputs_zero():
    net, impl = build(bs.layers.Pooling2D(2, stride=1, padding=2), (2, 2, 1))
    x = np.full((1, 1, 2, 2, 1), -3.0)
    y, dx, _ = run(net, impl, x, dy=np.ones((1, 1, 5, 5, 1)))
    assert y[0, 0, 0, 0, 0] == 0.0
    assert net.get(f"{impl.name}.internals.argmax")[0, 0, 0, 0, 0] == -1.0
    # every window holding a real pixel sends its delta to exactly one (tied) pixel
    assert dx.sum() == pytest.approx(np.sum(y != 0))


def test_max_pooling_deltas_accumulate_over_overlapping_windows():
    net, impl = build(bs.layers.Pooling2D(2, stride=1), (3, 3, 1))
    x = np.zeros((1, 1, 3, 3, 1))
    x[0, 0, 1, 1, 0] = 1.0  # the centre wins all four windows
    _, dx, _ = run(net, impl, x, dy=np.arange(1.0, 5.0).reshape(1, 1, 2, 2, 1))
    assert dx[0, 0, 1, 1, 0] == 10.0
    assert dx.sum() == 10.0


def test_average_pooling_divides_by_the_pixels_that_are_not_padding():
    net, impl = build(bs.layers.Pooling2D(3, "avg", stride=1, padding=1), (3, 4, 2))
    y, _, _ = run(net, impl, np.ones((2, 1, 3, 4, 2)))
    np.testing.assert_allclose(y, 1.0, rtol=1e-14)  # zero-padded averages would be < 1

    net, impl = build(bs.layers.Pooling2D(2, "avg", stride=1, padding=1), (2, 2, 1))
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2, 1)
    y, dx, _ = run(net, impl, x, dy=np.ones((1, 1, 3, 3, 1)))
    expected = [[1.0, 1.5, 2.0], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]]
    np.testing.assert_allclose(y[0, 0, :, :, 0], expected, rtol=1e-14)
    # each pixel is in 1 corner (1 pixel), 2 edge (2 pixels) and 1 centre (4 pixels) window
    np.testing.assert_allclose(dx, 1 + 2 * 0.5 + 0.25, rtol=1e-14)


# -- shapes, defaults and arguments -----------------------------------------------------------


def test_shapes():
    net, impl = build(bs.layers.Convolution2D(6, (5, 3), stride=(2, 1), padding=2), (9, 7, 3))
    assert impl.get_shape("outputs.default") == ("T", "B", 5, 9, 6)  # (9+4-5)//2+1, 7+4-3+1
    assert impl.get_shape("parameters.W") == (6, 5, 3, 3)
    assert impl.get_shape("parameters.bias") == (6,)
    net, impl = build(bs.layers.Pooling2D(3, stride=(2, 2)), (32, 32, 4))
    assert impl.get_shape("outputs.default") == ("T", "B", 15, 15, 4)
    assert impl.get_shape("internals.argmax") == ("T", "B", 15, 15, 4)


def test_defaults_match_the_reference():
    conv = bs.layers.Convolution2D(4, 3)
    assert conv.layer.kwargs == {
        "num_filters": 4,
        "kernel_size": (3, 3),
        "stride": (1, 1),
        "padding": 0,
        "activation": "rel",
    }
    pool = bs.layers.Pooling2D(3)
    assert pool.layer.kwargs == {
        "kernel_size": (3, 3),
        "type": "max",
        "stride": (1, 1),
        "padding": 0,
    }


def test_kernel_and_stride_lists_survive_a_json_round_trip():
    inp = bs.layers.Input({"default": ("T", "B", 6, 6, 2)})
    conv = bs.layers.Convolution2D(3, [3, 2], stride=[2, 1], name="conv")
    pool = bs.layers.Pooling2D(2, stride=2, name="pool")
    inp >> conv >> pool
    architecture = json.loads(json.dumps(bs.generate_architecture(pool)))
    assert architecture["conv"]["kernel_size"] == [3, 2]
    net = bs.Network.from_architecture(architecture, handler=make_handler())
    assert net.layers["conv"].kernel_size == (3, 2)
    assert net.layers["conv"].stride == (2, 1)
    assert net.layers["pool"].kernel_size == (2, 2)
    assert net.layers["pool"].stride == (2, 2)


def _architecture(layer_type, **kwargs):
    return {
        "Input": {
            "@type": "Input",
            "@outgoing_connections": {"default": ["L"]},
            "out_shapes": {"default": ["T", "B", 4, 4, 1]},
        },
        "L": {"@type": layer_type, "@outgoing_connections": {}, **kwargs},
    }


def test_convolution_falls_back_to_rel_without_an_activation():
    architecture = _architecture("Convolution2D", num_filters=1, kernel_size=[1, 1])
    net = bs.Network.from_architecture(architecture, handler=make_handler())
    assert net.layers["L"].activation == "rel"
    net.initialize(1.0)
    y, _, _ = run(net, net.layers["L"], -np.ones((1, 1, 4, 4, 1)))
    assert (y == 0).all()


def test_pooling_accepts_the_reference_activation_function_argument():
    architecture = _architecture("Pooling2D", kernel_size=[2, 2], activation_function="rel")
    net = bs.Network.from_architecture(architecture, handler=make_handler())
    assert net.layers["L"].type == "max"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: bs.layers.Convolution2D(0, 3), "num_filters"),
        (lambda: bs.layers.Convolution2D(2.0, 3), "num_filters"),
        (lambda: bs.layers.Convolution2D(2, (3, 3, 3)), "kernel_size"),
        (lambda: bs.layers.Convolution2D(2, (3, 0)), "kernel_size"),
        (lambda: bs.layers.Convolution2D(2, True), "kernel_size"),
        (lambda: bs.layers.Convolution2D(2, 3, stride=0), "stride"),
        (lambda: bs.layers.Convolution2D(2, 3, stride=(1, 1.5)), "stride"),
        (lambda: bs.layers.Convolution2D(2, 3, padding=-1), "padding"),
        (lambda: bs.layers.Convolution2D(2, 3, padding=(1, 1)), "padding"),
        (lambda: bs.layers.Convolution2D(2, 3, activation="relu"), "activation"),
        (lambda: bs.layers.Pooling2D(3, type="min"), "type"),
        (lambda: bs.layers.Pooling2D((2, 2, 2)), "kernel_size"),
        (lambda: bs.layers.Pooling2D(2, stride=(0, 1)), "stride"),
        (lambda: bs.layers.Pooling2D(2, padding=0.5), "padding"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_layer(make, match):
    with pytest.raises(LayerValidationError, match=match) as info:
        make()
    assert "Convolution2D" in str(info.value) or "Pooling2D" in str(info.value)


@pytest.mark.parametrize(
    "layer_type, kwargs, match",
    [
        ("Convolution2D", {"num_filters": 1, "kernel_size": [5, 1]}, "does not fit"),
        ("Convolution2D", {"num_filters": 1, "kernel_size": [1, 1], "stride": [1]}, "stride"),
        ("Convolution2D", {"kernel_size": [1, 1]}, "required"),
        ("Pooling2D", {"kernel_size": [2, 7], "padding": 1}, "does not fit"),
        ("Pooling2D", {"kernel_size": [2, 2], "type": "sum"}, "type"),
        ("Pooling2D", {"type": "max"}, "required"),
    ],
)
def test_bad_architectures_are_rejected_naming_the_layer(layer_type, kwargs, match):
    with pytest.raises(LayerValidationError, match=match) as info:
        bs.Network.from_architecture(_architecture(layer_type, **kwargs), handler=make_handler())
    assert "'L'" in str(info.value)


@pytest.mark.parametrize("factory", [bs.layers.Convolution2D, bs.layers.Pooling2D])
def test_kernel_larger_than_the_padded_image_is_rejected(factory):
    args = (2, (5, 3)) if factory is bs.layers.Convolution2D else ((5, 3),)
    layer = factory(*args, padding=1, name="big")
    bs.layers.Input({"default": ("T", "B", 2, 5, 1)}) >> layer
    with pytest.raises(LayerValidationError, match=r"'big'.*kernel 5x3 does not fit.*2x5.*4x7"):
        bs.Network.from_layer(layer, handler=make_handler())


@pytest.mark.parametrize("factory", [bs.layers.Convolution2D, bs.layers.Pooling2D])
@pytest.mark.parametrize("features", [(16,), (4, 4), (2, 2, 2, 2)])
def test_inputs_that_are_not_images_are_rejected(factory, features):
    args = (2, 1) if factory is bs.layers.Convolution2D else (1,)
    layer = factory(*args, name="img")
    bs.layers.Input({"default": ("T", "B", *features)}) >> layer
    with pytest.raises(LayerValidationError, match=r"'img'.*\(height, width, channels\)"):
        bs.Network.from_layer(layer, handler=make_handler())
