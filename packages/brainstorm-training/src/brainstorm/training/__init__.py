"""Training: the :class:`Trainer`, the steppers and the schedules.

Example::

    import brainstorm as bs

    trainer = bs.Trainer(bs.training.MomentumStepper(learning_rate=0.1, momentum=0.9))
    trainer.add_hook(bs.hooks.StopAfterEpoch(10))
    trainer.train(net, train_iter, valid_getter=valid_iter)
"""

from brainstorm.training.schedules import DecreaseAfterEpoch, Exponential, Linear, MultiStep
from brainstorm.training.steppers import (
    AdaDeltaStepper,
    AdamStepper,
    ForwardStepper,
    MomentumStepper,
    NesterovStepper,
    RMSPropStepper,
    SgdStepper,
    TrainingStepper,
)
from brainstorm.training.trainer import Trainer
from brainstorm.training.utils import evaluate, load_logs, run_network, save_logs

__all__ = [
    "Trainer",
    "TrainingStepper",
    "ForwardStepper",
    "SgdStepper",
    "MomentumStepper",
    "NesterovStepper",
    "AdamStepper",
    "RMSPropStepper",
    "AdaDeltaStepper",
    "Linear",
    "Exponential",
    "MultiStep",
    "DecreaseAfterEpoch",
    "run_network",
    "evaluate",
    "save_logs",
    "load_logs",
]
