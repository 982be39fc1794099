"""The BatchNorm layer: batch normalisation over every axis but the last."""

from __future__ import annotations

from collections import OrderedDict

from brainstorm.layers._layer_checks import check_number, layer_label
from brainstorm.layers.base_layer import Layer
from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import flatten_all_but_last

__all__ = ["BatchNorm", "BatchNormLayerImpl"]


def BatchNorm(name=None, decay=0.9, epsilon=1.0e-5):
    """Create a batch normalisation layer.

    Every feature of the last (right-most) axis is normalised over all other
    axes (time, batch and, for NHWC images, height and width), then scaled by
    ``gamma`` and shifted by ``beta``: ``y = gamma * (x - mean) / sqrt(var +
    epsilon) + beta``.

    A training pass uses the statistics of the current batch (variance with
    ``1/m``) and updates the running mean and variance, the layer's states
    ``mean`` and ``var``, as exponential moving averages:
    ``running = decay * running + (1 - decay) * batch``. Any other pass uses
    the running statistics. The running statistics are not parameters: steppers,
    initializers and modifiers never touch them (in the reference they were
    parameters, stored a negative mean and averaged the standard deviation).

    Args:
        name: the layer's name (default ``'BatchNorm'``).
        decay: the weight of the old running statistics, in ``[0, 1]``.
        epsilon: added to the variance before taking the square root.

    Returns:
        ConstructionWrapper: the layer, ready for wiring with ``>>``.

    Example:
        >>> bn = BatchNorm(decay=0.95)
    """
    _check_kwargs(decay, epsilon, layer_label(name, "BatchNorm"))
    return ConstructionWrapper.create(BatchNormLayerImpl, name=name, decay=decay, epsilon=epsilon)


def _check_kwargs(decay, epsilon, label):
    return (
        check_number(decay, "decay", label, low=0.0, high=1.0),
        check_number(epsilon, "epsilon", label, low=0.0),
    )


class BatchNormLayerImpl(Layer):
    """Implementation of :func:`BatchNorm`.

    Parameters ``gamma`` and ``beta``, states ``mean`` and ``var`` (all of
    shape ``(C,)``, C = the last input dimension). Internals: ``batch_mean``,
    ``std`` (the standard deviation used by the last forward pass),
    ``centered``, ``x_hat``, and the backward-only ``scale`` and ``tmp``.
    """

    expected_inputs = {"default": StructureTemplate("T", "B", "...")}
    expected_kwargs = {"decay", "epsilon"}

    def setup(self, kwargs, in_shapes):
        label = layer_label(self.name, self.type_name)
        self.decay, self.epsilon = _check_kwargs(
            kwargs.get("decay", 0.9), kwargs.get("epsilon", 1.0e-5), label
        )
        # Which statistics the last forward pass used: the backward pass differs.
        self._used_batch_statistics = True
        in_shape = in_shapes["default"]
        shape = in_shape.shape
        channels = in_shape.feature_shape[-1]

        outputs = OrderedDict(default=BufferStructure(*shape))

        parameters = OrderedDict()
        parameters["gamma"] = BufferStructure(channels)
        parameters["beta"] = BufferStructure(channels)

        internals = OrderedDict()
        internals["batch_mean"] = BufferStructure(channels)
        internals["std"] = BufferStructure(channels)
        internals["centered"] = BufferStructure(*shape)
        internals["x_hat"] = BufferStructure(*shape)
        internals["scale"] = BufferStructure(channels, is_backward_only=True)
        internals["tmp"] = BufferStructure(*shape, is_backward_only=True)
        return outputs, parameters, internals

    def setup_states(self, kwargs, in_shapes):
        channels = in_shapes["default"].feature_shape[-1]
        states = OrderedDict()
        states["mean"] = BufferStructure(channels)
        states["var"] = BufferStructure(channels)
        return states

    def initialize_states(self, states):
        self.handler.fill(states.mean, 0.0)
        self.handler.fill(states.var, 1.0)

    def forward_pass(self, buffers, training_pass=True):
        _h = self.handler
        gamma, beta = buffers.parameters.gamma, buffers.parameters.beta
        running_mean, running_var = buffers.states.mean, buffers.states.var
        batch_mean, std = buffers.internals.batch_mean, buffers.internals.std
        x = flatten_all_but_last(buffers.inputs.default)
        y = flatten_all_but_last(buffers.outputs.default)
        centered = flatten_all_but_last(buffers.internals.centered)
        x_hat = flatten_all_but_last(buffers.internals.x_hat)
        m, c = x.shape

        if training_pass:
            _h.sum_t(x, axis=0, out=batch_mean)
            _h.mult_st(1.0 / m, batch_mean, batch_mean)
            _h.subtract_mv(x, batch_mean.reshape((1, c)), centered)
            batch_var = std  # holds the variance until the square root below
            _h.mult_tt(centered, centered, x_hat)  # x_hat as scratch space
            _h.sum_t(x_hat, axis=0, out=batch_var)
            _h.mult_st(1.0 / m, batch_var, batch_var)
            _h.mult_st(self.decay, running_mean, running_mean)
            _h.mult_add_st(1.0 - self.decay, batch_mean, running_mean)
            _h.mult_st(self.decay, running_var, running_var)
            _h.mult_add_st(1.0 - self.decay, batch_var, running_var)
            _h.add_st(self.epsilon, batch_var, std)
        else:
            _h.subtract_mv(x, running_mean.reshape((1, c)), centered)
            _h.add_st(self.epsilon, running_var, std)
        _h.sqrt_t(std, std)
        self._used_batch_statistics = bool(training_pass)

        _h.divide_mv(centered, std.reshape((1, c)), x_hat)
        _h.mult_mv(x_hat, gamma.reshape((1, c)), y)
        _h.add_mv(y, beta.reshape((1, c)), y)

    def backward_pass(self, buffers):
        _h = self.handler
        gamma, std = buffers.parameters.gamma, buffers.internals.std
        dgamma, dbeta = buffers.gradients.gamma, buffers.gradients.beta
        scale = buffers.internals.scale
        x_hat = flatten_all_but_last(buffers.internals.x_hat)
        tmp = flatten_all_but_last(buffers.internals.tmp)
        dy = flatten_all_but_last(buffers.output_deltas.default)
        dx = flatten_all_but_last(buffers.input_deltas.default)
        m, c = dy.shape

        _h.mult_tt(dy, x_hat, tmp)
        _h.sum_t(tmp, axis=0, out=dgamma)
        _h.sum_t(dy, axis=0, out=dbeta)
        _h.divide_tt(gamma, std, scale)

        if self._used_batch_statistics:
            # dx = gamma / std * (dy - mean(dy) - x_hat * mean(dy * x_hat))
            _h.mult_mv(x_hat, dgamma.reshape((1, c)), tmp)
            _h.add_mv(tmp, dbeta.reshape((1, c)), tmp)
            _h.mult_st(-1.0 / m, tmp, tmp)
            _h.add_tt(dy, tmp, tmp)
            _h.mult_add_mv(tmp, scale.reshape((1, c)), dx)
        else:
            # fixed statistics: the layer is an affine map per feature
            _h.mult_add_mv(dy, scale.reshape((1, c)), dx)
