"""Every handler op of every core handler against the float64 reference, and the suite itself."""

import numpy as np
import pytest

from brainstorm.handlers import DebugHandler, Handler, NumpyHandler, _blas
from brainstorm.testing.handler_conformance import (
    CONFORMANCE_CASES,
    check_handler,
    check_op,
    handler_ops,
)

HANDLERS = {
    "numpy-float32": lambda: NumpyHandler(np.float32),
    "numpy-float64": lambda: NumpyHandler(np.float64),
    "debug-numpy-float64": lambda: DebugHandler(NumpyHandler(np.float64)),
    # the plain NumPy code paths, as where NumPy's own BLAS cannot be found
    "numpy-float32-without-blas": lambda: NumpyHandler(np.float32),
}


@pytest.mark.parametrize("case", [c.name for c in CONFORMANCE_CASES])
@pytest.mark.parametrize("handler", list(HANDLERS))
def test_conformance(handler, case, monkeypatch):
    if handler.endswith("-without-blas"):
        _blas.available()  # loaded first, so that nothing reloads it
        monkeypatch.setitem(_blas._state, "gemm", {})
        monkeypatch.setitem(_blas._state, "axpy", {})
    check_op(HANDLERS[handler](), case)


def test_every_op_of_the_base_handler_has_a_case():
    covered = {case.op for case in CONFORMANCE_CASES}
    missing = sorted(set(handler_ops()) - covered)
    assert not missing, f"ops without a conformance case: {missing}"
    assert "mult_add_mv" in handler_ops() and "el_deriv" in handler_ops()


def test_cases_have_unique_names_and_name_real_ops():
    names = [case.name for case in CONFORMANCE_CASES]
    assert len(names) == len(set(names))
    assert {case.op for case in CONFORMANCE_CASES} <= set(handler_ops())


def test_the_debug_handler_checks_every_op():
    not_wrapped = [op for op in handler_ops() if op not in vars(DebugHandler)]
    assert not not_wrapped


def test_check_op_accepts_an_op_name_and_rejects_unknown_names():
    check_op(NumpyHandler(np.float64), "add_mv")  # every add_mv case
    with pytest.raises(KeyError, match="no_such_op"):
        check_op(NumpyHandler(), "no_such_op")


# --- the suite catches broken handlers -------------------------------------


class RebindingHandler(NumpyHandler):
    def add_tt(self, a, b, out):
        out = a + b  # noqa: F841 - the bug under test: the result never reaches out


class ContiguousOnlyHandler(NumpyHandler):
    def mult_tt(self, a, b, out):
        np.multiply(a, b, out=np.ascontiguousarray(out))  # lost for strided outs


class SpillingHandler(NumpyHandler):
    def fill(self, mem, val):
        (mem.base if mem.base is not None else mem).fill(val)  # writes beside the view


class OverwritingHandler(NumpyHandler):
    def split_add_tt(self, x, out_a, out_b):
        n = out_a.shape[-1]
        out_a[...] = x[..., :n]  # must add, not overwrite
        out_b[...] = x[..., n:]


class ReturningHandler(NumpyHandler):
    def abs_t(self, a, out):
        np.abs(a, out=out)
        return out


class OverflowingHandler(NumpyHandler):
    def sigmoid(self, x, y):
        y[...] = 1 / (1 + np.exp(-x))


class StridedDotHandler(NumpyHandler):
    def dot_mm(self, a, b, out, transa=False, transb=False):
        np.dot(a.T if transa else a, b.T if transb else b, out=out)


class OffByOneConvHandler(NumpyHandler):
    def conv2d_forward_batch(self, inputs, weights, bias, outputs, padding, stride):
        super().conv2d_forward_batch(inputs, weights, bias, outputs, padding, stride)
        outputs += 1e-2


@pytest.mark.parametrize(
    "handler_class, op, message",
    [
        (RebindingHandler, "add_tt", "output 'out' differs"),
        (ContiguousOnlyHandler, "mult_tt", r"mult_tt \[strided\]"),
        (SpillingHandler, "fill", "wrote outside the strided view"),
        (OverwritingHandler, "split_add_tt", "output 'out_a' differs"),
        (ReturningHandler, "abs_t", "return None"),
        (OverflowingHandler, "sigmoid", "overflow"),
        (StridedDotHandler, "dot_mm", "raised ValueError"),
        (OffByOneConvHandler, "conv2d_forward_batch", "output 'outputs' differs"),
    ],
)
def test_the_suite_catches_broken_ops(handler_class, op, message):
    with pytest.raises(AssertionError, match=message):
        check_op(handler_class(np.float32), op)


def test_check_handler_lists_every_failing_case():
    with pytest.raises(AssertionError) as info:
        check_handler(RebindingHandler(np.float64))
    assert "1 conformance case(s) failed" in str(info.value)
    assert "add_tt [contiguous]" in str(info.value)


def test_a_bare_handler_fails_with_not_implemented():
    with pytest.raises(AssertionError, match="NotImplementedError: Handler does not implement"):
        check_op(Handler(), "allocate")
