"""brainstorm.testing.check_layer catches broken layers and passes correct ones."""

from collections import OrderedDict

import pytest
from core_test_layers import Accumulate, Scale

from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.testing import check_layer


def Leaky(name=None, bug=None):
    """y_t = x_t + w * y_{t-1}, with optional deliberate bugs."""
    return ConstructionWrapper.create(LeakyLayerImpl, name=name, bug=bug)


class LeakyLayerImpl(Layer):
    expected_inputs = {"default": StructureTemplate("T", "B", "F")}
    expected_kwargs = {"bug"}

    def setup(self, kwargs, in_shapes):
        (self.F,) = in_shapes["default"].feature_shape
        return (
            OrderedDict(default=BufferStructure("T", "B", self.F, context_size=1)),
            OrderedDict(w=BufferStructure(self.F)),
            OrderedDict(
                tmp=BufferStructure("B", self.F, is_backward_only=True),
                acc=BufferStructure(self.F, is_backward_only=True),
            ),
        )

    def forward_pass(self, buffers, training_pass=True):
        x, y, w = buffers.inputs.default, buffers.outputs.default, buffers.parameters.w
        for t in range(x.shape[0]):
            self.handler.mult_mv(y[t - 1], w.reshape((1, self.F)), y[t])
            self.handler.add_tt(y[t], x[t], y[t])
        if self.kwargs["bug"] == "clobber":
            self.handler.fill(x, 0.0)

    def backward_pass(self, buffers):
        h, bug = self.handler, self.kwargs["bug"]
        y, dy = buffers.outputs.default, buffers.output_deltas.default
        dx = buffers.input_deltas.default
        w = buffers.parameters.w.reshape((1, self.F))
        dw = buffers.gradients.w.reshape((1, self.F))
        acc = buffers.internals.acc.reshape((1, self.F))
        tmp = buffers.internals.tmp
        T = dx.shape[0]
        for t in reversed(range(T)):
            if t + 1 < T:
                h.mult_add_mv(dy[t + 1], w, dy[t])
            if bug == "overwrite":
                h.copy_to(dy[t], dx[t])
            else:
                h.add_tt(dx[t], dy[t], dx[t])
            if t == 0 and bug == "context":
                continue  # drops the t=0 term from the context (reference bug 11.2 #2)
            h.mult_tt(dy[t], y[t - 1], tmp)
            h.sum_t(tmp, 0, acc)
            h.add_tt(dw, acc, dw)


def test_correct_layers_pass():
    check_layer(Leaky(), {"default": (3,)}, time_steps=4, batch_size=2)
    check_layer(Accumulate(), {"default": (2,)}, time_steps=3, batch_size=2)
    check_layer(Scale(), {"default": (4,)}, time_steps=2, batch_size=3)


@pytest.mark.parametrize(
    "bug, message",
    [
        ("context", "gradient of 'w' with a context"),
        ("clobber", "changed its input 'default'"),
        ("overwrite", "must ADD into input deltas"),
    ],
)
def test_broken_layers_fail(bug, message):
    with pytest.raises(AssertionError, match=message):
        check_layer(Leaky(bug=bug), {"default": (3,)}, time_steps=4, batch_size=2)


def _scale_claiming_overwrite(adds):
    """Scale that claims ``overwrites_gradients``; with ``adds`` it wrongly adds instead."""
    from core_test_layers import ScaleLayerImpl

    class OverwritingScaleLayerImpl(ScaleLayerImpl):
        overwrites_gradients = True

        def backward_pass(self, buffers):
            if not adds:
                return super().backward_pass(buffers)
            grad = buffers.gradients.w
            before = self.handler.allocate(grad.shape)
            self.handler.copy_to(grad, before)
            super().backward_pass(buffers)
            self.handler.add_tt(grad, before, grad)  # keeps what was there: a false claim

    return ConstructionWrapper.create(OverwritingScaleLayerImpl)


def test_the_garbage_check_verifies_a_claim_to_overwrite_gradients():
    check_layer(_scale_claiming_overwrite(adds=False), {"default": (4,)}, time_steps=2)
    with pytest.raises(AssertionError, match="gradients of 'w' depend"):
        check_layer(_scale_claiming_overwrite(adds=True), {"default": (4,)}, time_steps=2)


def _leaky_claiming_overwritten_internals(writes_first):
    """Leaky that claims to overwrite a backward-only internal ``scratch``;
    unless ``writes_first`` it reads it before writing: a false claim."""

    class ScratchLeakyLayerImpl(LeakyLayerImpl):
        overwrites_backward_internals = ("scratch",)

        def setup(self, kwargs, in_shapes):
            outputs, parameters, internals = super().setup(kwargs, in_shapes)
            internals["scratch"] = BufferStructure("T", "B", self.F, is_backward_only=True)
            return outputs, parameters, internals

        def backward_pass(self, buffers):
            scratch = buffers.internals.scratch
            dy = buffers.output_deltas.default[: scratch.shape[0]]
            if writes_first:
                self.handler.copy_to(dy, scratch)
            else:  # adds to whatever was there
                self.handler.add_tt(scratch, dy, scratch)
            self.handler.copy_to(scratch, dy)
            super().backward_pass(buffers)

    return ConstructionWrapper.create(ScratchLeakyLayerImpl, bug=None)


def test_the_garbage_check_verifies_a_claim_to_overwrite_backward_internals():
    check_layer(_leaky_claiming_overwritten_internals(True), {"default": (3,)}, time_steps=3)
    with pytest.raises(AssertionError, match="depend on what was in the buffers"):
        check_layer(
            _leaky_claiming_overwritten_internals(False),
            {"default": (3,)},
            time_steps=3,
            checks=("garbage",),
        )
