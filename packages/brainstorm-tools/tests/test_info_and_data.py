"""get_network_info, print_network_info, shuffle_data and split."""

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.tools import (
    create_net_from_spec,
    get_network_info,
    print_network_info,
    shuffle_data,
    split,
)


@pytest.fixture
def net():
    return create_net_from_spec("classification", (6, 6, 1), 3, "C2:3 F5")


def test_network_info(net):
    info = get_network_info(net)
    lines = info.splitlines()
    # conv: 2*3*3*1 + 2 = 20, fc: 5*32 + 5 = 165, projection: 3*5 + 3 = 18
    assert lines[0] == "total number of parameters: 203"
    assert net.buffer.parameters.size == 203
    names = [line.split(" (")[0] for line in lines if line and not line.startswith((" ", "-", "t"))]
    assert names == list(net.layers)
    block = info.split("Convolution2D (Convolution2D)\n")[1].split("-" * 80)[0]
    assert block.splitlines() == [
        "  parameters:",
        "    W: (2, 3, 3, 1)",
        "    bias: (2,)",
        "  number of parameters: 20",
        "  input shapes:",
        "    default: (6, 6, 1)",
        "  output shapes:",
        "    default: (4, 4, 2)",
    ]
    block = info.split("Output (SoftmaxCE)\n")[1].split("-" * 80)[0]
    assert block.splitlines() == [
        "  parameters:",
        "    (none)",
        "  number of parameters: 0",
        "  input shapes:",
        "    default: (3,)",
        "    targets: (1,)",
        "  output shapes:",
        "    predictions: (3,)",
        "    loss: (1,)",
    ]
    assert "Input (Input)\n  parameters:\n    (none)\n" in info
    assert "FullyConnected (FullyConnected)\n" in info and "    W: (5, 32)\n" in info


def test_print_network_info(net, capsys):
    print_network_info(net)
    out = capsys.readouterr().out
    assert out.startswith("=" * 30 + " Network information " + "=" * 30 + "\n")
    assert out.endswith(get_network_info(net))


def test_shuffle_data():
    x = np.arange(2 * 10 * 3).reshape(2, 10, 3)
    t = np.arange(10).reshape(1, 10, 1)
    xs, none, ts = shuffle_data(x, None, t, seed=42)
    assert none is None
    assert xs.shape == x.shape and ts.shape == t.shape
    assert not np.array_equal(ts, t)
    order = ts[0, :, 0]
    assert sorted(order) == list(range(10))
    np.testing.assert_array_equal(xs, x[:, order])  # the same permutation for every array
    # reproducible with a seed, and the inputs are left alone
    again = shuffle_data(x, None, t, seed=42)
    np.testing.assert_array_equal(again[2], ts)
    assert np.array_equal(t[0, :, 0], np.arange(10))
    different = shuffle_data(t, seed=43)[0]
    assert not np.array_equal(different, ts)


def test_shuffle_data_follows_the_global_seed():
    t = np.arange(20).reshape(1, 20, 1)
    bs.global_rnd.set_seed(7)
    first = shuffle_data(t)[0]
    bs.global_rnd.set_seed(7)
    np.testing.assert_array_equal(shuffle_data(t)[0], first)


def test_shuffle_data_errors():
    with pytest.raises(ValueError, match="number of sequences"):
        shuffle_data(np.zeros((1, 4, 1)), np.zeros((1, 5, 1)))
    with pytest.raises(ValueError, match="at least 2 axes"):
        shuffle_data(np.zeros(4))
    with pytest.raises(ValueError, match="no arrays"):
        shuffle_data(None)


def test_split():
    x = np.arange(2 * 10).reshape(2, 10, 1)
    t = np.arange(10).reshape(1, 10, 1)
    (x1, n1, t1), (x2, n2, t2) = split(x, None, t)
    assert n1 is None and n2 is None
    np.testing.assert_array_equal(x1, x[:, :9])
    np.testing.assert_array_equal(x2, x[:, 9:])
    np.testing.assert_array_equal(t1, t[:, :9])
    np.testing.assert_array_equal(t2, t[:, 9:])
    parts = split(t, ratios=(2, 1, 1))
    assert [p[0].shape[1] for p in parts] == [5, 3, 2]  # stops 5, round(7.5) = 8, 10
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts], axis=1), t)
    parts = split(t, ratios=[0.5, 0.5])
    assert [p[0].shape[1] for p in parts] == [5, 5]


def test_split_errors():
    t = np.zeros((1, 10, 1))
    with pytest.raises(ValueError, match="number of sequences"):
        split(t, np.zeros((1, 3, 1)))
    with pytest.raises(ValueError, match="ratios"):
        split(t, ratios=(1, -1))
    with pytest.raises(ValueError, match="ratios"):
        split(t, ratios=(0, 0))
    with pytest.raises(ValueError, match="ratios"):
        split(t, ratios=())


def test_the_tools_namespace():
    import brainstorm.tools as tools

    assert set(tools.__all__) >= {
        "draw_network",
        "evaluate",
        "extract",
        "extract_and_save",
        "print_network_info",
        "get_in_out_layers",
        "create_net_from_spec",
        "get_network_info",
        "shuffle_data",
        "split",
    }
    for name in tools.__all__:
        assert callable(getattr(bs.tools, name)), name
    # the reference's spec helpers stay importable
    assert tools.act_funcs == {"l": "linear", "r": "rel", "s": "sigmoid", "t": "tanh"}
    assert tools.F(["t", 3]).layer.kwargs == {"size": 3, "activation": "tanh"}
