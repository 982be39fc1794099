"""Network: paths, data, passes, context, initialize, modifiers, HDF5 files."""

import json
import os

import h5py
import numpy as np
import pytest
from core_test_layers import Accumulate, Scale, SumLoss

import brainstorm as bs
from brainstorm.handlers import NumpyHandler
from brainstorm.initializers import Gaussian, Uniform
from brainstorm.utils import InitializationError, NetworkValidationError
from brainstorm.value_modifiers import ClipValues


def chain_net(features=3, handler=None):
    inp = bs.layers.Input({"default": ("T", "B", features)})
    inp >> Scale(name="A") >> Scale(name="B") >> SumLoss(name="Loss")
    return bs.Network.from_layer(inp, handler=handler)


def test_paths_and_passes(rng):
    net = chain_net(handler=NumpyHandler(np.float64))
    net.initialize({"A": 2.0, "B": [1.0, 2.0, 3.0]})
    x = rng.randn(4, 2, 3)
    net.provide_external_data({"default": x})
    net.forward_pass()
    assert np.allclose(net.get("A.outputs.default"), 2 * x)
    assert np.allclose(net.get("B.outputs.default"), 2 * x * [1, 2, 3])
    assert np.allclose(net.get("Loss.outputs.loss"), np.sum(2 * x * [1, 2, 3]) / 2)
    assert np.allclose(net.get_input("default"), x)
    assert np.allclose(net.get_inputs("default"), x)
    net.backward_pass()
    assert np.allclose(net.get("B.input_deltas.default"), 0.5 * np.array([1, 2, 3]))
    assert np.allclose(net.get("B.gradients.w"), np.sum(2 * x, axis=(0, 1)) / 2)
    assert np.allclose(net.get("A.gradients.w"), np.sum(x * [1, 2, 3], axis=(0, 1)) / 2)
    assert np.allclose(net.get("A.output_deltas.default"), net.get("B.input_deltas.default"))
    assert net.get("parameters").shape == (6,)
    assert np.allclose(net.get("gradients")[:3], net.get("A.gradients.w"))
    with pytest.raises(KeyError, match="group of buffers.*'default'"):
        net.get("A.outputs")
    with pytest.raises(KeyError, match="no entry 'Nope'"):
        net.get("Nope.outputs.default")


def test_inputs_alias_outputs_zero_copy():
    net = chain_net()
    a_out = net.buffer["A.outputs.default"]
    b_in = net.buffer.B.inputs.default
    assert np.shares_memory(a_out, b_in)
    assert net.get("parameters").dtype == np.float32


def test_concatenated_inputs(rng):
    inp = bs.layers.Input({"default": ("T", "B", 2)})
    a, b, c = Scale(name="A"), Scale(name="Bb"), Scale(name="C")
    inp >> a >> c
    inp >> b >> c
    c >> SumLoss()
    net = bs.Network.from_layer(c, handler=NumpyHandler(np.float64))
    net.initialize({"A": 1.0, "Bb": 3.0, "C": 1.0})
    assert net.buffer.C.inputs.default.shape[-1] == 4
    x = rng.randn(2, 3, 2)
    net.provide_external_data({"default": x})
    net.forward_pass()
    assert np.allclose(net.get("C.inputs.default"), np.concatenate([x, 3 * x], axis=-1))
    net.backward_pass()
    assert np.allclose(net.get("A.output_deltas.default"), 1 / 3)


def test_data_errors_name_the_problem(rng):
    net = chain_net()
    with pytest.raises(KeyError, match=r"Missing input data \['default'\]"):
        net.provide_external_data({"targets": rng.randn(1, 2, 3)})
    with pytest.raises(ValueError, match=r"'default' has shape \(1, 2, 4\).*\('T', 'B', 3\)"):
        net.provide_external_data({"default": rng.randn(1, 2, 4)})


def test_resize_between_batches(rng):
    net = chain_net(handler=NumpyHandler(np.float64))
    net.initialize(1.0)
    for shape in [(3, 2, 3), (1, 5, 3), (7, 1, 3)]:
        x = rng.randn(*shape)
        net.provide_external_data({"default": x})
        net.forward_pass()
        assert np.allclose(net.get("B.outputs.default"), x)


def test_context_continues_sequences(rng):
    inp = bs.layers.Input({"default": ("T", "B", 2)})
    inp >> Accumulate(name="Acc") >> SumLoss()
    net = bs.Network.from_layer(inp, handler=NumpyHandler(np.float64))
    x = rng.randn(6, 3, 2)
    net.provide_external_data({"default": x})
    net.forward_pass()
    full = net.get("Acc.outputs.default")[:6]
    net.provide_external_data({"default": x[:4]})
    net.forward_pass()
    context = net.get_context()
    assert list(context) == ["Acc.outputs.default"]
    net.provide_external_data({"default": x[4:]})
    net.forward_pass(context=context)
    assert np.allclose(net.get("Acc.outputs.default")[:2], full[4:])
    net.forward_pass()  # no context: starts from zero again
    assert not np.allclose(net.get("Acc.outputs.default")[:2], full[4:])


def test_initialize_patterns():
    inp = bs.layers.Input({"default": ("T", "B", 3)})
    inp >> Scale(name="Conv1") >> Scale(name="Conv2") >> Scale(name="FC") >> SumLoss()
    net = bs.Network.from_layer(inp)
    net.initialize({"Conv*": {"w": 1.0}, "default": 0.5}, FC=[1, 2, 3])
    assert np.all(net.get("Conv1.parameters.w") == 1.0)
    assert np.all(net.get("Conv2.parameters.w") == 1.0)
    assert np.all(net.get("FC.parameters.w") == [1, 2, 3])
    net.initialize({"FC": 2.0, "default": 0.0}, FC=3.0)  # keyword arguments win
    assert np.all(net.get("FC.parameters.w") == 3.0)
    with pytest.raises(NetworkValidationError, match="matches nothing"):
        net.initialize({"Nope*": 1.0, "default": 0})
    with pytest.raises(NetworkValidationError, match="No initializer for FC.w"):
        net.initialize({"Conv*": 1.0})
    with pytest.raises(NetworkValidationError, match="Multiple initializers"):
        net.initialize({"Conv*": 1.0, "Conv1": 2.0, "default": 0})


def test_initialize_fallback_and_seed():
    class Failing(Uniform):
        def __call__(self, shape):
            raise InitializationError("never works")

    net = chain_net()
    net.initialize(default=Failing(), fallback=0.25)
    assert np.all(net.get("parameters") == 0.25)
    net.initialize(Gaussian(), seed=7)
    first = net.get("parameters")
    net.initialize(Gaussian(), seed=7)
    assert np.array_equal(first, net.get("parameters"))


def test_weight_and_gradient_modifiers(rng):
    net = chain_net(handler=NumpyHandler(np.float64))
    net.initialize(5.0)
    net.set_weight_modifiers(A=ClipValues(-1, 1))
    net.apply_weight_modifiers()
    assert np.all(net.get("A.parameters.w") == 1.0)
    assert np.all(net.get("B.parameters.w") == 5.0)
    net.set_gradient_modifiers(default=ClipValues(-0.1, 0.1))
    net.provide_external_data({"default": rng.randn(2, 2, 3) * 10})
    net.forward_pass()
    net.backward_pass()
    assert np.all(np.abs(net.get("gradients")) <= 0.1 + 1e-12)


def test_start_weight_modifiers_lets_freeze_values_keep_the_starting_weights():
    from brainstorm.value_modifiers import FreezeValues

    net = chain_net(handler=NumpyHandler(np.float64))
    net.initialize(Gaussian(), seed=3)
    start = net.get("A.parameters.w")
    net.set_weight_modifiers(A=[FreezeValues(), ClipValues(-10, 10)])
    net.start_weight_modifiers()  # (ClipValues: nothing to start, nothing changed)
    assert np.array_equal(net.get("A.parameters.w"), start)
    net.buffer.A.parameters.w[...] = 0.5  # "an update"
    net.apply_weight_modifiers()
    assert np.array_equal(net.get("A.parameters.w"), start)


def test_gradient_modifiers_are_refused_as_weight_modifiers():
    from brainstorm.value_modifiers import L2Decay

    net = chain_net(handler=NumpyHandler(np.float64))
    with pytest.raises(TypeError, match="L2Decay .* set_gradient_modifiers"):
        net.set_weight_modifiers(A=L2Decay(0.1))
    net.set_gradient_modifiers(A=L2Decay(0.1))  # where it belongs


def test_save_and_load_round_trip(tmp_path, rng):
    net = chain_net()
    net.initialize(Gaussian())
    net.set_weight_modifiers(A=ClipValues(-1, 1))
    path = tmp_path / "net.hdf5"
    net.save_as_hdf5(path, comment="hello")
    assert os.listdir(tmp_path) == ["net.hdf5"]  # no temporary file left behind
    loaded = bs.Network.from_hdf5(path)
    assert np.array_equal(loaded.get("parameters"), net.get("parameters"))
    assert loaded.weight_modifiers["A"]["w"][0].low == -1
    x = rng.randn(2, 3, 3)
    for n in (net, loaded):
        n.provide_external_data({"default": x})
        n.forward_pass()
    assert np.allclose(net.get("B.outputs.default"), loaded.get("B.outputs.default"))
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] in (b"Network file v1.0", "Network file v1.0")
        assert f.attrs["comment"] in (b"hello", "hello")
        assert json.loads(f["description"][()])["@type"] == "Network"


def test_load_without_initialize(tmp_path):
    net = chain_net()
    net.handler.set_from_numpy(net.buffer.parameters, np.arange(6, dtype=np.float32))
    net.save_as_hdf5(tmp_path / "n.hdf5")
    loaded = bs.Network.from_hdf5(tmp_path / "n.hdf5")
    assert np.array_equal(loaded.get("parameters"), np.arange(6))


def test_bad_files_give_clear_errors(tmp_path):
    foreign = tmp_path / "foreign.hdf5"
    with h5py.File(foreign, "w") as f:
        f["data"] = [1, 2, 3]
    with pytest.raises(ValueError, match="not a brainstorm network file"):
        bs.Network.from_hdf5(foreign)
    good = tmp_path / "good.hdf5"
    chain_net().save_as_hdf5(good)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match="truncated or corrupt|corrupt"):
        bs.Network.from_hdf5(truncated)
    newer = tmp_path / "newer.hdf5"
    newer.write_bytes(good.read_bytes())
    with h5py.File(newer, "a") as f:
        f.attrs["format"] = b"Network file v2.0"
    with pytest.raises(ValueError, match="newer"):
        bs.Network.from_hdf5(newer)
    text = tmp_path / "text.hdf5"
    text.write_text("not hdf5 at all")
    with pytest.raises(ValueError, match="not a readable network file"):
        bs.Network.from_hdf5(text)


def test_crafted_file_cannot_import_modules(tmp_path):
    good = tmp_path / "good.hdf5"
    chain_net().save_as_hdf5(good)
    crafted = tmp_path / "crafted.hdf5"
    crafted.write_bytes(good.read_bytes())
    with h5py.File(crafted, "a") as f:
        description = json.loads(f["description"][()])
        description["architecture"]["A"]["@type"] = "os.system"
        description["handler"] = {"@type": "subprocess.Popen", "args": "touch pwned"}
        del f["description"]
        f["description"] = json.dumps(description).encode()
    with pytest.raises(Exception, match="os.system") as info:
        with pytest.warns(RuntimeWarning, match="subprocess.Popen"):
            bs.Network.from_hdf5(crafted)
    assert "Unknown" in str(info.value)
    assert not os.path.exists("pwned")


def test_set_handler_keeps_parameters(rng):
    net = chain_net()
    net.initialize(Gaussian())
    params = net.get("parameters")
    net.set_handler(NumpyHandler(np.float64))
    assert net.get("parameters").dtype == np.float64
    assert np.allclose(net.get("parameters"), params)


def test_network_description_round_trip():
    net = chain_net()
    net.initialize({"default": Gaussian(0.2)})
    description = bs.get_description(net)
    assert description["handler"] == {"@type": "NumpyHandler", "dtype": "float32"}
    assert description["initializers"]["default"]["@type"] == "Gaussian"
    clone = bs.create_from_description(json.loads(json.dumps(description)))
    assert list(clone.layers) == list(net.layers)


def test_full_buffer_of_layer_parameters():
    net = chain_net()
    net.initialize({"A": [1.0, 2.0, 3.0], "B": 0.5})
    full = net.buffer.A.parameters.full_buffer
    assert np.shares_memory(full, net.buffer.parameters)
    assert np.array_equal(full, [1, 2, 3])
    assert net.buffer.Input.parameters.full_buffer is None


def test_saved_file_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        chain_net().save_as_hdf5(tmp_path / "n.hdf5")
    finally:
        os.umask(old)
    assert (tmp_path / "n.hdf5").stat().st_mode & 0o777 == 0o644


def test_default_applies_only_where_no_explicit_key_matched():
    inp = bs.layers.Input({"default": ("T", "B", 3)})
    inp >> Scale(name="F1") >> Scale(name="F2") >> SumLoss()
    net = bs.Network.from_layer(inp)
    net.initialize({"F1": {"w": 1.0}, "F*": {"default": 3.0}, "default": 0.0})
    assert np.all(net.get("F1.parameters.w") == 1.0)
    assert np.all(net.get("F2.parameters.w") == 3.0)
    with pytest.raises(NetworkValidationError, match="Multiple initializers for F1.w"):
        net.initialize({"F*": 1.0, "F1": 2.0})
    clip = ClipValues(-1, 1)
    net.set_gradient_modifiers({"F*": clip, "F1": {"w": clip}, "default": ClipValues(-2, 2)})
    assert len(net.gradient_modifiers["F1"]["w"]) == 1  # one object, applied once
    assert net.gradient_modifiers["F2"]["w"][0].low == -1


def test_reserved_and_list_method_names():
    from brainstorm.utils import LayerValidationError

    with pytest.raises(LayerValidationError, match="Invalid layer name 'parameters'"):
        Scale(name="parameters")
    inp = bs.layers.Input({"default": ("T", "B", 3)})
    inp >> Scale(name="index") >> SumLoss(name="copy")
    net = bs.Network.from_layer(inp)
    assert net.buffer.index.parameters.w is net.buffer["index.parameters.w"]
    assert "loss" in net.buffer.copy.outputs.keys()


def test_children_named_like_the_views_own_methods():
    # keys/values/items are used by the network itself; names starting with _
    # must not overwrite the view's own data
    inp = bs.layers.Input({"default": ("T", "B", 2), "items": ("T", "B", 2), "keys": ("T", "B", 1)})
    inp >> Scale(name="_keys") >> SumLoss(name="values")
    net = bs.Network.from_layer(inp)
    net.set_handler(NumpyHandler(np.float64))
    assert net.buffer.Input.outputs.keys() == ["default", "items", "keys"]
    assert net.buffer.Input.outputs["items"].shape[-1] == 2
    assert {"_keys", "values"} <= {name for name, _ in net.buffer.items()}
    assert net.buffer["_keys.parameters.w"] is net.buffer["_keys"].parameters.w
    with pytest.raises(KeyError, match="group"):
        net.get("Input.outputs")
    view = net.buffer.Input.outputs
    with pytest.raises(AttributeError):
        view.items = None


def test_set_handler_keeps_data_and_sizes(rng):
    net = chain_net()
    net.initialize(1.0)
    x = rng.randn(6, 3, 3)
    net.provide_external_data({"default": x})
    net.set_handler(NumpyHandler(np.float64))
    net.forward_pass()
    assert np.allclose(net.get("B.outputs.default"), x)


def test_damaged_files_always_give_value_errors(tmp_path):
    good = tmp_path / "good.hdf5"
    chain_net().save_as_hdf5(good)
    data = bytearray(good.read_bytes())
    rng = np.random.RandomState(3)
    for i, position in enumerate(rng.choice(len(data), 40, replace=False)):
        damaged = bytearray(data)
        damaged[position] ^= 0xFF
        path = tmp_path / f"damaged{i}.hdf5"
        path.write_bytes(bytes(damaged))
        try:
            bs.Network.from_hdf5(path)
        except ValueError:
            pass


def test_compute_data_deltas_flag_marks_inputs_fed_by_the_data():
    net = chain_net()
    assert net.compute_data_deltas
    assert all(not layer.inputs_without_deltas for layer in net.layers.values())
    net.compute_data_deltas = False
    assert net.layers["A"].inputs_without_deltas == {"default"}
    assert not net.layers["B"].inputs_without_deltas
    net.compute_data_deltas = True
    assert not net.layers["A"].inputs_without_deltas


def test_missing_inputs_are_zero_filled_when_allowed(rng):
    inp = bs.layers.Input({"default": ("T", "B", 3), "targets": ("T", "B", 3)})
    inp >> Scale(name="A") >> SumLoss()
    net = bs.Network.from_layer(inp)
    net.provide_external_data({"default": rng.randn(2, 2, 3), "targets": rng.randn(2, 2, 3)})
    net.provide_external_data({"default": rng.randn(2, 2, 3)}, all_inputs=False)
    assert np.all(net.get_input("targets") == 0)


def test_clear_errors_for_handler_classes_contexts_and_missing_folders(tmp_path):
    with pytest.raises(TypeError, match="the class NumpyHandler"):
        chain_net(handler=NumpyHandler)
    net = chain_net()
    with pytest.raises(TypeError, match="handler object"):
        net.set_handler("numpy")
    with pytest.raises(TypeError, match="context must be what net.get_context"):
        net.forward_pass(context=True)
    with pytest.raises(FileNotFoundError, match="the folder .*nope does not exist"):
        net.save_as_hdf5(tmp_path / "nope" / "net.hdf5")


def test_index_errors_name_the_layer():
    net = chain_net()
    net.initialize(1.0)
    net.provide_external_data({"default": np.ones((1, 2, 3))})

    def broken(buffers, training_pass=True):
        raise IndexError("id 7 is out of range")

    net.layers["B"].forward_pass = broken
    with pytest.raises(IndexError, match=r"Layer 'B' \(.*\): id 7 is out of range"):
        net.forward_pass()


def test_provide_external_data_wants_a_dict_and_takes_nested_lists():
    net = chain_net()
    with pytest.raises(TypeError, match="needs a dict of input name -> array, got ndarray"):
        net.provide_external_data(np.ones((1, 2, 3)))
    net.provide_external_data({"default": [[[1.0, 2.0, 3.0]]]})
    net.forward_pass()
    assert net.get("Input.outputs.default").tolist() == [[[1.0, 2.0, 3.0]]]
