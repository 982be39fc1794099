"""Behaviour of the initializers and of evaluate_initializer."""

import json

import numpy as np
import pytest

from brainstorm.describable import create_from_description, get_description
from brainstorm.initializers import (
    ArrayInitializer,
    DenseSqrtFanIn,
    DenseSqrtFanInOut,
    EchoState,
    Gaussian,
    Identity,
    Initializer,
    LstmOptInit,
    Orthogonal,
    RandomWalk,
    SparseInputs,
    SparseOutputs,
    Uniform,
    evaluate_initializer,
)
from brainstorm.randomness import global_rnd
from brainstorm.utils import InitializationError


@pytest.fixture(autouse=True)
def _reproducible_randomness():
    """Statistical checks below use wide margins; seeding makes them deterministic too."""
    global_rnd.set_seed(20240601)


ALL_INITIALIZERS = [
    ArrayInitializer(np.arange(12.0).reshape(4, 3)),
    DenseSqrtFanIn(),
    DenseSqrtFanIn("tanh"),
    DenseSqrtFanInOut(),
    DenseSqrtFanInOut(2.0),
    EchoState(0.9),
    Gaussian(),
    Identity(enforce_square=False),
    LstmOptInit(input_block=Gaussian(), forget_gate=1.0),
    Orthogonal(),
    RandomWalk("rel"),
    SparseInputs(Gaussian(), connections=2),
    SparseOutputs(Uniform(0.5), connections=3),
    Uniform(-0.2, 0.3),
]


def shape_for(initializer):
    square = (EchoState, RandomWalk)
    return (4, 4) if isinstance(initializer, square) else (4, 3)


@pytest.mark.parametrize("initializer", ALL_INITIALIZERS, ids=repr)
def test_shape_dtype_and_seed_reproducibility(initializer):
    shape = shape_for(initializer)
    a = evaluate_initializer(initializer, shape, seed=123)
    b = evaluate_initializer(initializer, shape, seed=123)
    assert a.shape == shape
    assert a.dtype == np.float64
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "initializer",
    [i for i in ALL_INITIALIZERS if not isinstance(i, ArrayInitializer)],
    ids=repr,
)
def test_different_seeds_give_different_values(initializer):
    shape = shape_for(initializer)
    a = evaluate_initializer(initializer, shape, seed=1)
    b = evaluate_initializer(initializer, shape, seed=2)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("initializer", ALL_INITIALIZERS, ids=repr)
def test_description_round_trip(initializer):
    description = get_description(initializer)
    json.dumps(description)  # must be JSON-serialisable
    rebuilt = create_from_description(description)
    assert get_description(rebuilt) == description
    shape = shape_for(initializer)
    np.testing.assert_array_equal(
        evaluate_initializer(rebuilt, shape, seed=7),
        evaluate_initializer(initializer, shape, seed=7),
    )


def test_descriptions_are_minimal_and_nested():
    assert get_description(Gaussian()) == {"@type": "Gaussian", "std": 0.1}
    assert get_description(Uniform()) == {"@type": "Uniform"}
    assert get_description(ArrayInitializer([[1, 2]])) == [[1, 2]]
    d = get_description(SparseInputs(Gaussian(0.5), connections=3))
    assert d == {
        "@type": "SparseInputs",
        "sub_initializer": {"@type": "Gaussian", "std": 0.5},
        "connections": 3,
    }
    rebuilt = create_from_description(d)
    assert isinstance(rebuilt.sub_initializer, Gaussian)
    assert rebuilt.sub_initializer.std == 0.5
    assert rebuilt.rnd is not rebuilt.sub_initializer.rnd


def test_gaussian_statistics():
    values = evaluate_initializer(Gaussian(std=0.5, mean=2.0), (400, 500), seed=1)
    assert values.mean() == pytest.approx(2.0, abs=0.01)
    assert values.std() == pytest.approx(0.5, rel=0.01)


def test_uniform_bounds_and_statistics():
    values = Uniform(0.3)((300, 300))
    assert values.min() >= -0.3 and values.max() <= 0.3
    assert values.min() < -0.29 and values.max() > 0.29
    values = Uniform(1.0, 3.0)((300, 300))
    assert values.min() >= 1.0 and values.max() <= 3.0
    assert values.mean() == pytest.approx(2.0, abs=0.01)
    with pytest.raises(ValueError, match="low must be smaller"):
        Uniform(2.0, 1.0)


@pytest.mark.parametrize(
    "cls, scale, expected",
    [
        (DenseSqrtFanIn, "rel", np.sqrt(6) / np.sqrt(60)),
        (DenseSqrtFanIn, "sigmoid", 4 * np.sqrt(3) / np.sqrt(60)),
        (DenseSqrtFanIn, 2.0, 2.0 / np.sqrt(60)),
        (DenseSqrtFanInOut, "rel", np.sqrt(12) / np.sqrt(50 + 60)),
        (DenseSqrtFanInOut, "tanh", np.sqrt(6) / np.sqrt(50 + 60)),
        (DenseSqrtFanInOut, "linear", 1 / np.sqrt(50 + 60)),
    ],
)
def test_dense_sqrt_bounds(cls, scale, expected):
    # fan-in of a (50, 3, 4, 5) weight is 60 (all but the first axis)
    values = cls(scale)((50, 3, 4, 5))
    assert np.abs(values).max() <= expected
    assert np.abs(values).max() > 0.95 * expected


def test_dense_sqrt_errors():
    with pytest.raises(InitializationError, match="at least 2 dimensions"):
        DenseSqrtFanIn()((5,))
    with pytest.raises(ValueError, match="unknown scale 'relu'"):
        DenseSqrtFanInOut("relu")


def test_echo_state_spectral_radius():
    values = EchoState(0.77)((30, 30))
    assert np.max(np.abs(np.linalg.eigvals(values))) == pytest.approx(0.77)
    with pytest.raises(InitializationError, match="square"):
        EchoState()((3, 4))
    with pytest.raises(InitializationError, match="2-D"):
        EchoState()((3, 3, 3))


def test_identity():
    values = Identity(scale=2.0, std=0.0)((3, 3))
    np.testing.assert_array_equal(values, 2 * np.eye(3))
    noisy = Identity(std=0.01)((200, 200))
    assert (noisy - np.eye(200)).std() == pytest.approx(0.01, rel=0.02)
    with pytest.raises(InitializationError, match="square"):
        Identity()((3, 4))
    np.testing.assert_array_equal(
        Identity(std=0.0, enforce_square=False)((2, 3)), [[1, 0, 0], [0, 1, 0]]
    )


@pytest.mark.parametrize("shape", [(6, 6), (10, 4), (4, 10)])
def test_orthogonal(shape):
    q = Orthogonal(scale=2.0)(shape)
    assert q.shape == shape
    if shape[0] >= shape[1]:
        np.testing.assert_allclose(q.T @ q, 4 * np.eye(shape[1]), atol=1e-12)
    else:
        np.testing.assert_allclose(q @ q.T, 4 * np.eye(shape[0]), atol=1e-12)
    with pytest.raises(InitializationError):
        Orthogonal()((2, 3, 4))


def test_random_walk_scales_by_sqrt_n():
    n = 400
    values = RandomWalk("linear")((n, n))
    expected_std = np.exp(1 / (2 * n)) / np.sqrt(n)
    assert values.std() == pytest.approx(expected_std, rel=0.01)
    values = RandomWalk(scale=3.0)((n, n))
    assert values.std() == pytest.approx(3.0 / np.sqrt(n), rel=0.01)
    rel = RandomWalk("rel")((n, n))
    expected = np.sqrt(2) * np.exp(1.2 / (n - 2.4)) / np.sqrt(n)
    assert rel.std() == pytest.approx(expected, rel=0.01)
    with pytest.raises(InitializationError, match="square"):
        RandomWalk()((3, 4))
    with pytest.raises(ValueError, match="act_func"):
        RandomWalk("tanh")


def test_sparse_inputs_limits_incoming_weights_per_unit():
    values = SparseInputs(Gaussian(), connections=3)((20, 8))
    assert ((values != 0).sum(axis=1) == 3).all()  # every row (unit) has 3 inputs
    with pytest.raises(InitializationError, match="only 2"):
        SparseInputs(Gaussian(), connections=3)((20, 2))


def test_sparse_inputs_on_convolution_weights():
    values = SparseInputs(Gaussian(), connections=5)((4, 3, 3, 2))
    assert ((values.reshape(4, -1) != 0).sum(axis=1) == 5).all()


def test_sparse_outputs_limits_outgoing_weights_per_input():
    values = SparseOutputs(Gaussian(), connections=3)((8, 20))
    assert ((values != 0).sum(axis=0) == 3).all()  # every column (input) feeds 3 units
    with pytest.raises(InitializationError, match="only 2"):
        SparseOutputs(Gaussian(), connections=3)((2, 20))


def test_sparse_values_come_from_sub_initializer():
    values = SparseInputs(7.0, connections=2)((5, 6))
    assert set(np.unique(values)) == {0.0, 7.0}
    values = SparseOutputs(ArrayInitializer(np.full((5, 6), 3.0)), connections=2)((5, 6))
    assert set(np.unique(values)) == {0.0, 3.0}


def test_lstm_opt_init_blocks():
    values = LstmOptInit(input_block=1.0, input_gate=2.0, forget_gate=Gaussian(), output_gate=4.0)(
        (8, 3)
    )
    np.testing.assert_array_equal(values[0:2], 1.0)
    np.testing.assert_array_equal(values[2:4], 2.0)
    assert np.all(values[4:6] != 0) and values[4:6].std() > 0
    np.testing.assert_array_equal(values[6:8], 4.0)
    with pytest.raises(InitializationError, match="divisible by 4"):
        LstmOptInit()((6, 3))


def test_array_initializer():
    values = ArrayInitializer([[1, 2], [3, 4]])((2, 2))
    np.testing.assert_array_equal(values, [[1, 2], [3, 4]])
    assert values.dtype == np.float64
    with pytest.raises(InitializationError, match=r"shape mismatch.*\(2, 2\).*\(2, 3\)"):
        ArrayInitializer([[1, 2], [3, 4]])((2, 3))


def test_array_initializer_returns_a_copy():
    init = ArrayInitializer(np.zeros((2, 2)))
    init((2, 2))[0, 0] = 5
    assert init.array[0, 0] == 0


def test_evaluate_constants_and_arrays():
    np.testing.assert_array_equal(evaluate_initializer(0.5, (2, 3)), np.full((2, 3), 0.5))
    np.testing.assert_array_equal(evaluate_initializer(2, (3,)), [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(evaluate_initializer([1, 2, 3], (3,)), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(evaluate_initializer(np.eye(2), (2, 2)), np.eye(2))
    with pytest.raises(InitializationError, match="shape mismatch"):
        evaluate_initializer([1, 2, 3], (4,))


def test_evaluate_rejects_non_initializers():
    with pytest.raises(TypeError, match="str .* is not an initializer"):
        evaluate_initializer("Gaussian", (2, 2))
    with pytest.raises(TypeError, match="not an initializer"):
        evaluate_initializer(None, (2, 2))


def test_fallback_is_used_only_on_initialization_error():
    values = evaluate_initializer(EchoState(), (3, 4), fallback=0.25)
    np.testing.assert_array_equal(values, np.full((3, 4), 0.25))
    square = evaluate_initializer(Identity(std=0.0), (3, 3), fallback=0.25)
    np.testing.assert_array_equal(square, np.eye(3))
    # a fallback that fails too raises its own error
    with pytest.raises(InitializationError):
        evaluate_initializer(EchoState(), (3, 4), fallback=Identity())
    with pytest.raises(InitializationError, match="square"):
        evaluate_initializer(EchoState(), (3, 4))


def test_fallback_is_seeded_too():
    a = evaluate_initializer(EchoState(), (3, 4), fallback=Gaussian(), seed=5)
    b = evaluate_initializer(EchoState(), (3, 4), fallback=Gaussian(), seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, evaluate_initializer(Gaussian(), (3, 4), seed=5))


def test_list_fallback_for_array_initializer():
    values = evaluate_initializer([1.0, 2.0], (3,), fallback=Uniform(), seed=3)
    assert values.shape == (3,) and np.abs(values).max() <= 0.1


def test_evaluating_a_list_does_not_consume_global_randomness():
    from brainstorm.randomness import global_rnd

    state = global_rnd.get_state()[1].copy()
    evaluate_initializer([1.0, 2.0], (2,))
    np.testing.assert_array_equal(global_rnd.get_state()[1], state)


def test_wrong_shape_from_custom_initializer_is_a_bug_not_a_fallback():
    class Broken(Initializer):
        def __call__(self, shape):
            return np.zeros(3)

    with pytest.raises(ValueError, match="returned shape"):
        evaluate_initializer(Broken(), (2, 2), fallback=0.0)


def test_global_seed_makes_initializers_reproducible():
    from brainstorm.randomness import global_rnd

    global_rnd.set_seed(42)
    a = Gaussian()((3, 3))
    global_rnd.set_seed(42)
    b = Gaussian()((3, 3))
    np.testing.assert_array_equal(a, b)


def test_base_class_is_abstract_and_public_api():
    import brainstorm.initializers as mod

    with pytest.raises(NotImplementedError):
        Initializer()((2,))
    assert set(mod.__all__) == {
        "Initializer",
        "evaluate_initializer",
        "ArrayInitializer",
        "DenseSqrtFanIn",
        "DenseSqrtFanInOut",
        "EchoState",
        "Gaussian",
        "Identity",
        "LstmOptInit",
        "Orthogonal",
        "RandomWalk",
        "SparseInputs",
        "SparseOutputs",
        "Uniform",
    }
    assert repr(Gaussian(0.2)) == "Gaussian(std=0.2, mean=0.0)"
