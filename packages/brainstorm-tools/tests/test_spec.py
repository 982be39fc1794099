"""create_net_from_spec: the grammar, the errors, and the networks it builds."""

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.tools import SpecError, create_net_from_spec
from brainstorm.tools.spec import create_layer, parse_spec, trynumber


def kwargs_of(net, name):
    """The layer kwargs stored in the architecture (without the @ keys)."""
    return {k: v for k, v in net.architecture[name].items() if not k.startswith("@")}


def layer_types(net):
    return [(name, layer.type_name) for name, layer in net.layers.items()]


# ---------------------------------------------------------------- the documented networks


def test_mnist_pi_spec_builds_the_documented_network():
    net = create_net_from_spec("classification", 784, 10, "D.2 F1200 D F1200 D")
    assert layer_types(net) == [
        ("Input", "Input"),
        ("Dropout_1", "Dropout"),
        ("FullyConnected_1", "FullyConnected"),
        ("Dropout_2", "Dropout"),
        ("FullyConnected_2", "FullyConnected"),
        ("Dropout_3", "Dropout"),
        ("Output_projection", "FullyConnected"),
        ("Output", "SoftmaxCE"),
        ("Loss", "Loss"),
    ]
    assert kwargs_of(net, "Dropout_1") == {"drop_prob": 0.2}
    assert kwargs_of(net, "Dropout_2") == {"drop_prob": 0.5}
    assert kwargs_of(net, "Dropout_3") == {"drop_prob": 0.5}
    assert kwargs_of(net, "FullyConnected_1") == {"size": 1200, "activation": "rel"}
    assert kwargs_of(net, "FullyConnected_2") == {"size": 1200, "activation": "rel"}
    assert kwargs_of(net, "Output_projection") == {"size": 10, "activation": "linear"}
    assert kwargs_of(net, "Input")["out_shapes"] == {
        "default": ["T", "B", 784],
        "targets": ["T", "B", 1],
    }
    assert net.output_name == "Output.outputs.predictions"
    assert net.get("FullyConnected_1.parameters.W").shape == (1200, 784)


def test_mnist_pi_spec_initialization():
    bs.global_rnd.set_seed(1)
    net = create_net_from_spec("classification", 784, 10, "D.2 F1200 D F1200 D")
    assert net.initializers == {
        "FullyConnected_1": {"@type": "DenseSqrtFanInOut"},
        "FullyConnected_2": {"@type": "DenseSqrtFanInOut"},
        "Output_projection": {"@type": "DenseSqrtFanInOut", "scale": "linear"},
        "default": {"@type": "Gaussian", "std": 0.1},
        "fallback": {"@type": "Gaussian", "std": 0.1},
    }
    # DenseSqrtFanInOut('rel'): uniform within sqrt(12) / sqrt(n_in + n_out)
    w = net.get("FullyConnected_1.parameters.W")
    bound = np.sqrt(12) / np.sqrt(1200 + 784)
    assert np.abs(w).max() <= bound + 1e-6
    assert np.abs(w).max() > 0.9 * bound
    w = net.get("Output_projection.parameters.W")
    assert np.abs(w).max() <= 1 / np.sqrt(10 + 1200) + 1e-6
    # biases are 1-D: DenseSqrtFanInOut refuses them and the Gaussian fallback takes over
    bias = net.get("FullyConnected_1.parameters.bias")
    assert abs(bias.std() - 0.1) < 0.02
    assert np.abs(bias).max() > bound


def test_cifar10_cnn_spec_builds_the_documented_network():
    net = create_net_from_spec(
        "classification", (32, 32, 3), 10, "C32:5p2 P3s2 C32:5p2 P3s2 C64:5p2 P3s2 F64"
    )
    assert layer_types(net) == [
        ("Input", "Input"),
        ("Convolution2D_1", "Convolution2D"),
        ("Pooling2D_1", "Pooling2D"),
        ("Convolution2D_2", "Convolution2D"),
        ("Pooling2D_2", "Pooling2D"),
        ("Convolution2D_3", "Convolution2D"),
        ("Pooling2D_3", "Pooling2D"),
        ("FullyConnected", "FullyConnected"),
        ("Output_projection", "FullyConnected"),
        ("Output", "SoftmaxCE"),
        ("Loss", "Loss"),
    ]
    conv = {"kernel_size": [5, 5], "stride": [1, 1], "padding": 2, "activation": "rel"}
    assert kwargs_of(net, "Convolution2D_1") == dict(conv, num_filters=32)
    assert kwargs_of(net, "Convolution2D_2") == dict(conv, num_filters=32)
    assert kwargs_of(net, "Convolution2D_3") == dict(conv, num_filters=64)
    pool = {"kernel_size": [3, 3], "type": "max", "stride": [2, 2], "padding": 0}
    for name in ("Pooling2D_1", "Pooling2D_2", "Pooling2D_3"):
        assert kwargs_of(net, name) == pool
    assert kwargs_of(net, "FullyConnected") == {"size": 64, "activation": "rel"}
    shapes = {
        n: layer.out_shapes["default"].feature_shape
        for n, layer in net.layers.items()
        if "default" in layer.out_shapes
    }
    assert shapes["Convolution2D_1"] == (32, 32, 32)
    assert shapes["Pooling2D_1"] == (15, 15, 32)
    assert shapes["Pooling2D_3"] == (3, 3, 64)
    assert set(net.initializers) == {
        "Convolution2D_1",
        "Convolution2D_2",
        "Convolution2D_3",
        "FullyConnected",
        "Output_projection",
        "default",
        "fallback",
    }
    assert net.output_name == "Output.outputs.predictions"


def test_the_built_network_runs():
    net = create_net_from_spec("classification", (6, 6, 2), 3, "C4:3p1 Pa2s2 B F5 D")
    rng = np.random.RandomState(0)
    net.provide_external_data(
        {"default": rng.randn(1, 4, 6, 6, 2), "targets": rng.randint(0, 3, (1, 4, 1))}
    )
    net.forward_pass(training_pass=True)
    net.backward_pass()
    assert np.isfinite(net.get_loss_values()["total_loss"])
    assert net.get("Output.outputs.predictions").shape == (1, 4, 3)


@pytest.mark.parametrize(
    "task_type, out_layer, targets",
    [
        ("classification", "SoftmaxCE", 1),
        ("multi-label", "SigmoidCE", 4),
        ("regression", "SquaredError", 4),
    ],
)
def test_every_task_type_works(task_type, out_layer, targets):
    # the reference raised ValueError for 'regression'
    net = create_net_from_spec(task_type, 5, 4, "F3")
    assert net.layers["Output"].type_name == out_layer
    assert net.layers["Input"].out_shapes["targets"].feature_shape == (targets,)
    assert net.output_name == "Output.outputs.predictions"
    rng = np.random.RandomState(0)
    t = rng.randint(0, 2, (2, 3, targets)).astype(float)
    net.provide_external_data({"default": rng.randn(2, 3, 5), "targets": t})
    net.forward_pass()
    assert np.isfinite(net.get_loss_values()["total_loss"])


def test_unknown_task_type():
    with pytest.raises(ValueError, match="Unknown task type 'ranking'"):
        create_net_from_spec("ranking", 5, 4, "F3")


def test_mask_name_and_use_conv_are_passed_on():
    net = create_net_from_spec(
        "classification", (4, 4, 2), (4, 4, 3), "C2:3p1", mask_name="mask", use_conv=True
    )
    assert net.layers["Output_projection"].type_name == "Convolution2D"
    assert net.layers["Mask"].type_name == "Mask"
    assert set(net.layers["Input"].out_shapes) == {"default", "targets", "mask"}
    net = create_net_from_spec("regression", 5, 4, "F3", data_name="x", targets_name="y")
    assert set(net.layers["Input"].out_shapes) == {"x", "y"}


def test_recurrent_letters():
    net = create_net_from_spec("classification", 5, 4, "L7 Rs3 Lr2")
    assert layer_types(net)[1:4] == [
        ("Lstm_1", "Lstm"),
        ("Recurrent", "Recurrent"),
        ("Lstm_2", "Lstm"),
    ]
    assert kwargs_of(net, "Lstm_1")["size"] == 7
    assert kwargs_of(net, "Lstm_1")["activation"] == "tanh"
    assert kwargs_of(net, "Recurrent")["activation"] == "sigmoid"
    assert kwargs_of(net, "Lstm_2")["activation"] == "rel"
    assert "Lstm_1" in net.initializers


# ------------------------------------------------------------------------- the grammar


def spec_kwargs(spec):
    """(type, kwargs) of each layer the spec creates."""
    return [(w.layer.layer_type, w.layer.kwargs) for w in parse_spec(spec)]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("F100", [("FullyConnected", {"size": 100, "activation": "rel"})]),
        ("Fl5", [("FullyConnected", {"size": 5, "activation": "linear"})]),
        ("Fs5", [("FullyConnected", {"size": 5, "activation": "sigmoid"})]),
        ("Ft5", [("FullyConnected", {"size": 5, "activation": "tanh"})]),
        ("Fr5", [("FullyConnected", {"size": 5, "activation": "rel"})]),
        ("F+5", [("FullyConnected", {"size": 5, "activation": "rel"})]),
        ("B", [("BatchNorm", {"decay": 0.9, "epsilon": 1e-5})]),
        ("D", [("Dropout", {"drop_prob": 0.5})]),
        ("D.2", [("Dropout", {"drop_prob": 0.2})]),
        ("D0.25", [("Dropout", {"drop_prob": 0.25})]),
        ("D0.0", [("Dropout", {"drop_prob": 0.0})]),
        (
            "C32:3",
            [
                (
                    "Convolution2D",
                    {
                        "num_filters": 32,
                        "kernel_size": (3, 3),
                        "stride": (1, 1),
                        "padding": 0,
                        "activation": "rel",
                    },
                )
            ],
        ),
        (
            "Cs32:3s2p1",
            [
                (
                    "Convolution2D",
                    {
                        "num_filters": 32,
                        "kernel_size": (3, 3),
                        "stride": (2, 2),
                        "padding": 1,
                        "activation": "sigmoid",
                    },
                )
            ],
        ),
        (
            "Cl8/5|p2:s3",
            [
                (
                    "Convolution2D",
                    {
                        "num_filters": 8,
                        "kernel_size": (5, 5),
                        "stride": (3, 3),
                        "padding": 2,
                        "activation": "linear",
                    },
                )
            ],
        ),
        (
            "P3",
            [
                (
                    "Pooling2D",
                    {"kernel_size": (3, 3), "type": "max", "stride": (1, 1), "padding": 0},
                )
            ],
        ),
        (
            "Pa2s2",
            [
                (
                    "Pooling2D",
                    {"kernel_size": (2, 2), "type": "avg", "stride": (2, 2), "padding": 0},
                )
            ],
        ),
        (
            "Pm3p1s2",
            [
                (
                    "Pooling2D",
                    {"kernel_size": (3, 3), "type": "max", "stride": (2, 2), "padding": 1},
                )
            ],
        ),
        ("", []),
        ("   ", []),
    ],
)
def test_grammar(spec, expected):
    assert spec_kwargs(spec) == expected


def test_whitespace_is_ignored_but_separates_numbers():
    dense = spec_kwargs("C32:5p2P3s2F64D.5")
    spaced = spec_kwargs(" C 32 : 5 p 2 \t P3 s 2\nF 64  D .5 ")
    assert dense == spaced
    assert spec_kwargs("C32 5")[0][1]["kernel_size"] == (5, 5)  # same as C32:5
    # letters need no separation: B and D are two layers
    assert [t for t, _ in spec_kwargs("BD")] == ["BatchNorm", "Dropout"]


def test_recurrent_layers_from_spec():
    (lstm_type, lstm), (rec_type, rec) = spec_kwargs("L100 Rr20")
    assert (lstm_type, lstm["size"], lstm["activation"]) == ("Lstm", 100, "tanh")
    assert (rec_type, rec["size"], rec["activation"]) == ("Recurrent", 20, "rel")


def test_reference_helpers():
    assert trynumber("3") == 3 and isinstance(trynumber("3"), int)
    assert trynumber(".5") == 0.5
    assert trynumber("x") == "x"
    assert create_layer("F", ["s", 10]).layer.kwargs == {"size": 10, "activation": "sigmoid"}
    with pytest.raises(ValueError, match="Unknown layer type 'Q'"):
        create_layer("Q", [])
    with pytest.raises(ValueError, match="missing size"):
        create_layer("F", [])


def test_spec_must_be_a_string():
    with pytest.raises(TypeError, match="must be a string"):
        parse_spec(["F100"])


# --------------------------------------------------------------------------- the errors

# (spec, what the message says, position of the offending token, length of the marker)
ERRORS = [
    ("X3", "unknown layer type 'X'", 0, 1),
    ("F10 Q5", "unknown layer type 'Q'", 4, 1),
    ("F", "F (FullyConnected): missing size", 1, 1),
    ("D.2 F D", "F (FullyConnected): missing size", 5, 1),
    ("FC32", "F (FullyConnected): missing size", 1, 1),
    ("R", "R (Recurrent): missing size", 1, 1),
    ("Lt", "L (Lstm): missing size", 2, 1),
    ("F1.5", "size must be an integer, got 1.5", 1, 3),
    ("F10.0", "size must be an integer, got 10.0", 1, 4),
    ("F0", "size must be at least 1, got 0", 1, 1),
    ("F-3", "size must be at least 1, got -3", 1, 2),
    ("Fx10", "unknown activation 'x'", 1, 1),
    ("Fss10", "expected size (an integer) here, got the letter 's'", 2, 1),
    ("F10r", "unexpected extra argument 'r'", 3, 1),
    ("F10 20", "unexpected extra argument 20", 4, 2),
    ("B3", "B (BatchNorm): unexpected extra argument 3", 1, 1),
    ("Bt", "B (BatchNorm): unexpected extra argument 't'", 1, 1),
    ("D1", "dropout probability must be a decimal number", 1, 1),
    ("D0", "dropout probability must be a decimal number", 1, 1),
    ("D1.5", "dropout probability must be in [0, 1), got 1.5", 1, 3),
    ("D1.0", "dropout probability must be in [0, 1), got 1.0", 1, 3),
    ("Dx", "dropout probability must be a decimal number", 1, 1),
    ("D.2.3", "malformed number '.2.3'", 1, 4),
    ("D.5 .5", "D (Dropout): unexpected extra argument 0.5", 4, 2),
    ("C32", "C (Convolution2D): missing kernel size", 3, 1),
    ("C", "C (Convolution2D): missing num_filters", 1, 1),
    ("C32:3.5", "kernel size must be an integer, got 3.5", 4, 3),
    ("C32:5q", "unexpected argument 'q'", 5, 1),
    ("C32:5p", "missing padding", 6, 1),
    ("C32:5s", "missing stride", 6, 1),
    ("C32:5pp", "expected padding (an integer) here, got the letter 'p'", 6, 1),
    ("C32:5p1p2", "padding given twice", 7, 1),
    ("C32:5s0", "stride must be at least 1, got 0", 6, 1),
    ("C32:5p-1", "padding must be at least 0, got -1", 6, 2),
    ("C32:5p1.5", "padding must be an integer, got 1.5", 6, 3),
    ("C32:5 7", "unexpected argument 7", 6, 1),
    ("Cx32:5", "unknown activation 'x'", 1, 1),
    ("P", "P (Pooling2D): missing kernel size", 1, 1),
    ("Ps2", "unknown pooling type 's'", 1, 1),
    ("P3x", "unexpected argument 'x'", 2, 1),
    ("P3s2s2", "stride given twice", 4, 1),
    ("F10 #", "unexpected character '#'", 4, 1),
    ("F10,F20", "unexpected character ','", 3, 1),
    ("F1e3", "unexpected extra argument 'e'", 2, 1),
    ("32F", "expected a layer type (F R L B D C P) first, got '32'", 0, 2),
    ("f10", "expected a layer type (F R L B D C P) first, got 'f'", 0, 1),
    (":F3", "expected a layer type (F R L B D C P) first, got ':'", 0, 1),
    ("F:3", "unexpected separator ':'", 1, 1),
    ("C32::5", "unexpected separator ':'", 4, 1),
    ("F1.2.3", "malformed number '1.2.3'", 1, 5),
    ("F3.", "malformed number '3.'", 1, 2),
    ("F+", "unexpected character '+'", 1, 1),
]


@pytest.mark.parametrize("spec, reason, position, length", ERRORS, ids=[e[0] for e in ERRORS])
def test_malformed_specs_are_rejected_with_the_offending_token_marked(
    spec, reason, position, length
):
    with pytest.raises(ValueError) as info:
        create_net_from_spec("classification", 784, 10, spec)
    err = info.value
    assert isinstance(err, SpecError)
    assert reason in str(err)
    assert err.position == position
    lines = str(err).splitlines()
    assert lines[0].startswith("Malformed network spec: ")
    quoted = "".join(" " if ch.isspace() else ch for ch in spec)
    assert lines[1] == f"    '{quoted}'"
    # the carets stand under the offending token
    assert lines[2] == "    " + " " * (position + 1) + "^" * length


def test_spec_errors_survive_pickling():  # e.g. raised in a multiprocessing worker
    import pickle

    with pytest.raises(SpecError) as info:
        create_net_from_spec("classification", 4, 3, "F5 X3")
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value)
    assert (copy.spec, copy.position, copy.reason) == (
        info.value.spec,
        info.value.position,
        info.value.reason,
    )


def test_error_message_example_from_the_readme():
    with pytest.raises(ValueError) as info:
        create_net_from_spec("classification", 784, 10, "D.2 F1.5 D")
    assert str(info.value) == (
        "Malformed network spec: F (FullyConnected): size must be an integer, got 1.5 "
        "(at position 5)\n"
        "    'D.2 F1.5 D'\n"
        "          ^^^"
    )


def test_whitespace_in_the_quote_keeps_the_marker_aligned():
    with pytest.raises(SpecError) as info:
        parse_spec("F10\tD\nX")
    assert info.value.position == 6
    assert str(info.value).splitlines()[1:] == ["    'F10 D X'", "           ^"]


def test_a_malformed_spec_creates_no_layers_in_a_network():
    # the spec is parsed before the input and output layers are made
    with pytest.raises(SpecError):
        create_net_from_spec("classification", 784, 10, "F10 X")


def test_batch_norm_starts_as_identity_scale():
    net = create_net_from_spec("classification", 4, 3, "F5 B F5")
    assert np.all(net.get("BatchNorm.parameters.gamma") == 1)
    assert np.all(net.get("BatchNorm.parameters.beta") == 0)
