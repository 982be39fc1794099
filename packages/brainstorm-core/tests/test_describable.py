"""Descriptions and randomness."""

import json
import pickle

import numpy as np
import pytest

import brainstorm as bs
from brainstorm.describable import Describable, create_from_description, get_description
from brainstorm.randomness import RandomState, Seedable, global_rnd


class Thing(Describable):
    __undescribed__ = {"cache": 7}
    __default_values__ = {"flag": False}

    def __init__(self, a, b=(1, 2), flag=False):
        self.a = a
        self.b = b
        self.flag = flag
        self.cache = "big"


class Holder(Seedable):
    def __init__(self, thing, seed=None):
        super().__init__(seed)
        self.thing = thing


def test_description_round_trip():
    d = get_description(Holder(Thing(np.arange(3), flag=True)))
    assert d == {
        "@type": "Holder",
        "thing": {"@type": "Thing", "a": [0, 1, 2], "b": [1, 2], "flag": True},
    }
    obj = create_from_description(json.loads(json.dumps(d)))
    assert isinstance(obj, Holder) and isinstance(obj.thing, Thing)
    assert obj.thing.cache == 7 and obj.thing.flag is True
    assert isinstance(obj.rnd, RandomState)


def test_default_values_left_out():
    assert "flag" not in get_description(Thing(1))
    assert create_from_description(get_description(Thing(1))).flag is False


def test_undescribable_member_named():
    with pytest.raises(TypeError, match="Thing.a"):
        get_description(Thing(object()))
    with pytest.raises(TypeError, match="functions and classes"):
        get_description(Thing(len))


def test_plain_structures():
    assert create_from_description({"x": [1, {"y": 2}]}) == {"x": [1, {"y": 2}]}


def test_global_seed_makes_everything_reproducible():
    global_rnd.set_seed(42)
    first = (Holder(None).rnd.randn(3), bs.initializers.Gaussian()((2, 2)))
    global_rnd.set_seed(42)
    second = (Holder(None).rnd.randn(3), bs.initializers.Gaussian()((2, 2)))
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_random_state_api():
    r = RandomState(5)
    assert r.get_seed() == 5
    a = r.randn(2)
    r.reset()
    assert np.array_equal(a, r.randn(2))
    child = r.create_random_state()
    assert 0 <= child.get_seed() < 10**9
    clone = pickle.loads(pickle.dumps(r))
    assert np.array_equal(clone.randn(4), r.randn(4))


def test_dropout_masks_of_default_handler_follow_global_seed():
    from brainstorm.handlers import NumpyHandler

    handler = NumpyHandler()  # created before seeding, like a module-level default
    masks = []
    for _ in range(2):
        global_rnd.set_seed(42)
        mask = handler.zeros((50,))
        handler.generate_probability_mask(mask, 0.5)
        masks.append(handler.get_numpy_copy(mask))
    assert np.array_equal(masks[0], masks[1])


def test_global_reset_also_repeats_the_dropout_masks_of_default_handlers():
    from brainstorm.handlers import NumpyHandler

    handler = NumpyHandler()
    masks = []
    global_rnd.set_seed(7)
    for _ in range(2):
        mask = handler.zeros((50,))
        handler.generate_probability_mask(mask, 0.5)
        masks.append(handler.get_numpy_copy(mask))
        global_rnd.reset()  # "the state right after seeding", for the handler too
    assert np.array_equal(masks[0], masks[1])
