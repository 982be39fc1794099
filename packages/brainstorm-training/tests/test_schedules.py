"""Schedules give the documented values."""

import math

import pytest

from brainstorm.describable import create_from_description, get_description
from brainstorm.training import DecreaseAfterEpoch, Exponential, Linear, MultiStep


def values(schedule, counts, timescale="epoch", interval=1):
    out = []
    for c in counts:
        epoch, update = (c, 0) if timescale == "epoch" else (0, c)
        out.append(schedule(epoch, update, timescale, interval, None, None, None))
    return out


def test_linear_steps_and_clamps():
    assert values(Linear(1.0, 0.0, 4), range(7)) == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0]
    # increasing, on the update timescale, changing every 10 updates
    assert values(Linear(0.0, 1.0, 2), [0, 9, 10, 19, 20, 100], "update", 10) == [
        0.0,
        0.0,
        0.5,
        0.5,
        1.0,
        1.0,
    ]
    # it ends at the final value exactly (0.1 - 3 * 0.03 is not 0.01 in floats)
    assert values(Linear(0.1, 0.01, 3), [3, 4]) == [0.01, 0.01]


def test_exponential_multiplies_and_clips():
    assert values(Exponential(1.0, 0.5, minimum=0.2), range(5)) == [1.0, 0.5, 0.25, 0.2, 0.2]
    assert values(Exponential(1.0, 2.0, maximum=3.0), [0, 2, 4, 6], interval=2) == [
        1.0,
        2.0,
        3.0,
        3.0,
    ]


def test_multistep_is_piecewise_constant():
    sched = MultiStep(0.1, [2, 4], [0.05, 0.01])
    assert values(sched, range(6)) == [0.1, 0.1, 0.05, 0.05, 0.01, 0.01]
    with pytest.raises(ValueError, match="interval"):
        sched(4, 0, "epoch", 2, None, None, None)
    with pytest.raises(ValueError, match="same length"):
        MultiStep(0.1, [1, 2], [0.1])
    with pytest.raises(ValueError, match="increase"):
        MultiStep(0.1, [3, 2], [0.1, 0.2])


def test_decrease_after_epoch():
    sched = DecreaseAfterEpoch(1.0, 3)
    assert values(sched, range(6)) == [1.0, 1.0, 1.0, 0.75, 0.6, 0.5]


def test_unknown_timescale_is_an_error():
    with pytest.raises(ValueError, match="timescale"):
        Linear(1, 0, 2)(1, 1, "minute", 1, None, None, None)


@pytest.mark.parametrize(
    "schedule",
    [Linear(1, 0, 3), Exponential(1, 0.9), MultiStep(1, [2], [0.5]), DecreaseAfterEpoch(2, 5)],
)
def test_description_round_trip(schedule):
    rebuilt = create_from_description(get_description(schedule))
    counts = range(8)
    assert values(rebuilt, counts) == values(schedule, counts)
    assert all(math.isfinite(v) for v in values(rebuilt, counts))
