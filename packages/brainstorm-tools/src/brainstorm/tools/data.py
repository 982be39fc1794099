"""Helpers for preparing data arrays shaped ``(T, B, ...)``."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["shuffle_data", "split"]


def _sequence_count(arrays, tool):
    sizes = set()
    for i, a in enumerate(arrays):
        if a is None:
            continue
        shape = np.shape(a)
        if len(shape) < 2:
            raise ValueError(
                f"{tool}: array {i} must have at least 2 axes (T, B, ...), got shape {shape}"
            )
        sizes.add(shape[1])
    if not sizes:
        raise ValueError(f"{tool}: no arrays given (all None)")
    if len(sizes) > 1:
        shapes = [None if a is None else np.shape(a) for a in arrays]
        raise ValueError(
            f"{tool}: the arrays differ in their number of sequences (axis 1): {shapes}"
        )
    return sizes.pop()


def shuffle_data(*args, seed=None):
    """Shuffle numpy arrays along the second (batch) dimension.

    All arrays are shuffled with the same permutation, so inputs and targets
    stay together. ``None`` entries pass through unchanged.

    Example:
        >>> x, t = shuffle_data(x, t, seed=42)

    Args:
        *args (numpy.ndarray | None): arrays ``(T, B, ...)`` to be shuffled.
        seed (Optional[int]): seed to make the shuffle reproducible; without
            it the permutation is drawn from ``brainstorm.global_rnd`` (so
            ``bs.global_rnd.set_seed(42)`` makes it reproducible too).

    Returns:
        list[numpy.ndarray | None]: the shuffled arrays (copies), in order.

    Raises:
        ValueError: if the arrays differ in their number of sequences.
    """
    from brainstorm.randomness import global_rnd

    n = _sequence_count(args, "shuffle_data")
    rnd = global_rnd.create_random_state(seed)
    order = rnd.permutation(n)
    return [None if a is None else np.asarray(a)[:, order] for a in args]


def split(*args, ratios=(9, 1)):
    """Split numpy arrays along the second (batch) dimension by ratios.

    The split points are ``round(cumsum(ratios) / sum(ratios) * B)``.

    Example:
        >>> (x_tr, t_tr), (x_va, t_va) = split(x, t, ratios=(4, 1))

    Args:
        *args (numpy.ndarray | None): arrays ``(T, B, ...)`` to be split;
            ``None`` entries stay ``None`` in every part.
        ratios (Sequence[float]): relative sizes of the parts. Defaults to
            ``(9, 1)``.

    Returns:
        list[list[numpy.ndarray | None]]: one list per part, each holding the
        parts of all arrays; e.g. for 2 parts of arrays A, B and C:
        ``[[A1, B1, C1], [A2, B2, C2]]``.

    Raises:
        ValueError: for arrays of different batch sizes or bad ratios.
    """
    n = _sequence_count(args, "split")
    ratios = list(ratios)
    if not ratios or not all(
        isinstance(r, numbers.Real) and not isinstance(r, bool) and r >= 0 for r in ratios
    ):
        raise ValueError(f"split: ratios must be non-negative numbers, got {ratios!r}")
    total = float(sum(ratios))
    if total <= 0:
        raise ValueError(f"split: the ratios must not all be zero, got {ratios!r}")
    stops = np.round(np.cumsum(ratios) / total * n).astype(int)
    starts = np.concatenate([[0], stops[:-1]])
    return [
        [None if a is None else np.asarray(a)[:, start:stop] for a in args]
        for start, stop in zip(starts, stops)
    ]
