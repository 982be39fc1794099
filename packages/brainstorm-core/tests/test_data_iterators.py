"""Behaviour of the data iterators and their wrappers."""

import json

import numpy as np
import pytest

from brainstorm.data_iterators import (
    AddGaussianNoise,
    AddSaltNPepper,
    DataIterator,
    Flip,
    Minibatches,
    MultiHot,
    OneHot,
    Online,
    Pad,
    RandomCrop,
    Undivided,
)
from brainstorm.describable import create_from_description, get_description
from brainstorm.randomness import global_rnd
from brainstorm.utils import IteratorValidationError


@pytest.fixture(autouse=True)
def _reproducible_randomness():
    """Statistical checks below use wide margins; seeding makes them deterministic too."""
    global_rnd.set_seed(20240601)


def sequences(t=5, b=7, f=2):
    """Data whose values identify (time, sequence, feature)."""
    return (
        np.arange(t)[:, None, None] * 100 + np.arange(b)[None, :, None] * 10 + np.arange(f)
    ).astype(np.float64)


def masks_for(lengths, t):
    mask = np.zeros((t, len(lengths), 1))
    for i, n in enumerate(lengths):
        mask[:n, i] = 1
    return mask


def images(t=1, n=4, h=3, w=5, c=2):
    return np.arange(t * n * h * w * c, dtype=np.float64).reshape(t, n, h, w, c)


# ############################ Undivided ######################################


def test_undivided_yields_everything_once():
    x, y = sequences(), sequences(f=1)
    it = Undivided(default=x, targets=y)
    assert it.length == 1
    assert it.data_shapes == {"default": (5, 7, 2), "targets": (5, 7, 1)}
    batches = list(it(None))
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0]["default"], x)
    np.testing.assert_array_equal(batches[0]["targets"], y)


def test_undivided_yields_a_fresh_dict_every_pass():
    it = Undivided(default=sequences())
    first = next(it(None))
    first["default"] = None
    first["extra"] = 1
    second = next(it(None))
    assert set(second) == {"default"} and second["default"] is not None


# ############################ validation #####################################


@pytest.mark.parametrize("cls", [Undivided, Minibatches, Online])
def test_data_must_be_at_least_3d(cls):
    with pytest.raises(IteratorValidationError, match=r"'targets' must have at least 3.*\(7, 1\)"):
        cls(default=sequences(), targets=np.zeros((7, 1)))


@pytest.mark.parametrize("cls", [Undivided, Minibatches])
def test_differing_time_or_batch_sizes_are_rejected(cls):
    with pytest.raises(IteratorValidationError, match="same number of sequences"):
        cls(default=sequences(b=7), targets=sequences(b=6))
    with pytest.raises(IteratorValidationError, match="same number of time steps"):
        cls(default=sequences(t=5), targets=sequences(t=4))


def test_named_data_must_be_arrays_and_present():
    with pytest.raises(IteratorValidationError, match="'default' must be an array"):
        Undivided(default=[[[1.0]]])
    with pytest.raises(IteratorValidationError, match="no named data"):
        Minibatches(3)


def test_batch_size_must_be_a_positive_int():
    with pytest.raises(IteratorValidationError, match="positive"):
        Minibatches(0, default=sequences())
    with pytest.raises(IteratorValidationError, match="must be an int"):
        Minibatches(2.5, default=sequences())


# ############################ Minibatches ####################################


def test_minibatches_in_order_without_shuffle():
    x = sequences(b=7)
    it = Minibatches(3, shuffle=False, default=x)
    assert it.length == 3  # ceil(7 / 3)
    batches = [b["default"] for b in it(None)]
    assert [b.shape for b in batches] == [(5, 3, 2), (5, 3, 2), (5, 1, 2)]
    np.testing.assert_array_equal(np.concatenate(batches, axis=1), x)


def test_shuffle_permutes_batches_but_never_their_contents():
    x = sequences(b=10)
    it = Minibatches(2, shuffle=True, default=x)
    seen_orders = set()
    for _ in range(6):
        batches = [b["default"] for b in it(None)]
        firsts = [int(b[0, 0, 0]) // 10 for b in batches]  # first sequence of each batch
        assert sorted(firsts) == [0, 2, 4, 6, 8]  # every batch exactly once
        for b in batches:
            first = int(b[0, 0, 0]) // 10
            np.testing.assert_array_equal(b, x[:, first : first + 2])  # unchanged contents
        seen_orders.add(tuple(firsts))
    assert len(seen_orders) > 1


def test_shuffle_is_reproducible_from_the_random_state():
    it = Minibatches(1, default=sequences(b=20))
    it.rnd.set_seed(3)
    first = [int(b["default"][0, 0, 0]) for b in it(None)]
    it.rnd.set_seed(3)
    assert [int(b["default"][0, 0, 0]) for b in it(None)] == first


def test_cut_according_to_mask():
    lengths = [2, 5, 1, 3, 0, 0]
    mask = masks_for(lengths, t=6)
    x = sequences(t=6, b=6)
    it = Minibatches(2, shuffle=False, default=x, mask=mask)
    batches = list(it(None))
    assert [b["default"].shape[0] for b in batches] == [5, 3, 1]  # at least one step
    assert [b["mask"].shape[0] for b in batches] == [5, 3, 1]
    np.testing.assert_array_equal(batches[1]["default"], x[:3, 2:4])


def test_cut_according_to_a_mask_with_gaps_uses_the_last_non_zero_step():
    mask = np.zeros((6, 2, 1))
    mask[0, 0] = mask[3, 0] = 1  # non-zero at steps 0 and 3 -> length 4
    mask[1, 1] = 1
    it = Minibatches(1, shuffle=False, default=sequences(t=6, b=2), mask=mask)
    assert [b["default"].shape[0] for b in it(None)] == [4, 2]


def test_cut_according_to_another_data_item():
    targets = np.zeros((6, 4, 3))
    targets[:2, 0, 1] = 1
    targets[:4, 1, 0] = 1
    targets[:6, 2, 2] = 1
    targets[:1, 3, 0] = 1
    it = Minibatches(
        2, shuffle=False, cut_according_to="targets", default=sequences(t=6, b=4), targets=targets
    )
    assert [b["default"].shape[0] for b in it(None)] == [4, 6]


def test_cut_according_to_explicit_lengths():
    it = Minibatches(
        2, shuffle=False, cut_according_to=[1, 2, 3, 1, 4], default=sequences(t=5, b=5)
    )
    assert [b["default"].shape[0] for b in it(None)] == [2, 3, 4]


def test_full_length_without_mask_or_with_none():
    mask = masks_for([1, 1], t=5)
    assert [b["default"].shape[0] for b in Minibatches(1, default=sequences(b=2))(None)] == [5, 5]
    it = Minibatches(1, cut_according_to=None, default=sequences(b=2), mask=mask)
    assert [b["default"].shape[0] for b in it(None)] == [5, 5]


def test_bad_cut_according_to_is_a_clear_error():
    with pytest.raises(IteratorValidationError, match="unknown data item 'msk'"):
        Minibatches(2, cut_according_to="msk", default=sequences())
    with pytest.raises(IteratorValidationError, match="7 integer sequence lengths"):
        Minibatches(2, cut_according_to=[1, 2], default=sequences(b=7))
    with pytest.raises(IteratorValidationError, match=r"lie in \[0, 5\]"):
        Minibatches(2, cut_according_to=[9] * 7, default=sequences(t=5, b=7))


def test_online_is_one_sequence_at_a_time():
    x = sequences(t=4, b=3)
    it = Online(shuffle=False, default=x, mask=masks_for([2, 4, 1], t=4))
    assert it.length == 3
    batches = [b["default"] for b in it(None)]
    assert [b.shape for b in batches] == [(2, 1, 2), (4, 1, 2), (1, 1, 2)]
    np.testing.assert_array_equal(batches[1], x[:, 1:2])


def test_h5py_datasets_are_read_batch_by_batch(tmp_path):
    h5py = pytest.importorskip("h5py")
    x = sequences(t=4, b=5)
    with h5py.File(tmp_path / "demo.hdf5", "w") as f:
        f["training/input_data"] = x
        f["training/targets"] = sequences(t=4, b=5, f=1)
        f["training/mask"] = masks_for([1, 2, 3, 4, 4], t=4)
    with h5py.File(tmp_path / "demo.hdf5", "r") as ds:
        it = Minibatches(2, shuffle=False, **ds["training"])
        batches = list(it(None))
        assert set(batches[0]) == {"input_data", "targets", "mask"}
        assert all(isinstance(v, np.ndarray) for b in batches for v in b.values())
        np.testing.assert_array_equal(batches[0]["input_data"], x[:2, 0:2])
        np.testing.assert_array_equal(batches[2]["input_data"], x[:, 4:5])
        whole = next(Undivided(**ds["training"])(None))
        assert isinstance(whole["input_data"], np.ndarray)
        np.testing.assert_array_equal(whole["input_data"], x)
        assert len(list(Online(**ds["training"])(None))) == 5


# ############################ descriptions ###################################


def test_descriptions_never_embed_data():
    big = np.zeros((2, 50, 3))
    it = Flip(
        Minibatches(10, default=np.zeros((1, 50, 4, 4, 1)), targets=big[:1], mask=big[:1, :, :1])
    )
    description = get_description(it)
    text = json.dumps(description)
    assert len(text) < 600
    inner = description["iter"]
    assert inner["@type"] == "Minibatches"
    assert inner["batch_size"] == 10 and inner["shuffle"] is True
    assert inner["cut_according_to"] == "mask"
    assert inner["data_shapes"]["default"] == [1, 50, 4, 4, 1]
    explicit = Minibatches(5, cut_according_to=[1, 2] * 25, default=big)
    assert "cut_according_to" not in get_description(explicit)
    assert "data" not in get_description(Undivided(default=big))


def test_rebuilt_iterator_explains_that_it_has_no_data():
    description = get_description(Minibatches(2, default=sequences()))
    rebuilt = create_from_description(description)
    assert rebuilt.batch_size == 2 and rebuilt.length == 4
    with pytest.raises(IteratorValidationError, match="rebuilt from a description"):
        list(rebuilt(None))


# ############################ noise wrappers #################################


def test_add_gaussian_noise_statistics_and_untouched_items():
    x = np.zeros((1, 20000, 2))
    t = np.ones((1, 20000, 1))
    it = AddGaussianNoise(Undivided(default=x, targets=t), {"default": 0.5}, {"default": 1.0})
    batch = next(it(None))
    assert batch["default"].mean() == pytest.approx(1.0, abs=0.02)
    assert batch["default"].std() == pytest.approx(0.5, rel=0.02)
    np.testing.assert_array_equal(batch["targets"], t)
    np.testing.assert_array_equal(x, 0.0)  # the original data is not changed
    again = next(it(None))
    assert not np.array_equal(again["default"], batch["default"])


def test_add_gaussian_noise_validation():
    base = Undivided(default=sequences())
    with pytest.raises(IteratorValidationError, match="unknown data item 'input'"):
        AddGaussianNoise(base, {"input": 0.1})
    with pytest.raises(IteratorValidationError, match="mean given for"):
        AddGaussianNoise(Undivided(default=sequences(), t=sequences()), {"default": 1}, {"t": 1})
    with pytest.raises(IteratorValidationError, match="wraps a DataIterator"):
        AddGaussianNoise({"default": sequences()}, {"default": 0.1})


def test_salt_and_pepper():
    x = np.full((1, 100000, 1), 0.5)
    it = AddSaltNPepper(Undivided(default=x), {"default": 0.2}, {"default": 0.25})
    noisy = next(it(None))["default"]
    assert np.mean(noisy == 1.0) == pytest.approx(0.05, abs=0.005)
    assert np.mean(noisy == 0.0) == pytest.approx(0.15, abs=0.005)
    assert np.mean(noisy == 0.5) == pytest.approx(0.8, abs=0.005)
    np.testing.assert_array_equal(x, 0.5)
    with pytest.raises(IteratorValidationError, match=r"probability for 'default' must lie"):
        AddSaltNPepper(Undivided(default=x), {"default": 1.5})


# ############################ image wrappers #################################


def test_flip_flips_width_of_chosen_samples_only():
    x = images(t=2, n=40)
    original = x.copy()
    it = Flip(Undivided(default=x))  # default: 'default' with probability 0.5
    flipped = next(it(None))["default"]
    np.testing.assert_array_equal(x, original)  # caller's data untouched
    was_flipped = []
    for i in range(40):
        if np.array_equal(flipped[:, i], x[:, i]):
            was_flipped.append(False)
        else:
            np.testing.assert_array_equal(flipped[:, i], x[:, i, :, ::-1, :])
            was_flipped.append(True)
    assert 5 < sum(was_flipped) < 35


def test_flip_probabilities_zero_and_one():
    x = images()
    always = next(Flip(Undivided(default=x), {"default": 1.0})(None))["default"]
    np.testing.assert_array_equal(always, x[:, :, :, ::-1, :])
    never = next(Flip(Undivided(default=x), {"default": 0.0})(None))["default"]
    np.testing.assert_array_equal(never, x)


def test_image_wrappers_need_5d_data():
    base = Undivided(default=sequences())
    for make in (
        lambda: Flip(base),
        lambda: Pad(base, {"default": 1}),
        lambda: RandomCrop(base, {"default": (1, 1)}),
    ):
        with pytest.raises(IteratorValidationError, match=r"must be 5-D \(T, N, H, W, C\)"):
            make()


def test_pad_pads_height_and_width_keeping_dtype():
    x = np.ones((2, 3, 4, 5, 2), dtype=np.float32)
    it = Pad(Undivided(default=x), {"default": 2}, {"default": -1})
    assert it.data_shapes["default"] == (2, 3, 8, 9, 2)
    padded = next(it(None))["default"]
    assert padded.shape == (2, 3, 8, 9, 2) and padded.dtype == np.float32
    np.testing.assert_array_equal(padded[:, :, 2:6, 2:7], 1.0)
    assert (padded == -1).sum() == padded.size - x.size
    zero = next(Pad(Undivided(default=x), {"default": 0})(None))["default"]
    np.testing.assert_array_equal(zero, x)
    with pytest.raises(IteratorValidationError, match="non-negative int"):
        Pad(Undivided(default=x), {"default": -1})


def test_random_crop_crops_windows_of_the_originals():
    x = images(t=2, n=30, h=6, w=7, c=2)
    it = RandomCrop(Undivided(default=x), {"default": (3, 4)})
    assert it.data_shapes["default"] == (2, 30, 3, 4, 2)
    crops = next(it(None))["default"]
    assert crops.shape == (2, 30, 3, 4, 2)
    corners = set()
    for i in range(30):
        matches = [
            (r, c)
            for r in range(4)
            for c in range(4)
            if np.array_equal(crops[:, i], x[:, i, r : r + 3, c : c + 4])
        ]
        assert len(matches) == 1  # the same window for every time step
        corners.add(matches[0])
    assert len(corners) > 5  # every sample gets its own corner


def test_random_crop_full_size_and_validation():
    x = images(h=3, w=5)
    same = next(RandomCrop(Undivided(default=x), {"default": (3, 5)})(None))["default"]
    np.testing.assert_array_equal(same, x)
    with pytest.raises(IteratorValidationError, match="does not fit"):
        RandomCrop(Undivided(default=x), {"default": (4, 2)})
    with pytest.raises(IteratorValidationError, match="pair of ints"):
        RandomCrop(Undivided(default=x), {"default": 3})


def test_image_pipeline_over_minibatches():
    x = images(n=8, h=4, w=4, c=1)
    it = RandomCrop(Pad(Minibatches(3, default=x), {"default": 1}), {"default": (4, 4)})
    shapes = [b["default"].shape for b in it(None)]
    assert sorted(shapes) == [(1, 2, 4, 4, 1), (1, 3, 4, 4, 1), (1, 3, 4, 4, 1)]


# ############################ OneHot / MultiHot ##############################


def test_one_hot_yields_once_per_batch_for_several_names():
    a = np.array([[[0], [2]], [[1], [1]]])
    b = np.array([[[3], [0]], [[0], [3]]])
    it = OneHot(Minibatches(1, shuffle=False, a=a, b=b, c=a), {"a": 3, "b": 4})
    assert it.data_shapes == {"a": (2, 2, 3), "b": (2, 2, 4), "c": (2, 2, 1)}
    batches = list(it(None))
    assert len(batches) == 2 == it.length
    first = batches[0]
    assert first["a"].dtype == bool and first["a"].shape == (2, 1, 3)
    np.testing.assert_array_equal(first["a"][:, 0], [[1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(first["b"][:, 0], [[0, 0, 0, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(first["c"], a[:, :1])  # not converted


def test_one_hot_validation():
    good = np.zeros((2, 3, 1), dtype=int)
    with pytest.raises(IteratorValidationError, match=r"shape \(T, B, 1\)"):
        OneHot(Undivided(default=np.zeros((2, 3, 2), dtype=int)), {"default": 4})
    with pytest.raises(IteratorValidationError, match="positive int"):
        OneHot(Undivided(default=good), {"default": 2.5})
    with pytest.raises(IteratorValidationError, match="unknown data item"):
        OneHot(Undivided(default=good), {"targets": 3})
    it = OneHot(Undivided(default=good + 5), {"default": 3})
    with pytest.raises(IteratorValidationError, match=r"lie in \[0, 3\)"):
        list(it(None))


def test_multi_hot():
    x = np.array([[[0, 2], [1, 1]]])  # (T=1, B=2, K=2)
    it = MultiHot(Undivided(default=x, targets=x), {"default": 4, "targets": 3})
    batches = list(it(None))
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0]["default"][0], [[1, 0, 1, 0], [0, 1, 0, 0]])
    assert batches[0]["targets"].shape == (1, 2, 3)
    with pytest.raises(IteratorValidationError, match=r"must be 3-D"):
        MultiHot(Undivided(default=np.zeros((1, 2, 1, 1), dtype=int)), {"default": 3})


# ############################ misc ###########################################


def test_wrappers_have_their_own_random_state_and_length():
    base = Minibatches(2, default=images(n=6))
    flip = Flip(base)
    assert flip.length == base.length == 3
    assert flip.rnd is not base.rnd


def test_public_api():
    import brainstorm.data_iterators as mod

    assert set(mod.__all__) == {
        "DataIterator",
        "Undivided",
        "Minibatches",
        "Online",
        "AddGaussianNoise",
        "AddSaltNPepper",
        "Flip",
        "Pad",
        "RandomCrop",
        "OneHot",
        "MultiHot",
    }
    with pytest.raises(NotImplementedError):
        DataIterator({}, 0)(None)


def test_data_without_sequences_is_refused():
    from brainstorm.data_iterators import IteratorValidationError, Minibatches

    with pytest.raises(IteratorValidationError, match="no sequences"):
        Minibatches(10, default=np.zeros((1, 0, 3)))
