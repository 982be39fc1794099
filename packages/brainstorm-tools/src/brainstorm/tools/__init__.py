"""Tools: network helpers, spec strings, evaluation, extraction and data helpers.

* Building networks: :func:`get_in_out_layers`, :func:`create_net_from_spec`.
* Applying them: :func:`evaluate`, :func:`extract`, :func:`extract_and_save`.
* Looking at them: :func:`get_network_info`, :func:`print_network_info`,
  :func:`draw_network` (needs ``pip install brainstorm-tools[draw_net]``).
* Data arrays ``(T, B, ...)``: :func:`shuffle_data`, :func:`split`.

The data preparation commands (``brainstorm-prepare-mnist``, ``-cifar10``,
``-cifar100``, ``-enwik8``) live in :mod:`brainstorm.tools.prepare`.
"""

from brainstorm.tools.data import shuffle_data, split
from brainstorm.tools.drawing import draw_network
from brainstorm.tools.evaluation import evaluate, extract, extract_and_save
from brainstorm.tools.network_building import get_in_out_layers
from brainstorm.tools.network_info import get_network_info, print_network_info

# B, C, D, F, L, P, R, act_funcs, create_layer, trynumber: the reference's helpers
# of the spec language, importable from here as before (not in __all__)
from brainstorm.tools.spec import (
    B,
    C,
    D,
    F,
    L,
    P,
    R,
    SpecError,
    act_funcs,
    create_layer,
    create_net_from_spec,
    trynumber,
)

__all__ = [
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
    "SpecError",
]
