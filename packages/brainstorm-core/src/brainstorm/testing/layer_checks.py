"""Generic checks for any layer, ours or a plug-in's.

One call, :func:`check_layer`, builds a tiny network around a layer (an Input
feeding it) on ``DebugHandler(NumpyHandler(float64))`` and checks:

* ``deltas``: input deltas against central finite differences of the
  objective ``L = sum_k <output_k, R_k>`` with fixed random ``R_k``;
* ``gradients``: parameter gradients the same way;
* ``adds_deltas``: the backward pass adds into input deltas instead of
  overwriting them;
* inputs are read-only: the layer leaves its inputs unchanged;
* ``garbage``: the results do not depend on what was in the output and
  internal buffers before the forward pass (nor, for a layer that claims
  ``overwrites_gradients``, on what was in its gradient buffers, nor on what
  was in the backward-only internals it names in
  ``overwrites_backward_internals``, which the network does not zero);
* ``context``: for recurrent layers, one pass over a sequence equals two
  passes chained with ``get_context`` / ``forward_pass(context=...)`` (in
  the layer's ``context_order``: the later chunk first for a layer that runs
  backwards in time; not compared for ``context_order = None``), and
  deltas and gradients are right also when a (random) context was passed;
* ``description``: the architecture survives a JSON round trip and the rebuilt
  network computes the same outputs.

Big buffers are checked on a random subset of entries plus random directions
(the directional derivative along ``v`` against ``<gradient, v>``), so checks
stay fast.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["check_layer", "get_test_configurations", "ALL_CHECKS"]

ALL_CHECKS = ("deltas", "gradients", "adds_deltas", "garbage", "context", "description")

_MAX_ENTRIES = 60
_DIRECTIONS = 3


def get_test_configurations():
    """Standard (time_steps, batch_size, activation) configurations to check layers on."""
    return [
        {"time_steps": 1, "batch_size": 1, "activation": "tanh"},
        {"time_steps": 4, "batch_size": 1, "activation": "sigmoid"},
        {"time_steps": 2, "batch_size": 3, "activation": "rel"},
        {"time_steps": 1, "batch_size": 3, "activation": "linear"},
        {"time_steps": 3, "batch_size": 2, "activation": "el"},
    ]


class _Harness:
    def __init__(self, layer, in_shapes, time_steps, batch_size, inits, data, seed):
        import brainstorm as bs
        from brainstorm.handlers.debug_handler import DebugHandler
        from brainstorm.handlers.numpy_handler import NumpyHandler
        from brainstorm.initializers import Gaussian

        self.rng = np.random.RandomState(seed)
        self.seed = seed
        self.T, self.B = time_steps, batch_size
        templates = {}
        for name, shape in in_shapes.items():
            shape = tuple(shape)
            templates[name] = shape if shape[:1] in (("T",), ("B",)) else ("T", "B") + shape
        inp = bs.layers.Input(templates)
        for name in templates:
            inp - name >> name - layer
        self.layer_name = layer.layer.name
        self.architecture = bs.generate_architecture(layer)
        handler = DebugHandler(NumpyHandler(np.float64, seed=seed))
        self.net = bs.Network.from_architecture(self.architecture, handler=handler)
        self.layer = self.net.layers[self.layer_name]
        init_spec = {"default": Gaussian(0.5)}
        if inits:
            init_spec = {self.layer_name: dict(inits, default=Gaussian(0.5))}
            init_spec["default"] = Gaussian(0.5)
        self.net.initialize(init_spec, seed=seed)
        self.data = {}
        for name, template in templates.items():
            given = (data or {}).get(name)
            lead = (self.T, self.B) if template[0] == "T" else (self.B,)
            shape = lead + tuple(template[len(lead) :])
            if callable(given):
                value = given(shape, self.rng)
            elif given is not None:
                value = np.asarray(given)
            else:
                value = self.rng.randn(*shape)
            self.data[name] = np.asarray(value, dtype=np.float64)
        self.net.provide_external_data(self.data)
        self.outputs = [
            o for o in self.layer.out_shapes if o not in self.layer.takes_no_output_deltas_from
        ]
        self.weights = {}
        for o in self.outputs:
            weights = self.rng.randn(*self._shape(f"{self.layer_name}.outputs.{o}"))
            if self.layer.out_shapes[o].context_size:
                weights[self.T :] = 0.0  # the context slot is not part of the output
            self.weights[o] = weights
        self.context = None  # the context every forward pass starts from

    # -- helpers ------------------------------------------------------------------------
    def _shape(self, path):
        return self.net.get(path).shape

    def _reset_rng(self):
        handler = self.net.handler
        inner = getattr(handler, "handler", handler)
        inner.rnd.reset()

    def forward(self, context="use the harness context"):
        if isinstance(context, str):
            context = self.context
        self._reset_rng()
        self.net.forward_pass(training_pass=True, context=context)

    def random_context(self):
        """A random state to start from, shaped like ``get_context()``'s."""
        self.forward()
        return {
            path: self.rng.randn(*np.shape(self.net.handler.get_numpy_copy(value)))
            for path, value in self.net.get_context().items()
        }

    def check_inputs_unchanged(self):
        for name, value in self.data.items():
            if not np.array_equal(self.net.get(f"Input.outputs.{name}"), value):
                raise AssertionError(
                    f"{self.layer_name}: the layer changed its input {name!r} (inputs are "
                    f"shared with other layers and must be read-only)"
                )

    def objective(self):
        self.forward()
        total = 0.0
        for o in self.outputs:
            total += float(np.sum(self.net.get(f"{self.layer_name}.outputs.{o}") * self.weights[o]))
        return total

    def backward(self, initial_deltas=None, garbage_gradients=False):
        """Run the layer's backward pass with output deltas = weights; return deltas, grads.

        With ``garbage_gradients``, the gradients of a layer that claims
        ``overwrites_gradients`` (and so is not given zeroed ones) start as noise.
        """
        h = self.net.handler
        self.forward()
        self.net.buffer_manager.clear_backward_buffers()
        buffers = self.net.buffer[self.layer_name]
        if garbage_gradients and self.layer.overwrites_gradients:
            for view in buffers.gradients.values():
                h.set_from_numpy(view, self.rng.randn(*h.get_numpy_copy(view).shape))
        for o in self.outputs:
            h.set_from_numpy(buffers.output_deltas[o], self.weights[o])
        for name, value in (initial_deltas or {}).items():
            h.set_from_numpy(buffers.input_deltas[name], value)
        self.layer.backward_pass(buffers)
        deltas = {n: h.get_numpy_copy(buffers.input_deltas[n]) for n in buffers.input_deltas.keys()}
        grads = {n: h.get_numpy_copy(buffers.gradients[n]) for n in buffers.gradients.keys()}
        return deltas, grads

    def numeric(self, view, analytic, what, eps=1e-6, rtol=1e-4, atol=1e-6):
        h = self.net.handler
        original = h.get_numpy_copy(view)
        flat = original.reshape(-1)
        n = flat.size
        entries = np.arange(n) if n <= _MAX_ENTRIES else self.rng.choice(n, _MAX_ENTRIES, False)
        directions = [np.eye(1, n, i).reshape(-1) for i in entries]
        if n > _MAX_ENTRIES:
            directions += [self.rng.randn(n) for _ in range(_DIRECTIONS)]
        try:
            for i, v in enumerate(directions):
                h.set_from_numpy(view, (flat + eps * v).reshape(original.shape))
                plus = self.objective()
                h.set_from_numpy(view, (flat - eps * v).reshape(original.shape))
                minus = self.objective()
                numeric = (plus - minus) / (2 * eps)
                expected = float(np.dot(analytic.reshape(-1), v))
                if not np.isclose(expected, numeric, rtol=rtol, atol=atol):
                    where = f"entry {entries[i]}" if i < len(entries) else "a random direction"
                    raise AssertionError(
                        f"{what}: analytic {expected:.8g} vs finite differences {numeric:.8g} "
                        f"at {where} (T={self.T}, B={self.B})"
                    )
        finally:
            h.set_from_numpy(view, original)


def check_layer(
    layer,
    in_shapes,
    time_steps=3,
    batch_size=2,
    inits=None,
    data=None,
    seed=1234,
    checks=ALL_CHECKS,
):
    """Check a layer's derivatives, context handling and description.

    Args:
        layer: a construction wrapper, e.g. ``FullyConnected(3, activation='tanh')``.
        in_shapes: input name -> feature shape (``(4,)``), or a full template
            (``('B', 4)``) for inputs that are not time-sized.
        time_steps, batch_size: the sizes of the random data.
        inits: optional dict parameter name -> initializer/value for the layer
            (default: ``Gaussian(0.5)`` for every parameter).
        data: optional dict input name -> array, or callable ``(shape, rng)``
            returning one (e.g. integer class targets).
        seed: seed for data, parameters and the handler's random state.
        checks: which checks to run (see ``ALL_CHECKS``).

    Raises:
        AssertionError: describing the first failed check.

    Example:
        >>> from brainstorm.testing import check_layer
        >>> check_layer(MyLayer(3), {'default': (4,)})
    """
    unknown = set(checks) - set(ALL_CHECKS)
    if unknown:
        raise ValueError(f"Unknown checks {sorted(unknown)}; available: {ALL_CHECKS}")
    harness = _Harness(layer, in_shapes, time_steps, batch_size, inits, data, seed)
    name = harness.layer_name
    deltas, grads = harness.backward()
    harness.check_inputs_unchanged()
    _check_derivatives(harness, checks, deltas, grads, "")
    if "context" in checks and harness.net.buffer_manager.context_views:
        harness.context = harness.random_context()
        context_deltas, context_grads = harness.backward()
        _check_derivatives(harness, checks, context_deltas, context_grads, " with a context")
        harness.context = None
    if "adds_deltas" in checks:
        initial = {
            n: harness.rng.randn(*deltas[n].shape)
            for n in deltas
            if n not in harness.layer.computes_no_input_deltas_for
        }
        added, _ = harness.backward(initial)
        for n, start in initial.items():
            if not np.allclose(added[n] - start, deltas[n], rtol=1e-8, atol=1e-10):
                raise AssertionError(
                    f"{name}: the backward pass must ADD into input deltas of {n!r}, but it "
                    f"overwrote them"
                )
    if "garbage" in checks:
        _check_garbage(harness, deltas, grads)
    if "context" in checks and harness.net.buffer_manager.context_views and time_steps > 1:
        _check_context(harness)
    if "description" in checks:
        _check_description(harness)


def _check_derivatives(harness, checks, deltas, grads, where):
    name = harness.layer_name
    if "deltas" in checks:
        for in_name in harness.net.buffer[name].inputs.keys():
            if in_name in harness.layer.computes_no_input_deltas_for:
                continue
            harness.numeric(
                harness.net.buffer.Input.outputs[in_name],
                deltas[in_name],
                f"{name}: input deltas of {in_name!r}{where}",
            )
    if "gradients" in checks:
        for param, view in harness.net.buffer[name].parameters.items():
            if param in harness.layer.computes_no_gradients_for:
                continue
            harness.numeric(view, grads[param], f"{name}: gradient of {param!r}{where}")


def _outputs(harness):
    return {
        o: harness.net.get(f"{harness.layer_name}.outputs.{o}") for o in harness.layer.out_shapes
    }


def _check_garbage(harness, deltas, grads):
    h = harness.net.handler
    harness.forward()
    reference = _outputs(harness)
    buffers = harness.net.buffer[harness.layer_name]
    for category in ("outputs", "internals"):
        for view in buffers[category].values():
            h.set_from_numpy(view, harness.rng.randn(*h.get_numpy_copy(view).shape))
    harness.forward()
    for o, value in _outputs(harness).items():
        if harness.net.buffer_manager.context_views and value.shape[0] > harness.T:
            value, ref = value[: harness.T], reference[o][: harness.T]
        else:
            ref = reference[o]
        if not np.allclose(value, ref, rtol=1e-10, atol=1e-12):
            raise AssertionError(
                f"{harness.layer_name}: output {o!r} depends on what was in the buffers before "
                f"the forward pass"
            )
    for view in buffers.internals.values():
        h.set_from_numpy(view, harness.rng.randn(*h.get_numpy_copy(view).shape))
    new_deltas, new_grads = harness.backward(garbage_gradients=True)
    for table, fresh, kind in (
        (deltas, new_deltas, "input deltas"),
        (grads, new_grads, "gradients"),
    ):
        for key, value in table.items():
            if not np.allclose(fresh[key], value, rtol=1e-10, atol=1e-12):
                raise AssertionError(
                    f"{harness.layer_name}: {kind} of {key!r} depend on what was in the "
                    f"buffers before the forward pass"
                )


def _check_context(harness):
    order = getattr(harness.layer, "context_order", "forward")
    if order not in ("forward", "reverse"):
        return  # chained passes are not meant to equal one pass (e.g. bidirectional)
    net, T = harness.net, harness.T
    full_data = harness.data
    harness.forward()
    full = {o: v[:T] for o, v in _outputs(harness).items()}
    split = T // 2
    chunks = [(0, split), (split, T)]
    if order == "reverse":  # a layer running backwards in time continues the later chunk
        chunks.reverse()
    context = None
    for start, stop in chunks:
        net.provide_external_data({k: v[start:stop] for k, v in full_data.items()})
        harness.forward(context=context)
        context = net.get_context()
    start, stop = chunks[-1]
    chained = {o: v[: stop - start] for o, v in _outputs(harness).items()}
    net.provide_external_data(full_data)
    for o in full:
        if o in harness.layer.takes_no_output_deltas_from and full[o].ndim < 2:
            continue
        if full[o].shape[0] != T:
            continue
        if not np.allclose(chained[o], full[o][start:stop], rtol=1e-10, atol=1e-12):
            raise AssertionError(
                f"{harness.layer_name}: output {o!r} of two passes chained by context differs "
                f"from one pass over the whole sequence"
            )


def _check_description(harness):
    import brainstorm as bs
    from brainstorm.describable import create_from_description, get_description

    architecture = json.loads(json.dumps(harness.architecture))
    rebuilt = bs.Network.from_architecture(architecture, handler=harness.net.handler)
    description = json.loads(json.dumps(get_description(harness.net)))
    from_description = create_from_description(description)
    reference = None
    for net in (harness.net, rebuilt, from_description):
        if net is not harness.net:
            net.set_handler(harness.net.handler)
            net.handler.set_from_numpy(net.buffer.parameters, harness.net.get("parameters"))
            net.handler.set_from_numpy(net.buffer.states, harness.net.get("states"))
        net.provide_external_data(harness.data)
        harness._reset_rng()
        net.forward_pass(training_pass=False)
        outputs = {
            o: net.get(f"{harness.layer_name}.outputs.{o}") for o in harness.layer.out_shapes
        }
        if reference is None:
            reference = outputs
            continue
        for o, value in outputs.items():
            if not np.allclose(value, reference[o], rtol=1e-10, atol=1e-12):
                raise AssertionError(
                    f"{harness.layer_name}: the network rebuilt from its description computes "
                    f"a different output {o!r}"
                )
