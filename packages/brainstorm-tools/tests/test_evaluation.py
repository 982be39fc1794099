"""evaluate, extract and extract_and_save, checked against hand computations."""

import os

import h5py
import numpy as np
import pytest

import brainstorm as bs
from brainstorm.data_iterators import Minibatches, Undivided
from brainstorm.scorers import Accuracy, MeanSquaredError
from brainstorm.tools import evaluate, extract, extract_and_save, get_in_out_layers

N_IN, N_OUT = 4, 3


def softmax_net(mask_name=None):
    """Input -> linear projection -> SoftmaxCE, with known random weights."""
    inp, projection = get_in_out_layers("classification", N_IN, N_OUT, mask_name=mask_name)
    net = bs.Network.from_layer(inp >> projection)
    rng = np.random.RandomState(7)
    net.initialize({"Output_projection": {"W": rng.randn(N_OUT, N_IN), "bias": rng.randn(N_OUT)}})
    return net


def by_hand(net, x):
    """Softmax predictions of softmax_net for x (T, B, N_IN), in float64."""
    w = net.get("Output_projection.parameters.W").astype(np.float64)
    b = net.get("Output_projection.parameters.bias").astype(np.float64)
    z = x @ w.T + b
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.fixture
def data():
    rng = np.random.RandomState(3)
    x = rng.randn(2, 10, N_IN)
    t = rng.randint(0, N_OUT, (2, 10, 1))
    return x, t


def test_evaluate_against_hand_computation(data):
    x, t = data
    net = softmax_net()
    # batches of 4, 4 and 2 sequences: the averages must weight them correctly
    it = Minibatches(4, shuffle=False, default=x, targets=t)
    result = evaluate(net, it, scorers=[Accuracy()])
    assert list(result) == ["total_loss", "Accuracy"]

    p = by_hand(net, x)
    nll = -np.log(np.take_along_axis(p, t, axis=2))  # (T, B, 1)
    # the Loss layer sums over time and divides by the batch size: mean per sequence
    assert result["total_loss"] == pytest.approx(nll.sum() / 10, rel=1e-5)
    correct = p.argmax(axis=2) == t[:, :, 0]
    assert result["Accuracy"] == pytest.approx(correct.mean())
    # class ids against probabilities: a mean squared error would be meaningless
    with pytest.raises(ValueError, match="do not match the outputs"):
        evaluate(net, it, scorers=[MeanSquaredError()])


def test_evaluate_without_scorers_and_with_out_name(data):
    x, t = data
    net = softmax_net()
    result = evaluate(net, Undivided(default=x, targets=t))
    assert list(result) == ["total_loss"]
    result = evaluate(
        net,
        Undivided(default=x, targets=t),
        [Accuracy(name="acc")],
        out_name="Output.outputs.probabilities",
    )
    correct = by_hand(net, x).argmax(axis=2) == t[:, :, 0]
    assert result["acc"] == pytest.approx(correct.mean())


def test_evaluate_with_a_mask(data):
    x, t = data
    net = softmax_net(mask_name="mask")
    mask = np.ones((2, 10, 1))
    mask[1, ::2] = 0  # the second step of every other sequence does not count
    it = Minibatches(3, shuffle=False, default=x, targets=t, mask=mask)
    result = evaluate(net, it, [Accuracy()], mask_name="mask")
    p = by_hand(net, x)
    nll = -np.log(np.take_along_axis(p, t, axis=2))
    assert result["total_loss"] == pytest.approx((nll * mask).sum() / 10, rel=1e-5)
    correct = (p.argmax(axis=2) == t[:, :, 0])[:, :, None]
    assert result["Accuracy"] == pytest.approx((correct * mask).sum() / mask.sum())


def test_extract(data):
    x, _ = data
    net = softmax_net()
    # targets are not needed
    it = Minibatches(4, shuffle=False, default=x)
    result = extract(net, it, ["Output.outputs.predictions", "Output_projection.outputs.default"])
    assert set(result) == {"Output.outputs.predictions", "Output_projection.outputs.default"}
    assert result["Output.outputs.predictions"].shape == (2, 10, N_OUT)
    np.testing.assert_allclose(result["Output.outputs.predictions"], by_hand(net, x), rtol=1e-5)
    # a single name works too, and the reference's output name is an alias
    single = extract(net, it, "Output.outputs.probabilities")
    np.testing.assert_allclose(
        single["Output.outputs.probabilities"], result["Output.outputs.predictions"]
    )


def masked_sequences():
    """Data whose mask makes Minibatches cut the batches to different lengths."""
    rng = np.random.RandomState(5)
    x = rng.randn(5, 6, N_IN)
    t = rng.randint(0, N_OUT, (5, 6, 1))
    lengths = np.array([5, 2, 3, 1, 2, 4])
    mask = (np.arange(5)[:, None] < lengths[None, :]).astype(float)[:, :, None]
    return x, t, mask


def test_extract_with_a_mask():
    # the reference crashed here (PR #108): the batches have 5, 3 and 4 time steps
    x, t, mask = masked_sequences()
    net = softmax_net(mask_name="mask")
    it = Minibatches(2, shuffle=False, default=x, targets=t, mask=mask)
    result = extract(net, it, ["Output.outputs.predictions", "Input.outputs.mask"])
    p = result["Output.outputs.predictions"]
    assert p.shape == (5, 6, N_OUT)
    expected = by_hand(net, x)
    for batch, steps in enumerate([5, 3, 4]):
        cols = slice(2 * batch, 2 * batch + 2)
        np.testing.assert_allclose(p[:steps, cols], expected[:steps, cols], rtol=1e-5)
        assert np.all(p[steps:, cols] == 0)  # padding beyond the batch's length
    np.testing.assert_array_equal(result["Input.outputs.mask"], mask)


def test_extract_cuts_the_context_slot_of_recurrent_layers():
    rng = np.random.RandomState(0)
    x = rng.randn(3, 4, 2)
    inp, projection = get_in_out_layers("classification", 2, 3)
    net = bs.Network.from_layer(inp >> bs.layers.Recurrent(5, name="Rnn") >> projection)
    net.initialize(bs.initializers.Gaussian(0.3))
    result = extract(net, Minibatches(2, shuffle=False, default=x), ["Rnn.outputs.default"])
    assert result["Rnn.outputs.default"].shape == (3, 4, 5)
    net.provide_external_data({"default": x[:, 2:]}, all_inputs=False)
    net.forward_pass()
    np.testing.assert_allclose(
        result["Rnn.outputs.default"][:, 2:], net.get("Rnn.outputs.default")[:3], rtol=1e-6
    )


def test_extract_checks_the_names_first(data):
    x, _ = data
    net = softmax_net()

    class Exploding(Undivided):
        def __call__(self, handler=None):
            raise AssertionError("the data must not be touched before the names are checked")

    it = Exploding(default=x)
    with pytest.raises(KeyError, match="Layer 'Output' has no outputs buffer 'nothing'"):
        extract(net, it, ["Output.outputs.nothing"])
    with pytest.raises(KeyError, match="'Layer.category.name'"):
        extract(net, it, ["Nope.outputs.default"])
    with pytest.raises(KeyError, match="'Layer.category.name'"):
        extract(net, it, ["Output.predictions"])
    with pytest.raises(ValueError, match="does not depend on the data"):
        extract(net, it, ["Output_projection.parameters.W"])
    with pytest.raises(ValueError, match="does not depend on the data"):
        extract(net, it, ["Loss.outputs.loss"])
    with pytest.raises(ValueError, match="No buffer names"):
        extract(net, it, [])


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def read_buffers_file(path):
    with h5py.File(path, "r") as f:
        attrs = {key: text(value) for key, value in f.attrs.items()}
        data = {name: f[name][()] for name in f}
    return attrs, data


def test_extract_and_save(tmp_path, data):
    x, _ = data
    net = softmax_net()
    names = ["Output.outputs.predictions", "Output_projection.outputs.default"]
    target = tmp_path / "features.hdf5"
    extract_and_save(net, Minibatches(4, shuffle=False, default=x), names, str(target))
    attrs, saved = read_buffers_file(target)
    assert attrs["format"] == "Buffers file v1.0"
    assert attrs["info"].startswith("Created with brainstorm")
    assert set(saved) == set(names)
    expected = extract(net, Minibatches(4, shuffle=False, default=x), names)
    for name in names:
        assert saved[name].shape == expected[name].shape == (2, 10, N_OUT)
        np.testing.assert_allclose(saved[name], expected[name])
    assert os.listdir(tmp_path) == ["features.hdf5"]  # no temporary file left


def test_extract_and_save_with_a_mask(tmp_path):
    # batches of 5, 3 and 4 steps: the datasets grow along time and batch
    x, t, mask = masked_sequences()
    net = softmax_net(mask_name="mask")
    names = ["Output.outputs.predictions"]
    target = tmp_path / "masked.hdf5"
    it = Minibatches(2, shuffle=False, default=x, targets=t, mask=mask)
    extract_and_save(net, it, names, target)
    _, saved = read_buffers_file(target)
    expected = extract(net, it, names)
    np.testing.assert_allclose(saved[names[0]], expected[names[0]])
    # the first batch is the shortest one here: padding then grows the time axis
    it = Minibatches(2, shuffle=False, default=x[:, ::-1], targets=t, mask=mask[:, ::-1])
    extract_and_save(net, it, names, tmp_path / "reversed.hdf5")
    _, saved = read_buffers_file(tmp_path / "reversed.hdf5")
    np.testing.assert_allclose(saved[names[0]], extract(net, it, names)[names[0]])


def test_extract_and_save_is_atomic(tmp_path, data):
    x, _ = data
    net = softmax_net()
    target = tmp_path / "features.hdf5"
    target.write_bytes(b"precious")

    class Failing(Minibatches):
        def __call__(self, handler=None):
            yield from list(super().__call__(handler))[:1]
            raise RuntimeError("the data source broke")

    with pytest.raises(RuntimeError, match="broke"):
        extract_and_save(
            net, Failing(4, shuffle=False, default=x), ["Output.outputs.predictions"], target
        )
    assert target.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["features.hdf5"]
    with pytest.raises(KeyError):
        extract_and_save(net, Minibatches(4, default=x), ["Output.outputs.nope"], target)
    assert target.read_bytes() == b"precious"


def last_step_layer():
    """A layer with a batch-sized output ('B', F): the input's last time step."""
    from collections import OrderedDict

    from brainstorm.layers.base_layer import Layer
    from brainstorm.structure.buffer_structure import BufferStructure, StructureTemplate
    from brainstorm.structure.construction import ConstructionWrapper

    class LastStepLayerImpl(Layer):
        expected_inputs = {"default": StructureTemplate("T", "B", "F")}

        def setup(self, kwargs, in_shapes):
            size = in_shapes["default"].feature_size
            return OrderedDict(default=BufferStructure("B", size)), OrderedDict(), OrderedDict()

        def forward_pass(self, buffers, training_pass=True):
            x = buffers.inputs.default
            self.handler.copy_to(x[x.shape[0] - 1], buffers.outputs.default)

        def backward_pass(self, buffers):
            pass

    return ConstructionWrapper.create(LastStepLayerImpl, name="Last")


def test_extract_batch_sized_buffers(tmp_path):
    rng = np.random.RandomState(2)
    x = rng.randn(3, 7, 2)
    last = last_step_layer()
    bs.layers.Input({"default": ("T", "B", 2)}) >> last
    net = bs.Network.from_layer(last)
    it = Minibatches(3, shuffle=False, default=x)
    result = extract(net, it, ["Last.outputs.default"])
    np.testing.assert_array_equal(result["Last.outputs.default"], x[-1].astype(np.float32))
    extract_and_save(net, it, ["Last.outputs.default"], tmp_path / "last.hdf5")
    _, saved = read_buffers_file(tmp_path / "last.hdf5")
    np.testing.assert_array_equal(saved["Last.outputs.default"], x[-1].astype(np.float32))


def test_extract_and_save_file_permissions(tmp_path, data):
    x, _ = data
    target = tmp_path / "features.hdf5"
    extract_and_save(softmax_net(), Undivided(default=x), ["Output.outputs.predictions"], target)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
