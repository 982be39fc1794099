"""The Network: layers, their memory, and everything a user does with them."""

from __future__ import annotations

import copy
import json
import warnings
from collections import OrderedDict

import numpy as np

from brainstorm.describable import create_from_description, get_description
from brainstorm.randomness import Seedable
from brainstorm.structure.architecture import (
    generate_architecture,
    instantiate_layers_from_architecture,
)
from brainstorm.structure.buffers import BufferManager, array_shape
from brainstorm.structure.view_references import resolve_references
from brainstorm.utils import (
    InitializationError,
    NetworkValidationError,
    StridedViewError,
    as_float_scalar,
    given,
)

__all__ = ["Network"]


def _check_handler(handler):
    """``handler`` if it is a handler object, else a TypeError saying what to pass."""
    from brainstorm.handlers.base_handler import Handler

    if not isinstance(handler, Handler):
        raise TypeError(
            f"Expected a handler object, e.g. NumpyHandler(np.float32); got {given(handler)}"
        )
    return handler


def _default_handler():
    from brainstorm.handlers.numpy_handler import NumpyHandler

    return NumpyHandler(np.float32)


class Network(Seedable):
    """A directed acyclic graph of layers together with all of its memory.

    Build one with :meth:`from_layer`, :meth:`from_architecture` or
    :meth:`from_hdf5` rather than calling the constructor.

    Args:
        layers: OrderedDict name -> Layer implementation (topological order).
        buffer_manager: the :class:`~brainstorm.structure.buffers.BufferManager`.
        architecture: the architecture dict the layers were built from.
        seed: seed of the network's random state (initialization, modifiers).
        handler: the handler to compute with; ``NumpyHandler(float32)`` if None.

    Attributes:
        layers: OrderedDict of layer implementations, ``Input`` first.
        loss_layers: names of the ``Loss`` layers.
        buffer: the root BufferView of all live arrays (``net.buffer[PATH]``).
        handler: the current handler.
        output_name: default output used by scorers, e.g.
            ``'Output.outputs.predictions'``.
    """

    __undescribed__ = {"layers", "loss_layers", "buffer_manager", "handler", "rnd"}

    def __init__(self, layers, buffer_manager, architecture, seed=None, handler=None):
        super().__init__(seed)
        self.layers = layers
        self.loss_layers = [n for n, lay in layers.items() if lay.type_name == "Loss"]
        self.buffer_manager = buffer_manager
        self.architecture = architecture
        self.handler = handler if handler is not None else buffer_manager.handler
        self.initializers = {}
        self.weight_modifiers = {}
        self.gradient_modifiers = {}
        self.output_name = self._guess_output_name()
        self._compute_data_deltas = True
        for layer in layers.values():
            layer.set_handler(self.handler)
        self._initialize_states()

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_layer(cls, some_layer, handler=None):
        """Create a network from any layer wired up with ``>>``.

        Args:
            some_layer: a ConstructionWrapper connected to the rest of the network.
            handler: optional handler (default ``NumpyHandler(float32)``).
        """
        return cls.from_architecture(generate_architecture(some_layer), handler=handler)

    @classmethod
    def from_architecture(cls, architecture, handler=None):
        """Create a network from an architecture dict (see ``generate_architecture``).

        Raises:
            NetworkValidationError, LayerValidationError: naming the problem.
            brainstorm.registry.UnknownNameError: for an unknown layer type.
        """
        architecture = json.loads(json.dumps(architecture))  # a private, JSON-clean copy
        layers = instantiate_layers_from_architecture(architecture)
        handler = _check_handler(handler) if handler is not None else _default_handler()
        manager = BufferManager(layers, handler)
        return cls(layers, manager, architecture, handler=handler)

    @classmethod
    def from_hdf5(cls, filename):
        """Load a network saved with :meth:`save_as_hdf5`.

        Works whether or not the saved network had been initialized; never runs
        initializers, never imports modules named in the file, never unpickles.

        Raises:
            ValueError: if the file is not a brainstorm network file, is
                truncated or corrupt, or was written by a newer format.
        """
        from brainstorm.structure.network_file import read_network_file

        description, parameters, states = read_network_file(filename)
        try:
            net = create_from_description(description)
        except RecursionError:
            raise ValueError(f"{filename}: the description is nested too deeply") from None
        except Exception as err:
            raise ValueError(f"{filename}: cannot build the network it describes: {err}") from err
        if not isinstance(net, Network):
            raise ValueError(f"{filename}: the description is not a Network")
        for name, values, target in (
            ("parameters", parameters, net.buffer.parameters),
            ("states", states, net.buffer.states),
        ):
            if values.shape != tuple(array_shape(target)):
                raise ValueError(
                    f"{filename}: stored {name} have shape {values.shape}, but the "
                    f"architecture needs {tuple(array_shape(target))}"
                )
            net.handler.set_from_numpy(target, values)
        return net

    @classmethod
    def __new_from_description__(cls, description):
        from brainstorm.handlers.base_handler import Handler

        handler = None
        if description.get("handler") is not None:
            try:
                handler = create_from_description(description["handler"])
                if not isinstance(handler, Handler):
                    raise TypeError(f"{type(handler).__name__} is not a Handler")
            except Exception as err:  # e.g. a GPU handler on a machine without GPU
                warnings.warn(
                    f"Could not recreate handler {description['handler']!r} ({err}); "
                    f"using NumpyHandler instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
                handler = None
        net = cls.from_architecture(description["architecture"], handler=handler)
        net.initializers = description.get("initializers") or {}
        net.set_weight_modifiers(_modifier_spec(description.get("weight_modifiers")))
        net.set_gradient_modifiers(_modifier_spec(description.get("gradient_modifiers")))
        if description.get("output_name") is not None:
            net.output_name = description["output_name"]
        return net

    def __describe__(self):
        return {
            "@type": "Network",
            "architecture": self.architecture,
            "handler": get_description(self.handler),
            "initializers": get_description(self.initializers),
            "weight_modifiers": get_description(self.weight_modifiers),
            "gradient_modifiers": get_description(self.gradient_modifiers),
            "output_name": self.output_name,
        }

    def _guess_output_name(self):
        for name, layer in self.layers.items():
            if name == "Output" and "predictions" in layer.out_shapes:
                return "Output.outputs.predictions"
        return None

    @property
    def compute_data_deltas(self):
        """Whether backward passes compute the deltas of the data (default True).

        Set it to False when nobody reads ``'Input.output_deltas...'`` (normal
        training): layers fed directly by the Input layer may then skip
        computing those deltas, which saves e.g. one of the three GEMMs of the
        first FullyConnected layer.
        """
        return self._compute_data_deltas

    @compute_data_deltas.setter
    def compute_data_deltas(self, value):
        self._compute_data_deltas = bool(value)
        for layer in self.layers.values():
            sources = {}
            for conn in layer.incoming:
                sources.setdefault(conn.input_name, set()).add(conn.start_layer)
            layer.inputs_without_deltas = frozenset(
                name
                for name, starts in sources.items()
                if not self._compute_data_deltas and starts == {"Input"}
            )

    # -- access ---------------------------------------------------------------------------
    @property
    def buffer(self):
        """The root BufferView of the live arrays (device arrays on a GPU handler)."""
        return self.buffer_manager.views

    def _resolve_path(self, buffer_path):
        parts = buffer_path.split(".")
        if len(parts) == 3 and parts[1] == "outputs" and parts[0] in self.layers:
            aliases = getattr(self.layers[parts[0]], "output_aliases", {})
            if parts[2] in aliases and parts[2] not in self.layers[parts[0]].out_shapes:
                parts[2] = aliases[parts[2]]
        return ".".join(parts)

    def get(self, buffer_path):
        """A numpy copy of the buffer at ``buffer_path``.

        Examples:
            >>> net.get('parameters')
            >>> net.get('Output.outputs.predictions')
            >>> net.get('Lstm.internals.Fb')

        Raises:
            KeyError: if the path leads nowhere or to a group of buffers (the
                message lists what is there).
        """
        value = self.buffer[self._resolve_path(buffer_path)]
        if isinstance(value, list):  # a BufferView, not an array
            raise KeyError(
                f"{buffer_path!r} is a group of buffers, not one buffer; it contains {value.keys()}"
            )
        return self.handler.get_numpy_copy(value)

    def get_input(self, input_name):
        """A numpy copy of the named input data currently in the network."""
        return self.get("Input.outputs." + input_name)

    get_inputs = get_input

    # -- running ----------------------------------------------------------------------------
    def provide_external_data(self, data, all_inputs=True):
        """Copy named data (arrays shaped ``(T, B, ...)``) into the Input layer.

        Args:
            data: dict name -> array (numpy or handler arrays).
            all_inputs: if False, inputs missing from ``data`` are allowed
                (they are filled with zeros).

        Raises:
            KeyError: for a missing input (naming it and what was given).
            ValueError: for data whose shape does not fit the Input layer.
        """
        if not hasattr(data, "keys") or not hasattr(data, "__getitem__"):
            raise TypeError(
                f"provide_external_data needs a dict of input name -> array, got "
                f"{type(data).__name__}"
            )
        data = {
            name: np.asarray(value) if isinstance(value, (list, tuple)) else value
            for name, value in data.items()
        }
        input_shapes = self.layers["Input"].out_shapes
        missing = [n for n in input_shapes if n not in data]
        if all_inputs and missing:
            raise KeyError(
                f"Missing input data {missing}; the network's inputs are "
                f"{list(input_shapes)} and the data has {sorted(data)}"
            )
        present = [n for n in input_shapes if n in data]
        if not present:
            raise KeyError(
                f"None of the network's inputs {list(input_shapes)} are in the data "
                f"({sorted(data)})"
            )
        time_size = batch_size = None
        for name in present:
            structure, shape = input_shapes[name], tuple(array_shape(data[name]))
            lead = 2 if structure.buffer_type == 2 else 1
            if len(shape) != lead + len(structure.feature_shape) or (
                shape[lead:] != structure.feature_shape
            ):
                raise ValueError(
                    f"Input data {name!r} has shape {shape}, but the network expects "
                    f"{structure.shape}"
                )
            t, b = (shape[0], shape[1]) if lead == 2 else (None, shape[0])
            if time_size is None and t is not None:
                time_size = t
            if batch_size is None:
                batch_size = b
            if (t is not None and t != time_size) or b != batch_size:
                raise ValueError(
                    f"Input data {name!r} has shape {shape}, which disagrees with the other "
                    f"data on the time ({time_size}) or batch ({batch_size}) size"
                )
        self.buffer_manager.resize(time_size or 1, batch_size)
        views = self.buffer.Input.outputs
        for name in missing:  # defined values (zeros), not what the last batch left
            self.handler.fill(views[name], 0.0)
        for name in present:
            value = data[name]
            if isinstance(value, self.handler.array_type) and not isinstance(value, np.ndarray):
                self.handler.copy_to(value, views[name])
            else:
                self.handler.set_from_numpy(views[name], np.asarray(value))

    def forward_pass(self, training_pass=False, context=None):
        """Run all layers forward on the provided data.

        Args:
            training_pass: whether this pass is part of training (changes e.g.
                Dropout and BatchNorm).
            context: a state from :meth:`get_context` to continue sequences
                from; None starts from zeros.
        """
        if context is None:
            self.buffer_manager.clear_context()
        elif not isinstance(context, dict):
            raise TypeError(
                f"forward_pass: context must be what net.get_context() returned (a dict) or "
                f"None, got {type(context).__name__}"
            )
        else:
            self.buffer_manager.apply_context(context)
        with self.handler.session():
            for name, layer in self.layers.items():
                if name != "Input":
                    try:
                        layer.forward_pass(self.buffer[name], training_pass)
                    except StridedViewError as err:
                        raise _strided_view_error(name, layer, err) from None
                    except IndexError as err:  # e.g. class ids out of range: say where
                        raise IndexError(f"Layer {name!r} ({layer.type_name}): {err}") from err

    def backward_pass(self):
        """Compute all deltas and gradients (after a forward pass), then apply
        the gradient modifiers."""
        with self.handler.session():
            self.buffer_manager.clear_backward_buffers()
            for name in reversed(self.layers):
                if name != "Input":
                    try:
                        self.layers[name].backward_pass(self.buffer[name])
                    except StridedViewError as err:
                        raise _strided_view_error(name, self.layers[name], err) from None
            self.apply_gradient_modifiers()

    def get_loss_values(self):
        """``{'total_loss': v}``; with several Loss layers also one entry per layer."""
        losses = OrderedDict()
        for name in self.loss_layers:
            losses[name] = as_float_scalar(self.get(f"{name}.outputs.loss"))
        total = float(sum(losses.values()))
        if len(losses) == 1:
            return {"total_loss": total}
        losses["total_loss"] = total
        return dict(losses)

    def get_context(self):
        """The state after the last time step: pass it as ``forward_pass(context=...)``
        to continue the sequences. A dict buffer path -> array."""
        return self.buffer_manager.get_context()

    # -- parameters, states, handler ------------------------------------------------------
    def _parameter_structure(self):
        return {
            name: list(layer.parameter_shapes)
            for name, layer in self.layers.items()
            if layer.parameter_shapes
        }

    def initialize(self, default_or_init_dict=None, seed=None, **kwargs):
        """Initialize the parameters (and reset the layers' non-trainable states,
        such as BatchNorm's running statistics, to their starting values).

        Three equivalent forms: one initializer or number
        (``net.initialize(Gaussian())`` = ``default=Gaussian()``), a dict, or
        keyword arguments; dict and keywords are merged, keywords winning.
        Keys are layer patterns (``*`` wildcards allowed) mapping to an
        initializer or a dict of parameter patterns; ``default`` applies to
        what no other key matched, ``fallback`` is used where the chosen
        initializer raises ``InitializationError``. Values are numbers,
        arrays/lists or :class:`~brainstorm.initializers.Initializer` objects.

        Example:
            >>> net.initialize({'Conv*': {'W': Gaussian(0.01), 'bias': 0},
            ...                 'default': 0.1}, seed=1234)

        Raises:
            NetworkValidationError: if a pattern matches nothing, or a parameter
                gets no or several initializers.
        """
        from brainstorm.initializers import ArrayInitializer, evaluate_initializer

        spec = self._merge_spec(default_or_init_dict, kwargs)
        values, fallbacks = resolve_references(self._parameter_structure(), spec)
        init_rnd = self.rnd.create_random_state(seed)
        for layer_name, view_name in sorted(values):
            inits = _unique(values[(layer_name, view_name)])
            falls = _unique(fallbacks[(layer_name, view_name)])
            path = f"{layer_name}.{view_name}"
            if not inits:
                raise NetworkValidationError(f"No initializer for {path}")
            if len(inits) > 1:
                raise NetworkValidationError(f"Multiple initializers for {path}: {inits}")
            if len(falls) > 1:
                raise NetworkValidationError(f"Multiple fallbacks for {path}: {falls}")
            init = inits[0]
            if isinstance(init, (list, np.ndarray)):
                init = ArrayInitializer(init)
            fallback = falls[0] if falls else None
            view = self.buffer[layer_name].parameters[view_name]
            try:
                array = evaluate_initializer(
                    init, tuple(array_shape(view)), fallback, seed=init_rnd.generate_seed()
                )
            except InitializationError as err:
                raise InitializationError(f"Initializing {path}: {err}") from err
            self.handler.set_from_numpy(view, np.asarray(array))
        self.initializers = get_description(_wrap_arrays(spec))
        self._initialize_states()

    def _initialize_states(self):
        for name, layer in self.layers.items():
            if layer.state_shapes:
                layer.initialize_states(self.buffer[name].states)

    def _merge_spec(self, default_or_dict, kwargs):
        if default_or_dict is None:
            spec = {}
        elif isinstance(default_or_dict, dict):
            spec = dict(default_or_dict)
        else:
            spec = {"default": default_or_dict}
        spec.update(kwargs)
        return spec

    def _set_modifiers(self, default_or_mod_dict, kwargs, kind):
        from brainstorm.value_modifiers import GradientModifier, ValueModifier

        spec = self._merge_spec(default_or_mod_dict, kwargs)
        values, _ = resolve_references(self._parameter_structure(), spec, allow_fallback=False)
        installed = {}
        for (layer_name, view_name), found in sorted(values.items()):
            if view_name in self.layers[layer_name].computes_no_gradients_for:
                continue  # set by hand (e.g. Clockwork's timing): no decay, no clipping
            mods = []
            for value in found:
                for mod in value if isinstance(value, (list, tuple)) else [value]:
                    if all(mod is not other for other in mods):  # one object, applied once
                        mods.append(mod)
            for mod in mods:
                if not isinstance(mod, ValueModifier):
                    raise TypeError(
                        f"{kind} for {layer_name}.{view_name} must be ValueModifiers, got {mod!r}"
                    )
                if kind == "Weight modifiers" and isinstance(mod, GradientModifier):
                    raise TypeError(
                        f"{type(mod).__name__} for {layer_name}.{view_name} changes gradients: "
                        f"install it with set_gradient_modifiers, not set_weight_modifiers"
                    )
            if not mods:
                continue
            copies = []
            for mod in mods:
                mod = copy.deepcopy(mod)
                mod.layer_name, mod.view_name = layer_name, view_name
                mod.rnd.set_seed(self.rnd.generate_seed())
                copies.append(mod)
            installed.setdefault(layer_name, {})[view_name] = copies
        return installed

    def set_weight_modifiers(self, default_or_mod_dict=None, **kwargs):
        """Install ValueModifiers run on the weights after every update.

        Same pattern syntax as :meth:`initialize`, without ``fallback``; a value
        is a modifier or a list of modifiers (run in order). Parameters a layer
        sets by hand (its ``computes_no_gradients_for``, e.g. the ``timing`` of
        Clockwork layers) get no modifiers.
        """
        self.weight_modifiers = self._set_modifiers(default_or_mod_dict, kwargs, "Weight modifiers")

    def set_gradient_modifiers(self, default_or_mod_dict=None, **kwargs):
        """Install ValueModifiers run on the gradients after every backward pass.

        Same syntax as :meth:`set_weight_modifiers`.
        """
        self.gradient_modifiers = self._set_modifiers(
            default_or_mod_dict, kwargs, "Gradient modifiers"
        )

    def apply_weight_modifiers(self):
        """Run the weight modifiers once."""
        for layer_name, views in self.weight_modifiers.items():
            for view_name, mods in views.items():
                view = self.buffer[layer_name].parameters[view_name]
                for mod in mods:
                    mod(self.handler, view)

    def start_weight_modifiers(self):
        """Show the weight modifiers the weights training starts from (their
        ``start``; e.g. ``FreezeValues()`` keeps them). The Trainer calls it when
        training starts or continues."""
        for layer_name, views in self.weight_modifiers.items():
            for view_name, mods in views.items():
                view = self.buffer[layer_name].parameters[view_name]
                for mod in mods:
                    mod.start(self.handler, view)

    def apply_gradient_modifiers(self):
        """Run the gradient modifiers once."""
        from brainstorm.value_modifiers import GradientModifier

        for layer_name, views in self.gradient_modifiers.items():
            for view_name, mods in views.items():
                layer = self.buffer[layer_name]
                for mod in mods:
                    if isinstance(mod, GradientModifier):
                        mod(self.handler, layer.parameters[view_name], layer.gradients[view_name])
                    else:
                        mod(self.handler, layer.gradients[view_name])

    def set_handler(self, new_handler):
        """Move the network to ``new_handler`` (e.g. ``PyCudaHandler()``), keeping
        parameters, states, the provided data and the recurrent state."""
        _check_handler(new_handler)
        parameters = self.handler.get_numpy_copy(self.buffer.parameters)
        states = self.handler.get_numpy_copy(self.buffer.states)
        inputs = {
            name: self.handler.get_numpy_copy(view)
            for name, view in self.buffer.Input.outputs.items()
        }
        context = {
            path: self.handler.get_numpy_copy(view)
            for path, view, _ in self.buffer_manager.context_views
        }
        manager = BufferManager(self.layers, new_handler)
        manager.resize(self.buffer_manager.time_size, self.buffer_manager.batch_size)
        new_handler.set_from_numpy(manager.views.parameters, parameters)
        new_handler.set_from_numpy(manager.views.states, states)
        for name, value in inputs.items():
            new_handler.set_from_numpy(manager.views.Input.outputs[name], value)
        for path, view, _ in manager.context_views:
            new_handler.set_from_numpy(view, context[path])
        self.buffer_manager = manager
        self.handler = new_handler
        for layer in self.layers.values():
            layer.set_handler(new_handler)

    def save_as_hdf5(self, filename, comment=""):
        """Save the description and parameters to an HDF5 file (atomically).

        Args:
            filename: where to write; the directory must exist.
            comment: optional text stored in the file.
        """
        from brainstorm.structure.network_file import write_network_file

        write_network_file(
            filename,
            get_description(self),
            self.handler.get_numpy_copy(self.buffer.parameters),
            self.handler.get_numpy_copy(self.buffer.states),
            comment,
        )


def _strided_view_error(name, layer, err):
    return StridedViewError(
        f"Layer {name!r} ({layer.type_name}) cannot flatten one of its buffers: it shares "
        f"memory side by side with other layers' buffers because several outputs are "
        f"concatenated into one input ({err}). Wire the concatenation through a Merge "
        f"layer instead."
    )


def _unique(values):
    unique, seen = [], []
    for v in values:
        try:
            key = json.dumps(get_description(_wrap_arrays(v)), sort_keys=True)
        except TypeError:
            key = id(v)
        if key not in seen:
            seen.append(key)
            unique.append(v)
    return unique


def _wrap_arrays(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _wrap_arrays(v) for k, v in value.items()}
    return value


def _modifier_spec(described):
    if not described:
        return {}
    if not isinstance(described, dict) or not all(
        isinstance(views, dict) and all(isinstance(m, list) for m in views.values())
        for views in described.values()
    ):
        raise ValueError("Modifiers must be described as {layer: {view: [modifiers]}}")
    spec = {}
    for layer_name, views in described.items():
        spec[layer_name] = {view: create_from_description(mods) for view, mods in views.items()}
    return spec
