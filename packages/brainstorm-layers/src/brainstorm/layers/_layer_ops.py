"""Computations shared by several layers of brainstorm-layers (handler ops only)."""

from __future__ import annotations

__all__ = ["CLIP_EPSILON", "binary_cross_entropy"]

#: Probabilities are clipped to ``[CLIP_EPSILON, 1]`` before taking logarithms.
CLIP_EPSILON = 1e-6


def binary_cross_entropy(handler, y, t, out, tmp):
    """Elementwise ``out = -(t ln y + (1 - t) ln(1 - y))``, logarithms clipped.

    Computed as ``-(ln(1 - y) + t (ln y - ln(1 - y)))`` to need one scratch
    buffer only.

    Args:
        handler: the handler to compute with.
        y: probabilities in ``[0, 1]``.
        t: targets (usually 0 or 1), same shape as ``y``.
        out: where the loss goes, same shape as ``y``.
        tmp: scratch space, same shape as ``y``; overwritten.
    """
    _h = handler
    _h.mult_st(-1.0, y, out)
    _h.add_st(1.0, out, out)
    _h.clip_t(out, CLIP_EPSILON, 1.0, out)
    _h.log_t(out, out)  # ln(1 - y)
    _h.clip_t(y, CLIP_EPSILON, 1.0, tmp)
    _h.log_t(tmp, tmp)  # ln(y)
    _h.subtract_tt(tmp, out, tmp)
    _h.mult_add_tt(t, tmp, out)
    _h.mult_st(-1.0, out, out)
