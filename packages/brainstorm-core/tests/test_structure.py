"""Construction DSL, architectures and their validation."""

import json

import numpy as np
import pytest
from core_test_layers import Accumulate, Scale, SumLoss

import brainstorm as bs
from brainstorm.registry import UnknownNameError
from brainstorm.structure.architecture import get_canonical_layer_order
from brainstorm.structure.buffer_structure import (
    BufferStructure,
    StructureTemplate,
    combine_buffer_structures,
)
from brainstorm.structure.construction import ConstructionWrapper
from brainstorm.utils import (
    LayerValidationError,
    NetworkValidationError,
    StructureValidationError,
)


def test_wiring_and_unique_names():
    inp = bs.layers.Input({"default": ("T", "B", 3)})
    a, b, c = Scale(), Scale(), Scale(name="Special")
    inp >> a >> b >> c >> SumLoss()
    arch = bs.generate_architecture(inp)
    assert set(arch) == {"Input", "Scale_1", "Scale_2", "Special", "SumLoss"}
    assert arch["Scale_1"]["@outgoing_connections"] == {"default": ["Scale_2"]}
    assert arch["Special"]["@type"] == "Scale"


def test_named_inputs_and_outputs():
    inp = bs.layers.Input({"default": ("T", "B", 3), "other": ("T", "B", 3)})
    s = Scale(name="S")
    loss = SumLoss()
    inp - "other" >> s - "default" >> loss
    arch = bs.generate_architecture(s)
    assert arch["Input"]["@outgoing_connections"] == {"other": ["S"]}


def test_invalid_layer_name():
    with pytest.raises(LayerValidationError, match="Invalid layer name"):
        Scale(name="not valid")
    with pytest.raises(LayerValidationError):
        Scale(name="default")


def test_buffer_structures():
    s = BufferStructure("T", "B", 4, 5, context_size=1)
    assert s.buffer_type == 2 and s.feature_size == 20
    assert s.get_shape(3, 2) == (4, 2, 4, 5)
    assert StructureTemplate("T", "B", "...").matches(s)
    assert StructureTemplate("T", "B", "F", "F").matches(s)
    assert not StructureTemplate("T", "B", "F").matches(s)
    assert not StructureTemplate("B", "...").matches(s)
    assert StructureTemplate("...").matches(BufferStructure(3))
    with pytest.raises(StructureValidationError):
        BufferStructure("T", "B", 0)
    combined = combine_buffer_structures(
        [BufferStructure("T", "B", 2, 3), BufferStructure("T", "B", 2, 4)]
    )
    assert combined.shape == ("T", "B", 2, 7)
    with pytest.raises(StructureValidationError, match="Cannot concatenate"):
        combine_buffer_structures([BufferStructure("T", "B", 3), BufferStructure("B", 3)])


def _arch():
    return {
        "Input": {
            "@type": "Input",
            "@outgoing_connections": {"default": ["A"]},
            "out_shapes": {"default": ["T", "B", 2]},
        },
        "A": {"@type": "Scale", "@outgoing_connections": {"default": ["B"]}},
        "B": {"@type": "Scale", "@outgoing_connections": ["L"]},
        "L": {"@type": "SumLoss", "@outgoing_connections": {}},
    }


def test_canonical_order():
    assert get_canonical_layer_order(_arch()) == ["Input", "A", "B", "L"]


def test_cycle_is_rejected_naming_layers():
    arch = _arch()
    arch["B"]["@outgoing_connections"] = ["L", "A"]
    with pytest.raises(NetworkValidationError, match=r"cycle among layers \['A', 'B'"):
        bs.Network.from_architecture(arch)


def test_unknown_target_and_disconnected():
    arch = _arch()
    arch["B"]["@outgoing_connections"] = ["Nope"]
    with pytest.raises(NetworkValidationError, match="unknown layer 'Nope'"):
        bs.Network.from_architecture(arch)
    arch = _arch()
    arch["Lonely"] = {"@type": "Scale", "@outgoing_connections": []}
    with pytest.raises(NetworkValidationError, match="Lonely"):
        bs.Network.from_architecture(arch)


def test_unknown_layer_type_lists_installed_and_provider():
    arch = _arch()
    arch["A"]["@type"] = "Lstm2000"
    with pytest.raises(
        UnknownNameError, match="Layer 'A': Unknown layer 'Lstm2000'. Installed: .*Input"
    ):
        bs.Network.from_architecture(arch)


def test_missing_layers_distribution_hint(monkeypatch):
    from brainstorm import registry

    monkeypatch.setattr(registry, "_entry_points", lambda group: {})
    with pytest.raises(UnknownNameError, match="pip install brainstorm-layers"):
        registry.load("brainstorm.layers", "Lstm")


def test_missing_input_and_shape_mismatch_name_layer():
    arch = _arch()
    arch["Input"]["@outgoing_connections"] = {"default": ["A"], "x": ["L.x"]}
    arch["Input"]["out_shapes"]["x"] = ["T", "B", 5]
    with pytest.raises(LayerValidationError, match="Layer 'L' .*has no input 'x'"):
        bs.Network.from_architecture(arch)
    arch = _arch()
    arch["Input"]["@outgoing_connections"] = {"default": ["A"], "x": ["B"]}
    arch["Input"]["out_shapes"]["x"] = ["B", 5]
    with pytest.raises(NetworkValidationError, match="Layer 'B'"):
        bs.Network.from_architecture(arch)


def test_input_layer_rules():
    arch = _arch()
    arch["A"]["@outgoing_connections"] = {"default": ["B", "Input"]}
    with pytest.raises(NetworkValidationError, match="Input"):
        bs.Network.from_architecture(arch)
    arch = _arch()
    del arch["Input"]
    with pytest.raises(NetworkValidationError, match="Input"):
        bs.Network.from_architecture(arch)


def test_architecture_is_json_serialisable():
    inp = bs.layers.Input({"default": ("T", "B", 3)})
    inp >> Accumulate() >> SumLoss()
    arch = bs.generate_architecture(inp)
    assert json.loads(json.dumps(arch)) == json.loads(json.dumps(arch))
    net = bs.Network.from_architecture(json.loads(json.dumps(arch)))
    assert list(net.layers) == ["Input", "Accumulate", "SumLoss"]


def test_reshape_view_never_copies_silently():
    import numpy as np

    from brainstorm.utils import flatten_time, flatten_time_and_features

    hub = np.zeros((2, 3, 4, 5))
    view = hub[..., 1:3]  # a slice of the last axis, as multi-source inputs produce
    flat = flatten_time(view)
    flat[...] = 1
    assert hub[..., 1:3].sum() == 2 * 3 * 4 * 2
    with pytest.raises(ValueError, match="without copying"):
        flatten_time_and_features(view)


def test_gradients_of_layers_that_overwrite_them_are_not_zeroed_before_backward():
    from core_test_layers import ScaleLayerImpl

    class WritingScaleLayerImpl(ScaleLayerImpl):
        overwrites_gradients = True

    inp = bs.layers.Input({"default": ("T", "B", 3)})
    writing = ConstructionWrapper.create(WritingScaleLayerImpl, name="Writing")
    inp >> Scale(name="Adding") >> writing >> Scale(name="Last") >> SumLoss()
    net = bs.Network.from_layer(writing)
    manager = net.buffer_manager
    net.provide_external_data({"default": np.ones((2, 4, 3))})
    manager.gradients[...] = 7.0
    manager.clear_backward_buffers()
    assert np.all(net.buffer.Writing.gradients.w == 7.0)  # left for the layer to write
    assert np.all(net.buffer.Adding.gradients.w == 0.0)
    assert np.all(net.buffer.Last.gradients.w == 0.0)
    net.initialize(1.5)
    net.forward_pass()
    net.backward_pass()
    reference = {name: np.array(net.buffer[name].gradients.w) for name in ("Adding", "Writing")}
    manager.gradients[...] = -3.0
    net.backward_pass()
    for name, value in reference.items():
        np.testing.assert_array_equal(net.buffer[name].gradients.w, value)


def test_backward_internals_a_layer_overwrites_are_not_zeroed_before_backward():
    from core_test_layers import ScaleLayerImpl

    class WithScratchLayerImpl(ScaleLayerImpl):
        overwrites_backward_internals = ("kept", "no_such_internal")

        def setup(self, kwargs, in_shapes):
            outputs, parameters, internals = super().setup(kwargs, in_shapes)
            shape = in_shapes["default"].feature_shape
            internals["kept"] = BufferStructure("T", "B", *shape, is_backward_only=True)
            internals["zeroed"] = BufferStructure("T", "B", *shape, is_backward_only=True)
            internals["forward"] = BufferStructure("T", "B", *shape)
            return outputs, parameters, internals

    inp = bs.layers.Input({"default": ("T", "B", 3)})
    layer = ConstructionWrapper.create(WithScratchLayerImpl, name="Scratch")
    inp >> Scale(name="First") >> layer >> SumLoss()
    net = bs.Network.from_layer(layer)
    net.provide_external_data({"default": np.ones((2, 4, 3))})
    views = net.buffer.Scratch
    for view in (views.internals.kept, views.internals.zeroed, views.internals.forward):
        view[...] = 7.0
    net.buffer.First.output_deltas.default[...] = 7.0
    net.buffer_manager.clear_backward_buffers()
    assert np.all(views.internals.kept == 7.0)  # left for the layer to write
    assert np.all(views.internals.zeroed == 0.0)
    assert np.all(views.internals.forward == 7.0)  # forward internals are never zeroed
    assert np.all(net.buffer.First.output_deltas.default == 0.0)
    net.buffer_manager.resize(5, 2)  # the same after carving the views again
    views = net.buffer.Scratch
    views.internals.kept[...] = 7.0
    views.internals.zeroed[...] = 7.0
    net.buffer_manager.clear_backward_buffers()
    assert np.all(views.internals.kept == 7.0) and np.all(views.internals.zeroed == 0.0)
