"""Handler conformance: every op of a handler against a float64 NumPy reference.

Every handler (ours and any plug-in's) must pass these checks. Each case builds
random inputs of odd sizes, computes the expected result in float64 with plain
NumPy (loops for convolution and pooling), runs the op on the handler and
compares with a tolerance suited to the handler's dtype. Array cases run in
up to three layouts:

* ``contiguous``: arrays made with ``handler.create_from_numpy``;
* ``strided``: every array is a slice of the last axis of a bigger handler
  array (as the network layout produces); the slice's neighbours must stay
  untouched;
* ``inplace``: for elementwise ops, the output is the very same array as an input.

Inputs that an op only reads must come back unchanged, and every op must return
``None`` unless it is documented to return something.

Usage, e.g. in a plug-in's tests::

    import pytest
    from brainstorm.testing.handler_conformance import CONFORMANCE_CASES, check_op

    @pytest.mark.parametrize("case", [c.name for c in CONFORMANCE_CASES])
    def test_my_handler(case):
        check_op(MyHandler(), case)

or simply ``check_handler(MyHandler())``.
"""

from __future__ import annotations

import inspect
import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "OpCase",
    "CONFORMANCE_CASES",
    "check_op",
    "check_handler",
    "handler_ops",
    "reference_conv2d_forward",
    "reference_conv2d_backward",
    "reference_maxpool2d_forward",
    "reference_maxpool2d_backward",
    "reference_avgpool2d_forward",
    "reference_avgpool2d_backward",
]


@dataclass(frozen=True)
class OpCase:
    """One conformance check.

    Attributes:
        name: unique name of the case, e.g. ``'add_mv[row]'``.
        op: the handler op it checks.
        run: ``run(handler)`` performs the check; raises ``AssertionError``.
    """

    name: str
    op: str
    run: Callable = field(repr=False)


def handler_ops():
    """The names of all public ops of :class:`~brainstorm.handlers.base_handler.Handler`."""
    from brainstorm.handlers.base_handler import Handler

    return sorted(
        name
        for name, value in vars(Handler).items()
        if not name.startswith("_") and inspect.isfunction(value)
    )


def check_op(handler, name):
    """Run the conformance case ``name`` (or every case of the op ``name``) on ``handler``.

    Args:
        handler: the handler to check.
        name: a case name from :data:`CONFORMANCE_CASES` or an op name.

    Raises:
        AssertionError: the handler's result differs from the reference, or the
            op raised an error or a floating point warning (overflow, invalid
            value, division by zero) on these well-behaved inputs; the message
            names the case, the layout and the argument.
        KeyError: no case has that name.
    """
    cases = [c for c in CONFORMANCE_CASES if name in (c.name, c.op)]
    if not cases:
        raise KeyError(f"No conformance case or op named {name!r}")
    for case in cases:
        _run_case(case, handler)


def check_handler(handler):
    """Run every conformance case on ``handler``.

    Raises:
        AssertionError: listing every failing case with its message.
    """
    failures = []
    for case in CONFORMANCE_CASES:
        try:
            _run_case(case, handler)
        except AssertionError as error:  # report every failing op at once
            failures.append(str(error))
    if failures:
        raise AssertionError(
            f"{len(failures)} conformance case(s) failed for {handler!r}:\n" + "\n".join(failures)
        )


def _run_case(case, handler):
    try:
        with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
            case.run(handler)
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(
            f"{case.name} on {handler!r}: raised {type(error).__name__}: {error}"
        ) from error


# ------------------------------------------------------------------- helpers


def _tolerance(handler):
    eps = np.finfo(np.dtype(handler.dtype)).eps
    return 1000 * eps, 1000 * eps


def _rounded(value, handler):
    """``value`` as the handler will see it: rounded to its dtype, back in float64."""
    return np.asarray(value, dtype=np.float64).astype(handler.dtype).astype(np.float64)


def _assert_close(got, want, handler, what, exact=False):
    got = np.asarray(got, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape}, expected {want.shape}")
    rtol, atol = _tolerance(handler)
    ok = got == want if exact else np.isclose(got, want, rtol=rtol, atol=atol)
    if not np.all(ok):
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        error = np.max(np.abs(got - want)) if got.size else 0
        raise AssertionError(
            f"{what} differs from the float64 reference at {index}: got {float(got[index])!r}, "
            f"expected {float(want[index])!r} (max abs error {error:.3g}, "
            + ("exact match required)" if exact else f"rtol={rtol:.2g}, atol={atol:.2g})")
        )


def _last_axis_slice(ndim, start, stop):
    return (slice(None),) * (ndim - 1) + (slice(start, stop),)


def _strided_array(handler, value, rng):
    """A handler view holding ``value``: a slice of the last axis of a bigger array.

    Returns:
        (view, parent, parent values before use)
    """
    shape = value.shape
    parent = handler.create_from_numpy(rng.standard_normal(shape[:-1] + (shape[-1] + 3,)))
    view = parent[_last_axis_slice(len(shape), 1, 1 + shape[-1])]
    handler.set_from_numpy(view, value)
    return view, parent, handler.get_numpy_copy(parent)


def _assert_margins_kept(handler, parent, before, width, what):
    after = handler.get_numpy_copy(parent)
    for part in (_last_axis_slice(after.ndim, 0, 1), _last_axis_slice(after.ndim, 1 + width, None)):
        if not np.array_equal(after[part], before[part]):
            raise AssertionError(f"{what}: the op wrote outside the strided view")


def _assert_returns_none(result, what):
    if result is not None:
        raise AssertionError(f"{what}: returned {result!r}; ops write into arrays and return None")


def _seed(name):
    return zlib.crc32(name.encode())


# value generators: (rng, shape) -> float64 array


def _normal(rng, shape):
    return rng.standard_normal(shape)


def _scaled(factor):
    return lambda rng, shape: factor * rng.standard_normal(shape)


def _positive(rng, shape):
    return rng.uniform(0.5, 2.0, shape)


def _nonzero(rng, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)


def _with_zeros(rng, shape):
    values = rng.standard_normal(shape)
    values[rng.uniform(size=shape) < 0.25] = 0.0
    return values


def _with_extremes(scale):
    """``scale`` times normal numbers, and a few of magnitude 100 and 800 (overflow bait)."""

    def generate(rng, shape):
        values = scale * rng.standard_normal(shape)
        values.flat[:4] = [-800.0, -100.0, 100.0, 800.0]
        return values

    return generate


def _mask(rng, shape):
    return (rng.uniform(size=shape) < 0.5).astype(np.float64)


def _ids(k):
    return lambda rng, shape: rng.randint(0, k, shape).astype(np.float64)


@dataclass(frozen=True)
class _ArrayCase:
    """A case whose arguments are all handler arrays (plus fixed scalars in ``call``).

    Attributes:
        name: case name.
        arrays: argument name -> (shape, generator), in call order.
        call: ``call(handler, **arrays)`` runs the op.
        reference: ``reference(**float64 arrays)`` -> {written name: expected values}.
        prepare: optional, adjusts the generated float64 values (e.g. ``y = f(x)``).
        inplace: optional ``(output, input)``: also run with output being input.
        exact: names of outputs that must match exactly.
    """

    name: str
    arrays: dict
    call: Callable
    reference: Callable
    prepare: Callable | None = None
    inplace: tuple | None = None
    exact: tuple = ()

    def __call__(self, handler):
        layouts = ("contiguous", "strided") + (("inplace",) if self.inplace else ())
        for layout in layouts:
            self._run(handler, layout)

    def _run(self, handler, layout):
        rng = np.random.RandomState(_seed(self.name))
        values = {name: gen(rng, shape) for name, (shape, gen) in self.arrays.items()}
        if self.prepare is not None:
            self.prepare(values)
        values = {name: _rounded(v, handler) for name, v in values.items()}
        output, source = self.inplace if layout == "inplace" else (None, None)
        if layout == "inplace":
            values[output] = values[source].copy()
        written = self.reference(**{k: v.copy() for k, v in values.items()})
        expected = {**values, **written}
        if layout == "inplace":
            expected[source] = expected[output]

        arrays, parents = {}, {}
        for name, value in values.items():
            if layout == "inplace" and name == output:
                continue
            if layout == "strided":
                arrays[name], *parents[name] = _strided_array(handler, value, rng)
            else:
                arrays[name] = handler.create_from_numpy(value)
        if layout == "inplace":
            arrays[output] = arrays[source]

        what = f"{self.name} [{layout}] on {handler!r}"
        _assert_returns_none(self.call(handler, **arrays), what)
        for name, value in arrays.items():
            role = "output" if name in written or name == source else "input (read-only)"
            _assert_close(
                handler.get_numpy_copy(value),
                np.asarray(expected[name], dtype=np.float64),
                handler,
                f"{what}: {role} {name!r}",
                exact=name in self.exact,
            )
            if layout == "strided":
                parent, before = parents[name]
                _assert_margins_kept(
                    handler, parent, before, values[name].shape[-1], f"{what}: {name!r}"
                )


def _case(name, op, arrays, call, reference, **options):
    return OpCase(name, op, _ArrayCase(name, arrays, call, reference, **options))


# ---------------------------------------------- float64 references for images


def _padded(images, padding, value=0.0):
    n, h, w, c = images.shape
    result = np.full((n, h + 2 * padding, w + 2 * padding, c), value)
    result[:, padding : padding + h, padding : padding + w] = images
    return result


def _out_size(size, k, padding, s):
    return (size + 2 * padding - k) // s + 1


def reference_conv2d_forward(inputs, weights, bias, padding, stride):
    """Float64 NHWC convolution by a loop over output pixels; returns the outputs."""
    n, h, w, _ = inputs.shape
    f, kh, kw, _ = weights.shape
    (sh, sw) = stride
    ho, wo = _out_size(h, kh, padding, sh), _out_size(w, kw, padding, sw)
    padded = _padded(inputs, padding)
    outputs = np.empty((n, ho, wo, f))
    for y in range(ho):
        for x in range(wo):
            patch = padded[:, y * sh : y * sh + kh, x * sw : x * sw + kw, :]
            outputs[:, y, x, :] = np.tensordot(patch, weights, axes=([1, 2, 3], [1, 2, 3])) + bias
    return outputs


def reference_conv2d_backward(inputs, weights, padding, stride, out_deltas):
    """Float64 gradients of the convolution: ``(input deltas, weight deltas, bias deltas)``."""
    _, h, w, _ = inputs.shape
    _, kh, kw, _ = weights.shape
    _, ho, wo, _ = out_deltas.shape
    (sh, sw) = stride
    padded = _padded(inputs, padding)
    padded_deltas = np.zeros_like(padded)
    weight_deltas = np.zeros_like(weights)
    for y in range(ho):
        for x in range(wo):
            rows, cols = slice(y * sh, y * sh + kh), slice(x * sw, x * sw + kw)
            g = out_deltas[:, y, x, :]  # (N, F)
            weight_deltas += np.tensordot(g, padded[:, rows, cols, :], axes=([0], [0]))
            padded_deltas[:, rows, cols, :] += np.tensordot(g, weights, axes=([1], [0]))
    input_deltas = padded_deltas[:, padding : padding + h, padding : padding + w, :]
    return input_deltas, weight_deltas, out_deltas.sum(axis=(0, 1, 2))


def _window_pixels(y, x, h, w, window, padding, stride):
    """The (row, column) of every non-padding pixel of window (y, x), in window order."""
    top, left = y * stride[0] - padding, x * stride[1] - padding
    return [
        (r, c)
        for r in range(top, top + window[0])
        for c in range(left, left + window[1])
        if 0 <= r < h and 0 <= c < w
    ]


def reference_maxpool2d_forward(inputs, window, padding, stride):
    """Float64 max pooling by loops; returns ``(outputs, argmax)`` (argmax -1: empty window)."""
    n, h, w, c = inputs.shape
    ho, wo = (_out_size(s, k, padding, st) for s, k, st in zip((h, w), window, stride))
    outputs, argmax = np.zeros((n, ho, wo, c)), np.full((n, ho, wo, c), -1.0)
    for b, y, x, ch in itertools.product(range(n), range(ho), range(wo), range(c)):
        for r, col in _window_pixels(y, x, h, w, window, padding, stride):
            if argmax[b, y, x, ch] < 0 or inputs[b, r, col, ch] > outputs[b, y, x, ch]:
                outputs[b, y, x, ch] = inputs[b, r, col, ch]
                argmax[b, y, x, ch] = (r * w + col) * c + ch
    return outputs, argmax


def reference_maxpool2d_backward(inputs, argmax, out_deltas):
    """Float64 input deltas of max pooling: each output delta goes to its argmax pixel."""
    n, h, w, c = inputs.shape
    deltas = np.zeros_like(inputs)
    for b, y, x, ch in itertools.product(*map(range, out_deltas.shape)):
        index = int(argmax[b, y, x, ch])
        if index >= 0:
            r, rest = divmod(index, w * c)
            deltas[b, r, rest // c, rest % c] += out_deltas[b, y, x, ch]
    return deltas


def reference_avgpool2d_forward(inputs, window, padding, stride):
    """Float64 average pooling over the non-padding pixels of each window (0 if none)."""
    n, h, w, c = inputs.shape
    ho, wo = (_out_size(s, k, padding, st) for s, k, st in zip((h, w), window, stride))
    outputs = np.zeros((n, ho, wo, c))
    for y, x in itertools.product(range(ho), range(wo)):
        pixels = _window_pixels(y, x, h, w, window, padding, stride)
        for r, col in pixels:
            outputs[:, y, x, :] += inputs[:, r, col, :] / len(pixels)
    return outputs


def reference_avgpool2d_backward(inputs, window, padding, stride, out_deltas):
    """Float64 input deltas of average pooling."""
    _, h, w, _ = inputs.shape
    _, ho, wo, _ = out_deltas.shape
    deltas = np.zeros_like(inputs)
    for y, x in itertools.product(range(ho), range(wo)):
        pixels = _window_pixels(y, x, h, w, window, padding, stride)
        for r, col in pixels:
            deltas[:, r, col, :] += out_deltas[:, y, x, :] / len(pixels)
    return deltas


# ---------------------------------------------------------------- the cases


def _memory_cases():
    def run_allocation(op, check):
        def run(handler):
            for shape in [(3,), (2, 5), (2, 3, 4)]:
                what = f"{op}({shape}) on {handler!r}"
                mem = getattr(handler, op)(shape)
                if not isinstance(mem, handler.array_type):
                    raise AssertionError(f"{what}: returned {type(mem)}, not {handler.array_type}")
                values = handler.get_numpy_copy(mem)
                if values.shape != shape or values.dtype != np.dtype(handler.dtype):
                    raise AssertionError(f"{what}: got shape {values.shape}, dtype {values.dtype}")
                if check is not None:
                    _assert_close(values, np.full(shape, float(check)), handler, what, exact=True)

        return run

    def run_create_from_numpy(handler):
        rng = np.random.RandomState(1)
        base = rng.standard_normal((4, 6))
        sources = {
            "contiguous float64": base,
            "float32": base.astype(np.float32),
            "transposed": base.T,
            "strided": base[1:, ::2],
        }
        for label, source in sources.items():
            what = f"create_from_numpy({label}) on {handler!r}"
            mem = handler.create_from_numpy(source)
            if not isinstance(mem, handler.array_type):
                raise AssertionError(f"{what}: returned {type(mem)}, not {handler.array_type}")
            want = _rounded(source, handler)
            source[...] = 0  # the handler array must be a copy
            _assert_close(handler.get_numpy_copy(mem), want, handler, what, exact=True)
            source[...] = want

    def run_get_numpy_copy(handler):
        rng = np.random.RandomState(2)
        value = _rounded(rng.standard_normal((3, 5)), handler)
        view, _, _ = _strided_array(handler, value, rng)
        for label, mem in (("contiguous", handler.create_from_numpy(value)), ("strided", view)):
            what = f"get_numpy_copy [{label}] on {handler!r}"
            copy = handler.get_numpy_copy(mem)
            if not isinstance(copy, np.ndarray) or copy.dtype != np.dtype(handler.dtype):
                raise AssertionError(f"{what}: expected a numpy array of {handler.dtype}")
            _assert_close(copy, value, handler, what, exact=True)
            copy[...] = 0
            _assert_close(handler.get_numpy_copy(mem), value, handler, f"{what} (not a copy)")

    def run_set_from_numpy(handler):
        rng = np.random.RandomState(3)
        for label in ("contiguous", "strided"):
            what = f"set_from_numpy [{label}] on {handler!r}"
            value = rng.standard_normal((4, 3, 5))
            if label == "strided":
                mem, parent, before = _strided_array(handler, np.zeros(value.shape), rng)
            else:
                mem = handler.allocate(value.shape)
            _assert_returns_none(handler.set_from_numpy(mem, value), what)
            _assert_close(handler.get_numpy_copy(mem), _rounded(value, handler), handler, what)
            if label == "strided":
                _assert_margins_kept(handler, parent, before, 5, what)

    def run_is_fully_finite(handler):
        rng = np.random.RandomState(4)
        for label, special in itertools.product(
            ("contiguous", "strided"), (None, np.nan, np.inf, -np.inf)
        ):
            value = rng.standard_normal((3, 4))
            if special is not None:
                value[1, 2] = special
            if label == "strided":
                mem, parent, _ = _strided_array(handler, value, rng)
                # a NaN next to the view must not count
                handler.set_from_numpy(parent[_last_axis_slice(2, 0, 1)], np.full((3, 1), np.nan))
            else:
                mem = handler.create_from_numpy(value)
            result = handler.is_fully_finite(mem)
            if not isinstance(result, bool) or result != (special is None):
                raise AssertionError(
                    f"is_fully_finite [{label}] with {special} on {handler!r}: returned {result!r}"
                )

    shape = (4, 7)
    return [
        OpCase("allocate", "allocate", run_allocation("allocate", None)),
        OpCase("ones", "ones", run_allocation("ones", 1)),
        OpCase("zeros", "zeros", run_allocation("zeros", 0)),
        OpCase("create_from_numpy", "create_from_numpy", run_create_from_numpy),
        OpCase("get_numpy_copy", "get_numpy_copy", run_get_numpy_copy),
        OpCase("set_from_numpy", "set_from_numpy", run_set_from_numpy),
        OpCase("is_fully_finite", "is_fully_finite", run_is_fully_finite),
        _case(
            "copy_to",
            "copy_to",
            {"src": ((3, 4, 5), _normal), "dest": ((3, 4, 5), _normal)},
            lambda h, src, dest: h.copy_to(src, dest),
            lambda src, dest: {"dest": src},
        ),
        _case(
            "copy_to_if",
            "copy_to_if",
            {"src": (shape, _normal), "dest": (shape, _normal), "cond": (shape, _mask)},
            lambda h, src, dest, cond: h.copy_to_if(src, dest, cond),
            lambda src, dest, cond: {"dest": np.where(cond != 0, src, dest)},
        ),
        _case(
            "fill",
            "fill",
            {"mem": ((3, 4, 5), _normal)},
            lambda h, mem: h.fill(mem, -0.75),
            lambda mem: {"mem": np.full(mem.shape, -0.75)},
        ),
        _case(
            "fill_if",
            "fill_if",
            {"mem": (shape, _normal), "cond": (shape, _mask)},
            lambda h, mem, cond: h.fill_if(mem, 1.25, cond),
            lambda mem, cond: {"mem": np.where(cond != 0, 1.25, mem)},
        ),
    ]


def _elementwise_cases():
    cases = []
    unary = {
        "abs_t": (_normal, np.abs),
        "sign_t": (_with_zeros, np.sign),
        "log_t": (_positive, np.log),
        "sqrt_t": (_positive, np.sqrt),
    }
    for op, (gen, f) in unary.items():
        cases.append(
            _case(
                op,
                op,
                {"a": ((4, 7), gen), "out": ((4, 7), _normal)},
                lambda h, a, out, op=op: getattr(h, op)(a, out),
                lambda a, out, f=f: {"out": f(a)},
                inplace=("out", "a"),
            )
        )
    cases.append(
        _case(
            "clip_t",
            "clip_t",
            {"a": ((5, 3, 2), _normal), "out": ((5, 3, 2), _normal)},
            lambda h, a, out: h.clip_t(a, -0.5, 0.7, out),
            lambda a, out: {"out": np.clip(a, -0.5, 0.7)},
            inplace=("out", "a"),
        )
    )

    binary = {
        "add_tt": (_normal, lambda a, b, out: a + b),
        "subtract_tt": (_normal, lambda a, b, out: a - b),
        "mult_tt": (_normal, lambda a, b, out: a * b),
        "mult_add_tt": (_normal, lambda a, b, out: out + a * b),
        "divide_tt": (_nonzero, lambda a, b, out: a / b),
        "modulo_tt": (_nonzero, lambda a, b, out: np.fmod(a, b)),
    }
    shape = (3, 4, 5)
    for op, (gen_b, f) in binary.items():
        gen_a = _scaled(3.0) if op == "modulo_tt" else _normal
        cases.append(
            _case(
                op,
                op,
                {"a": (shape, gen_a), "b": (shape, gen_b), "out": (shape, _normal)},
                lambda h, a, b, out, op=op: getattr(h, op)(a, b, out),
                lambda a, b, out, f=f: {"out": f(a, b, out)},
                inplace=("out", "a"),
            )
        )
    cases.append(
        _case(
            "add_into_if",
            "add_into_if",
            {"a": (shape, _normal), "out": (shape, _normal), "cond": (shape, _mask)},
            lambda h, a, out, cond: h.add_into_if(a, out, cond),
            lambda a, out, cond: {"out": np.where(cond != 0, out + a, out)},
        )
    )

    with_scalar = {
        "add_st": (0.3, lambda s, t, out: t + s),
        "mult_st": (-1.7, lambda s, t, out: s * t),
        "mult_add_st": (0.6, lambda s, t, out: out + s * t),
    }
    for op, (s, f) in with_scalar.items():
        cases.append(
            _case(
                op,
                op,
                {"t": ((6, 5), _normal), "out": ((6, 5), _normal)},
                lambda h, t, out, op=op, s=s: getattr(h, op)(s, t, out),
                lambda t, out, f=f, s=s: {"out": f(s, t, out)},
                inplace=("out", "t"),
            )
        )
    return cases


def _matrix_vector_cases():
    cases = []
    ops = {
        "add_mv": (_normal, lambda m, v, out: m + v),
        "subtract_mv": (_normal, lambda m, v, out: m - v),
        "mult_mv": (_normal, lambda m, v, out: m * v),
        "mult_add_mv": (_normal, lambda m, v, out: out + m * v),
        "divide_mv": (_nonzero, lambda m, v, out: m / v),
    }
    rows, cols = 5, 7
    for op, (gen_v, f) in ops.items():
        kinds = {"row": (1, cols), "column": (rows, 1)}
        if op in ("mult_mv", "mult_add_mv"):
            kinds["full"] = (rows, cols)
        for kind, v_shape in kinds.items():
            cases.append(
                _case(
                    f"{op}[{kind}]",
                    op,
                    {
                        "m": ((rows, cols), _normal),
                        "v": (v_shape, gen_v),
                        "out": ((rows, cols), _normal),
                    },
                    lambda h, m, v, out, op=op: getattr(h, op)(m, v, out),
                    lambda m, v, out, f=f: {"out": f(m, v, out)},
                    inplace=("out", "m"),
                )
            )
    return cases


def _structure_cases():
    cases = []
    for a_shape, axis, out_shape in [
        ((3, 1, 5), 1, (3, 4, 5)),
        ((1, 5), 0, (6, 5)),
        ((4, 1), 1, (4, 7)),
    ]:
        cases.append(
            _case(
                f"broadcast_t[{a_shape}->{out_shape}]",
                "broadcast_t",
                {"a": (a_shape, _normal), "out": (out_shape, _normal)},
                lambda h, a, out, axis=axis: h.broadcast_t(a, axis, out),
                lambda a, out: {"out": np.broadcast_to(a, out.shape)},
            )
        )
    for lead, na, nb in [((2, 3), 4, 5), ((5,), 2, 3)]:
        a_shape, b_shape, whole = lead + (na,), lead + (nb,), lead + (na + nb,)
        cases.append(
            _case(
                f"merge_tt[{whole}]",
                "merge_tt",
                {"a": (a_shape, _normal), "b": (b_shape, _normal), "out": (whole, _normal)},
                lambda h, a, b, out: h.merge_tt(a, b, out),
                lambda a, b, out: {"out": np.concatenate([a, b], axis=-1)},
            )
        )
        cases.append(
            _case(
                f"split_add_tt[{whole}]",
                "split_add_tt",
                {"x": (whole, _normal), "out_a": (a_shape, _normal), "out_b": (b_shape, _normal)},
                lambda h, x, out_a, out_b: h.split_add_tt(x, out_a, out_b),
                lambda x, out_a, out_b: {
                    "out_a": out_a + x[..., : out_a.shape[-1]],
                    "out_b": out_b + x[..., out_a.shape[-1] :],
                },
            )
        )
    cases.append(
        _case(
            "binarize_v",
            "binarize_v",
            {"v": ((7, 1), _ids(4)), "out": ((7, 4), _normal)},
            lambda h, v, out: h.binarize_v(v, out),
            lambda v, out: {"out": (v == np.arange(out.shape[1])).astype(np.float64)},
        )
    )
    cases.append(
        _case(
            "index_m_by_v",
            "index_m_by_v",
            {"m": ((6, 5), _normal), "v": ((6, 1), _ids(5)), "out": ((6, 1), _normal)},
            lambda h, m, v, out: h.index_m_by_v(m, v, out),
            lambda m, v, out: {"out": np.array([[m[i, int(v[i, 0])]] for i in range(len(m))])},
        )
    )
    cases.append(
        _case(
            "index_rows_mv",
            "index_rows_mv",
            {"m": ((6, 5), _normal), "v": ((9, 1), _ids(6)), "out": ((9, 5), _normal)},
            lambda h, m, v, out: h.index_rows_mv(m, v, out),
            lambda m, v, out: {"out": np.array([m[int(v[i, 0])] for i in range(len(v))])},
        )
    )

    def scatter_add_rows(m, v, out):
        out = out.copy()
        for i in range(len(v)):  # ids repeat: every row accumulates
            out[int(v[i, 0])] += m[i]
        return {"out": out}

    cases.append(
        _case(
            "scatter_add_rows_mv",
            "scatter_add_rows_mv",
            {"m": ((9, 5), _normal), "v": ((9, 1), _ids(4)), "out": ((6, 5), _normal)},
            lambda h, m, v, out: h.scatter_add_rows_mv(m, v, out),
            scatter_add_rows,
        )
    )
    sums = [
        ((7,), 0, (1,)),
        ((7,), None, (1,)),
        ((5, 6), 0, (1, 6)),
        ((5, 6), 0, (6,)),
        ((5, 6), 1, (5, 1)),
        ((5, 6), -1, (5,)),
        ((5, 6), None, (1, 1)),
        ((3, 4, 5), 1, (3, 1, 5)),
        ((3, 4, 5), -1, (3, 4)),
        ((2, 3, 4, 5), 2, (2, 3, 5)),
        ((2, 3, 4, 5), None, (1,)),
    ]
    for a_shape, axis, out_shape in sums:
        cases.append(
            _case(
                f"sum_t[{a_shape}-axis={axis}->{out_shape}]",
                "sum_t",
                {"a": (a_shape, _normal), "out": (out_shape, _normal)},
                lambda h, a, out, axis=axis: h.sum_t(a, axis, out),
                lambda a, out, axis=axis: {"out": np.sum(a, axis=axis).reshape(out.shape)},
            )
        )
    return cases


def _dot_cases():
    cases = []
    m, k, n = 5, 7, 3
    for op, transa, transb in itertools.product(
        ("dot_mm", "dot_add_mm"), (False, True), (False, True)
    ):
        a_shape = (k, m) if transa else (m, k)
        b_shape = (n, k) if transb else (k, n)
        add = op == "dot_add_mm"
        cases.append(
            _case(
                f"{op}[transa={transa},transb={transb}]",
                op,
                {"a": (a_shape, _normal), "b": (b_shape, _normal), "out": ((m, n), _normal)},
                lambda h, a, b, out, op=op, ta=transa, tb=transb: getattr(h, op)(
                    a, b, out, transa=ta, transb=tb
                ),
                lambda a, b, out, ta=transa, tb=transb, add=add: {
                    "out": (out if add else 0) + (a.T if ta else a) @ (b.T if tb else b)
                },
            )
        )
    return cases


def _block_product_case(name, op, batch, k_widths, n_widths, transpose, in_session=False):
    """``dot_add_blocks`` with the blocks as separate arrays ``a0, a1, ..`` and
    ``out0, out1, ..`` and the matrix ``m`` prepared by ``prepare_matrix``."""
    k_total, n_total = sum(k_widths), sum(n_widths)
    arrays = {f"a{i}": ((batch, width), _normal) for i, width in enumerate(k_widths)}
    arrays["m"] = ((n_total, k_total) if transpose else (k_total, n_total), _normal)
    arrays.update({f"out{j}": ((batch, width), _normal) for j, width in enumerate(n_widths)})

    def call(h, m, **blocks):
        a_blocks = [blocks[f"a{i}"] for i in range(len(k_widths))]
        out_blocks = [blocks[f"out{j}"] for j in range(len(n_widths))]
        if in_session:
            with h.session():
                with h.session():  # sessions nest
                    h.dot_add_blocks(a_blocks, h.prepare_matrix(m, transpose), out_blocks)
        else:
            h.dot_add_blocks(a_blocks, h.prepare_matrix(m, transpose), out_blocks)

    def reference(m, **blocks):
        a = np.concatenate([blocks[f"a{i}"] for i in range(len(k_widths))], axis=1)
        out = np.concatenate([blocks[f"out{j}"] for j in range(len(n_widths))], axis=1)
        out = out + a @ (m.T if transpose else m)
        bounds = np.cumsum([0, *n_widths])
        return {f"out{j}": out[:, bounds[j] : bounds[j + 1]] for j in range(len(n_widths))}

    return _case(name, op, arrays, call, reference)


def _block_product_cases():
    return [
        _block_product_case("prepare_matrix[transposed]", "prepare_matrix", 5, [7], [4, 6], True),
        _block_product_case("prepare_matrix[plain]", "prepare_matrix", 3, [4, 5], [6], False),
        _block_product_case("dot_add_blocks[one-row]", "dot_add_blocks", 1, [3], [1, 2], False),
        _block_product_case(
            "dot_add_blocks[three-by-two]", "dot_add_blocks", 6, [7, 1, 4], [5, 9], True
        ),
        # large enough to be split between threads where a handler does that
        _block_product_case(
            "session[dot_add_blocks]", "session", 37, [100, 29], [300, 211], True, True
        ),
        _case(
            "session[dot_mm]",
            "session",
            {"a": ((200, 150), _normal), "b": ((150, 400), _normal), "out": ((200, 400), _normal)},
            _dot_in_session,
            lambda a, b, out: {"out": out + 2 * (a @ b)},
        ),
    ]


def _deferred_products(h, a, b, out0, out1, out2, in_session):
    """Two jobs in one lane and one in another, and a product of the caller's meanwhile."""

    def work():
        h.defer(lambda: h.dot_add_mm(a, b, out0), lane="first")
        h.defer(lambda: h.dot_add_mm(a, b, out1), lane="second")
        h.defer(lambda: h.dot_add_mm(a, b, out0), lane="first")
        h.dot_add_mm(a, b, out2)  # (split between threads where a handler does that)
        h.finish_deferred()

    if in_session:
        with h.session():
            work()
    else:
        work()


def _deferred_cases():
    arrays = {
        "a": ((200, 150), _normal),
        "b": ((150, 400), _normal),
        **{f"out{i}": ((200, 400), _normal) for i in range(3)},
    }
    return [
        _case(
            f"{op}[{where}]",
            op,
            arrays,
            lambda h, a, b, out0, out1, out2, s=in_session: _deferred_products(
                h, a, b, out0, out1, out2, s
            ),
            lambda a, b, out0, out1, out2: {
                "out0": out0 + 2 * (a @ b),
                "out1": out1 + a @ b,
                "out2": out2 + a @ b,
            },
        )
        for op, where, in_session in (
            ("defer", "in a session", True),
            ("finish_deferred", "without a session", False),
        )
    ]


def _dot_in_session(h, a, b, out):
    with h.session():
        h.dot_add_mm(a, b, out)
        with h.session():  # sessions nest
            h.dot_add_mm(a, b, out)


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(x / 2))  # = 1 / (1 + exp(-x)), without overflow


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _activation_cases():
    # name: (inputs, y = f(x), f'(x) from y)
    table = {
        "sigmoid": (_with_extremes(10.0), _sigmoid, lambda y: y * (1 - y)),
        "tanh": (_with_extremes(3.0), np.tanh, lambda y: 1 - y**2),
        "rel": (_with_zeros, lambda x: np.maximum(x, 0), lambda y: (y > 0).astype(float)),
        "el": (_with_extremes(3.0), _elu, lambda y: np.minimum(y + 1, 1)),
    }
    shape = (5, 7)
    cases = []
    for name, (gen, f, deriv) in table.items():
        cases.append(
            _case(
                name,
                name,
                {"x": (shape, gen), "y": (shape, _normal)},
                lambda h, x, y, op=name: getattr(h, op)(x, y),
                lambda x, y, f=f: {"y": f(x)},
                inplace=("y", "x"),
            )
        )

        def set_y(values, f=f):
            values["y"] = f(values["x"])

        cases.append(
            _case(
                f"{name}_deriv",
                f"{name}_deriv",
                {
                    "x": (shape, gen),
                    "y": (shape, _normal),
                    "dy": (shape, _normal),
                    "dx": (shape, _normal),
                },
                lambda h, x, y, dy, dx, op=f"{name}_deriv": getattr(h, op)(x, y, dy, dx),
                lambda x, y, dy, dx, deriv=deriv: {"dx": dy * deriv(y)},
                prepare=set_y,
                inplace=("dx", "dy"),
            )
        )

    def far_apart_rows(values):
        values["m"] += 400 * np.arange(len(values["m"]))[:, None] - 800

    def softmax(m, out):
        e = np.exp(m - m.max(axis=1, keepdims=True))
        return {"out": e / e.sum(axis=1, keepdims=True)}

    cases.append(
        _case(
            "softmax_m",
            "softmax_m",
            {"m": ((6, 5), _scaled(30.0)), "out": ((6, 5), _normal)},
            lambda h, m, out: h.softmax_m(m, out),
            softmax,
            prepare=far_apart_rows,
            inplace=("out", "m"),
        )
    )
    return cases


#: (N, H, W, C, F, kh, kw, padding, stride): odd sizes, stride 2, padding,
#: 1x1 kernels, a kernel larger than the image, a single image
CONV_CONFIGS = [
    (2, 5, 6, 3, 4, 3, 3, 1, (1, 1)),
    (1, 7, 7, 2, 3, 3, 3, 0, (2, 2)),
    (3, 5, 4, 2, 2, 1, 1, 0, (1, 1)),
    (2, 6, 5, 3, 2, 4, 3, 2, (2, 3)),
    (2, 3, 3, 2, 3, 5, 5, 2, (1, 1)),
]

#: (N, H, W, C, window, padding, stride): also windows larger than the stride
#: and windows made of padding only
POOL_CONFIGS = [
    (2, 6, 5, 3, (2, 2), 0, (2, 2)),
    (2, 7, 6, 2, (3, 3), 1, (2, 2)),
    (1, 5, 7, 3, (3, 2), 1, (1, 2)),
    (2, 4, 5, 2, (1, 1), 0, (1, 1)),
    (1, 3, 4, 2, (2, 2), 2, (1, 1)),
    (2, 5, 5, 1, (4, 4), 1, (3, 3)),
]


def _conv_cases(n, height, width, c, f, kh, kw, padding, stride):
    ho, wo = _out_size(height, kh, padding, stride[0]), _out_size(width, kw, padding, stride[1])
    label = f"[{n}x{height}x{width}x{c}-{f}x{kh}x{kw}-pad{padding}-stride{stride[0]}{stride[1]}]"
    images, filters, outputs = (n, height, width, c), (f, kh, kw, c), (n, ho, wo, f)

    def forward(h, inputs, weights, bias, outputs):
        return h.conv2d_forward_batch(inputs, weights, bias, outputs, padding, stride)

    def forward_reference(inputs, weights, bias, outputs):
        return {"outputs": reference_conv2d_forward(inputs, weights, bias, padding, stride)}

    def backward(h, inputs, weights, in_deltas, out_deltas, weight_deltas, bias_deltas):
        return h.conv2d_backward_batch(
            inputs, weights, padding, stride, in_deltas, out_deltas, weight_deltas, bias_deltas
        )

    def backward_reference(inputs, weights, in_deltas, out_deltas, weight_deltas, bias_deltas):
        d_in, d_w, d_b = reference_conv2d_backward(inputs, weights, padding, stride, out_deltas)
        return {"in_deltas": in_deltas + d_in, "weight_deltas": d_w, "bias_deltas": d_b}

    def backward_without_in_deltas(h, inputs, weights, out_deltas, weight_deltas, bias_deltas):
        return h.conv2d_backward_batch(
            inputs, weights, padding, stride, None, out_deltas, weight_deltas, bias_deltas
        )

    def backward_without_in_deltas_reference(
        inputs, weights, out_deltas, weight_deltas, bias_deltas
    ):
        _, d_w, d_b = reference_conv2d_backward(inputs, weights, padding, stride, out_deltas)
        return {"weight_deltas": d_w, "bias_deltas": d_b}

    forward_arrays = {
        "inputs": (images, _normal),
        "weights": (filters, _normal),
        "bias": ((f,), _normal),
        "outputs": (outputs, _normal),
    }
    backward_arrays = {
        "inputs": (images, _normal),
        "weights": (filters, _normal),
        "in_deltas": (images, _normal),
        "out_deltas": (outputs, _normal),
        "weight_deltas": (filters, _normal),
        "bias_deltas": ((f,), _normal),
    }
    return [
        _case(
            f"conv2d_forward_batch{label}",
            "conv2d_forward_batch",
            forward_arrays,
            forward,
            forward_reference,
        ),
        _case(
            f"conv2d_backward_batch{label}",
            "conv2d_backward_batch",
            backward_arrays,
            backward,
            backward_reference,
        ),
        _case(  # in_deltas None: the input deltas are not computed
            f"conv2d_backward_batch_no_in_deltas{label}",
            "conv2d_backward_batch",
            {k: v for k, v in backward_arrays.items() if k != "in_deltas"},
            backward_without_in_deltas,
            backward_without_in_deltas_reference,
        ),
    ]


def _pool_cases(n, height, width, c, window, padding, stride):
    ho = _out_size(height, window[0], padding, stride[0])
    wo = _out_size(width, window[1], padding, stride[1])
    label = (
        f"[{n}x{height}x{width}x{c}-window{window[0]}{window[1]}"
        f"-pad{padding}-stride{stride[0]}{stride[1]}]"
    )
    images, pooled = (n, height, width, c), (n, ho, wo, c)

    def max_forward(h, inputs, outputs, argmax):
        return h.maxpool2d_forward_batch(inputs, window, outputs, padding, stride, argmax)

    def max_forward_reference(inputs, outputs, argmax):
        outputs, argmax = reference_maxpool2d_forward(inputs, window, padding, stride)
        return {"outputs": outputs, "argmax": argmax}

    def max_forward_results(values):  # the backward pass gets what the forward pass wrote
        values.update(max_forward_reference(values["inputs"], None, None))

    def max_backward(h, inputs, outputs, argmax, in_deltas, out_deltas):
        return h.maxpool2d_backward_batch(
            inputs, window, outputs, padding, stride, argmax, in_deltas, out_deltas
        )

    def max_backward_reference(inputs, outputs, argmax, in_deltas, out_deltas):
        return {"in_deltas": in_deltas + reference_maxpool2d_backward(inputs, argmax, out_deltas)}

    def avg_forward(h, inputs, outputs):
        return h.avgpool2d_forward_batch(inputs, window, outputs, padding, stride)

    def avg_forward_reference(inputs, outputs):
        return {"outputs": reference_avgpool2d_forward(inputs, window, padding, stride)}

    def avg_forward_results(values):
        values.update(avg_forward_reference(values["inputs"], None))

    def avg_backward(h, inputs, outputs, in_deltas, out_deltas):
        return h.avgpool2d_backward_batch(
            inputs, window, outputs, padding, stride, in_deltas, out_deltas
        )

    def avg_backward_reference(inputs, outputs, in_deltas, out_deltas):
        deltas = reference_avgpool2d_backward(inputs, window, padding, stride, out_deltas)
        return {"in_deltas": in_deltas + deltas}

    inputs, outputs = {"inputs": (images, _normal)}, {"outputs": (pooled, _normal)}
    argmax = {"argmax": (pooled, _normal)}
    deltas = {"in_deltas": (images, _normal), "out_deltas": (pooled, _normal)}
    return [
        _case(
            f"maxpool2d_forward_batch{label}",
            "maxpool2d_forward_batch",
            {**inputs, **outputs, **argmax},
            max_forward,
            max_forward_reference,
            exact=("argmax",),
        ),
        _case(
            f"maxpool2d_backward_batch{label}",
            "maxpool2d_backward_batch",
            {**inputs, **outputs, **argmax, **deltas},
            max_backward,
            max_backward_reference,
            prepare=max_forward_results,
        ),
        _case(
            f"avgpool2d_forward_batch{label}",
            "avgpool2d_forward_batch",
            {**inputs, **outputs},
            avg_forward,
            avg_forward_reference,
        ),
        _case(
            f"avgpool2d_backward_batch{label}",
            "avgpool2d_backward_batch",
            {**inputs, **outputs, **deltas},
            avg_backward,
            avg_backward_reference,
            prepare=avg_forward_results,
        ),
    ]


def _image_cases():
    cases = []
    for config in CONV_CONFIGS:
        cases += _conv_cases(*config)
    for config in POOL_CONFIGS:
        cases += _pool_cases(*config)
    return cases


def _random_cases():
    shape = (200, 61)

    def arrays(handler, layout, rng):
        if layout == "strided":
            return _strided_array(handler, np.zeros(shape), rng)
        return handler.allocate(shape), None, None

    def run_fill_gaussian(handler):
        rng = np.random.RandomState(5)
        for layout in ("contiguous", "strided"):
            what = f"fill_gaussian [{layout}] on {handler!r}"
            out, parent, before = arrays(handler, layout, rng)
            _assert_returns_none(handler.fill_gaussian(1.5, 2.0, out), what)
            first = handler.get_numpy_copy(out)
            handler.fill_gaussian(1.5, 2.0, out)
            second = handler.get_numpy_copy(out)
            if not (np.all(np.isfinite(first)) and abs(first.mean() - 1.5) < 0.15):
                raise AssertionError(f"{what}: mean {first.mean():.3f}, expected 1.5")
            if abs(first.std() - 2.0) >= 0.15:
                raise AssertionError(f"{what}: std {first.std():.3f}, expected 2.0")
            if np.array_equal(first, second):
                raise AssertionError(f"{what}: two calls gave the same numbers")
            if parent is not None:
                _assert_margins_kept(handler, parent, before, shape[-1], what)

    def run_probability_mask(handler):
        rng = np.random.RandomState(6)
        for layout, p in itertools.product(("contiguous", "strided"), (0.3, 0.0, 1.0)):
            what = f"generate_probability_mask(p={p}) [{layout}] on {handler!r}"
            mask, parent, before = arrays(handler, layout, rng)
            _assert_returns_none(handler.generate_probability_mask(mask, p), what)
            values = handler.get_numpy_copy(mask)
            if not np.all((values == 0) | (values == 1)):
                raise AssertionError(f"{what}: values other than 0 and 1")
            if abs(values.mean() - p) > 0.05:
                raise AssertionError(f"{what}: {values.mean():.3f} of the values are 1")
            if parent is not None:
                _assert_margins_kept(handler, parent, before, shape[-1], what)

    return [
        OpCase("fill_gaussian", "fill_gaussian", run_fill_gaussian),
        OpCase("generate_probability_mask", "generate_probability_mask", run_probability_mask),
    ]


#: Every conformance case, in op-table order.
CONFORMANCE_CASES = (
    _memory_cases()
    + _elementwise_cases()
    + _matrix_vector_cases()
    + _structure_cases()
    + _dot_cases()
    + _block_product_cases()
    + _deferred_cases()
    + _activation_cases()
    + _image_cases()
    + _random_cases()
)
