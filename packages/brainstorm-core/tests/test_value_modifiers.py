"""Behaviour of the weight and gradient modifiers, on several handlers."""

import copy
import json

import numpy as np
import pytest

from brainstorm.describable import create_from_description, get_description
from brainstorm.handlers.numpy_handler import NumpyHandler
from brainstorm.value_modifiers import (
    ClipValues,
    ConstrainL2Norm,
    FreezeValues,
    GradientModifier,
    L1Decay,
    L2Decay,
    MaskValues,
    ValueModifier,
)


class OpaqueArray:
    """A device array stand-in: has a shape and can be reshaped, nothing else.

    Any attempt to compute on it with NumPy or Python operators fails, which
    proves a modifier uses nothing but handler operations (as on a GPU).
    """

    def __init__(self, array):
        self.array = array

    shape = property(lambda self: self.array.shape)
    size = property(lambda self: self.array.size)

    def reshape(self, shape):
        return OpaqueArray(self.array.reshape(shape))

    def __array__(self, *args, **kwargs):
        raise TypeError("NumPy was used on a device array")


class OpaqueHandler:
    """Wraps a handler so that its arrays are OpaqueArrays."""

    _CREATORS = {"allocate", "zeros", "ones", "create_from_numpy"}

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        op = getattr(self.inner, name)
        if not callable(op):
            return op

        def wrapped(*args, **kwargs):
            args = [a.array if isinstance(a, OpaqueArray) else a for a in args]
            kwargs = {k: v.array if isinstance(v, OpaqueArray) else v for k, v in kwargs.items()}
            result = op(*args, **kwargs)
            return OpaqueArray(result) if name in self._CREATORS else result

        return wrapped


def _debug_handler():
    try:
        from brainstorm.handlers.debug_handler import DebugHandler
    except ImportError:
        pytest.skip("DebugHandler not available")
    return DebugHandler(NumpyHandler(np.float64))


@pytest.fixture(params=["numpy", "opaque", "debug"])
def handler(request):
    if request.param == "numpy":
        return NumpyHandler(np.float64)
    if request.param == "opaque":
        return OpaqueHandler(NumpyHandler(np.float64))
    return _debug_handler()


def on_device(handler, array):
    return handler.create_from_numpy(np.asarray(array, dtype=np.float64))


def numpy_l2_constraint(weights, limit):
    flat = weights.reshape(weights.shape[0], -1)
    norms = np.sqrt((flat**2).sum(axis=1, keepdims=True))
    return (flat * np.minimum(1.0, limit / norms)).reshape(weights.shape)


# ############################ ConstrainL2Norm ################################


@pytest.mark.parametrize("shape", [(6, 4), (5, 3, 2, 2)])
def test_constrain_l2_norm_matches_numpy_reference(handler, shape):
    rnd = np.random.RandomState(0)
    weights = rnd.randn(*shape)
    weights[0] *= 0.01  # surely within the limit
    weights[1] *= 100.0  # surely beyond it
    view = on_device(handler, weights)
    ConstrainL2Norm(1.5)(handler, view)
    result = handler.get_numpy_copy(view)
    np.testing.assert_allclose(result, numpy_l2_constraint(weights, 1.5), rtol=1e-12)
    norms = np.linalg.norm(result.reshape(shape[0], -1), axis=1)
    original = np.linalg.norm(weights.reshape(shape[0], -1), axis=1)
    too_big = original > 1.5
    assert too_big.any() and (~too_big).any()
    np.testing.assert_allclose(norms[too_big], 1.5, rtol=1e-12)
    np.testing.assert_array_equal(result[~too_big], weights[~too_big])


def test_constrain_l2_norm_ignores_biases_and_zero_rows(handler):
    bias = on_device(handler, [10.0, -20.0, 30.0])
    ConstrainL2Norm(1.0)(handler, bias)
    np.testing.assert_array_equal(handler.get_numpy_copy(bias), [10.0, -20.0, 30.0])
    zeros = on_device(handler, np.zeros((3, 4)))
    ConstrainL2Norm(1.0)(handler, zeros)
    np.testing.assert_array_equal(handler.get_numpy_copy(zeros), 0.0)


def test_constrain_l2_norm_rejects_non_positive_limit():
    with pytest.raises(ValueError, match="positive"):
        ConstrainL2Norm(0.0)


# ############################ ClipValues #####################################


def test_clip_values(handler):
    view = on_device(handler, [[-3.0, -0.5], [0.25, 7.0]])
    ClipValues(-1.0, 0.5)(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), [[-1.0, -0.5], [0.25, 0.5]])
    default = on_device(handler, [-3.0, 3.0])
    ClipValues()(handler, default)
    np.testing.assert_array_equal(handler.get_numpy_copy(default), [-1.0, 1.0])
    with pytest.raises(ValueError, match="must not exceed"):
        ClipValues(1.0, -1.0)


# ############################ MaskValues #####################################


def test_mask_values(handler):
    mask = np.array([[1, 0, 1], [0, 1, 0]])
    weights = np.arange(1.0, 7.0).reshape(2, 3)
    view = on_device(handler, weights)
    MaskValues(mask)(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), weights * mask)


def test_mask_is_copied_to_the_device_once_per_handler():
    mod = MaskValues(np.ones((2, 2)))
    first, second = NumpyHandler(np.float64), NumpyHandler(np.float64)
    view = on_device(first, np.ones((2, 2)))
    mod(first, view)
    cached = list(mod._device_arrays.values())
    mod(first, view)
    assert list(mod._device_arrays.values()) == cached
    mod(second, on_device(second, np.ones((2, 2))))
    assert len(mod._device_arrays) == 2


def test_mask_values_description_round_trip():
    mask = np.array([[1.0, 0.0], [0.0, 1.0]])
    description = get_description(MaskValues(mask))
    assert description == {"@type": "MaskValues", "mask": [[1.0, 0.0], [0.0, 1.0]]}
    json.dumps(description)
    rebuilt = create_from_description(description)
    assert isinstance(rebuilt.mask, np.ndarray)
    np.testing.assert_array_equal(rebuilt.mask, mask)
    handler = NumpyHandler(np.float64)
    view = on_device(handler, np.full((2, 2), 3.0))
    rebuilt(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), 3 * mask)


def test_mask_shape_mismatch_is_a_clear_error():
    handler = NumpyHandler(np.float64)
    mod = MaskValues(np.ones((2, 2)))
    mod.layer_name, mod.view_name = "Hid", "W"
    with pytest.raises(ValueError, match=r"Hid\.W.*mask has shape \(2, 2\).*\(3, 2\)"):
        mod(handler, on_device(handler, np.ones((3, 2))))


# ############################ FreezeValues ###################################


def test_freeze_values_keeps_first_seen_values(handler):
    view = on_device(handler, [[1.0, 2.0], [3.0, 4.0]])
    freeze = FreezeValues()
    freeze(handler, view)
    handler.fill(view, 9.0)
    freeze(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), [[1.0, 2.0], [3.0, 4.0]])
    handler.fill(view, -1.0)
    freeze(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), [[1.0, 2.0], [3.0, 4.0]])


def test_freeze_values_resets_to_given_weights(handler):
    view = on_device(handler, np.zeros(3))
    freeze = FreezeValues([1.0, 2.0, 3.0])
    freeze(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), [1.0, 2.0, 3.0])


def test_freeze_values_descriptions():
    assert get_description(FreezeValues()) == {"@type": "FreezeValues"}
    handler = NumpyHandler(np.float64)
    used = FreezeValues()
    used(handler, on_device(handler, np.ones(4)))
    assert get_description(used) == {"@type": "FreezeValues"}  # seen values stay out
    description = get_description(FreezeValues([[1, 2]]))
    assert description == {"@type": "FreezeValues", "weights": [[1, 2]]}
    rebuilt = create_from_description(description)
    view = on_device(handler, np.zeros((1, 2)))
    rebuilt(handler, view)
    np.testing.assert_array_equal(handler.get_numpy_copy(view), [[1.0, 2.0]])


# ############################ decays #########################################


def test_l1_decay(handler):
    params = np.array([[-2.0, 0.0], [0.5, 3.0]])
    grads = np.array([[1.0, 1.0], [1.0, -1.0]])
    p, g = on_device(handler, params), on_device(handler, grads)
    L1Decay(0.1)(handler, p, g)
    np.testing.assert_allclose(handler.get_numpy_copy(g), grads + 0.1 * np.sign(params))
    np.testing.assert_array_equal(handler.get_numpy_copy(p), params)


def test_l2_decay(handler):
    params = np.array([[-2.0, 0.0], [0.5, 3.0]])
    grads = np.array([[1.0, 1.0], [1.0, -1.0]])
    p, g = on_device(handler, params), on_device(handler, grads)
    L2Decay(0.1)(handler, p, g)
    np.testing.assert_allclose(handler.get_numpy_copy(g), grads + 0.1 * params)
    np.testing.assert_array_equal(handler.get_numpy_copy(p), params)


# ############################ common behaviour ###############################

MODIFIERS = [
    ConstrainL2Norm(2.0),
    ClipValues(-0.5, 0.5),
    MaskValues(np.ones(3)),
    FreezeValues(),
    L1Decay(0.01),
    L2Decay(0.02),
]


@pytest.mark.parametrize("modifier", MODIFIERS, ids=lambda m: type(m).__name__)
def test_description_round_trip_leaves_out_names(modifier):
    modifier = copy.deepcopy(modifier)
    modifier.layer_name, modifier.view_name = "Hid", "W"
    description = get_description(modifier)
    assert "layer_name" not in description and "view_name" not in description
    assert "rnd" not in description and "_device_arrays" not in description
    rebuilt = create_from_description(description)
    assert type(rebuilt) is type(modifier)
    assert rebuilt.layer_name == "" and rebuilt.view_name == ""
    assert rebuilt._device_arrays == {}
    assert get_description(rebuilt) == description


def test_descriptions_hold_the_arguments():
    assert get_description(ConstrainL2Norm(2.0)) == {"@type": "ConstrainL2Norm", "limit": 2.0}
    assert get_description(ClipValues()) == {"@type": "ClipValues"}
    assert get_description(L2Decay(0.5)) == {"@type": "L2Decay", "factor": 0.5}


def test_deep_copies_leave_device_arrays_behind():
    handler = NumpyHandler(np.float64)
    mod = MaskValues(np.ones(3))
    mod(handler, on_device(handler, np.ones(3)))
    assert mod._device_arrays
    clone = copy.deepcopy(mod)
    assert clone._device_arrays == {}
    np.testing.assert_array_equal(clone.mask, mod.mask)
    assert clone.mask is not mod.mask


def test_class_hierarchy_and_repr():
    assert issubclass(GradientModifier, ValueModifier)
    assert issubclass(L1Decay, GradientModifier) and not issubclass(ClipValues, GradientModifier)
    mod = ConstrainL2Norm(2.0)
    mod.layer_name, mod.view_name = "Hid", "W"
    assert repr(mod) == "<ConstrainL2Norm on Hid.W, limit=2.0>"
    with pytest.raises(NotImplementedError):
        ValueModifier()(None, None)
