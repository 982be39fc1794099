"""Reproducible randomness.

``global_rnd`` is the root of every random number brainstorm draws: networks,
initializers, modifiers, data iterators and handlers without an explicit seed
take their seed from it. ``bs.global_rnd.set_seed(42)`` therefore makes a whole
script reproducible, dropout masks of the default handler included (handlers
created before the call re-derive their generator from ``global_rnd`` the first
time they draw after it).
"""

from __future__ import annotations

import numpy as np

from brainstorm.describable import Describable

__all__ = ["RandomState", "Seedable", "global_rnd"]

_SEED_RANGE = 1_000_000_000


class RandomState(np.random.RandomState):
    """A NumPy ``RandomState`` that remembers its seed.

    Args:
        seed: integer seed; ``None`` draws one from :data:`global_rnd`.
    """

    def __init__(self, seed=None):
        if seed is None:
            seed = global_rnd.generate_seed()
        self._seed = int(seed)
        self.generation = 0
        super().__init__(self._seed)

    def __reduce__(self):
        return (_rebuild_random_state, (self._seed, self.get_state(), self.generation))

    def get_seed(self) -> int:
        """The seed this random state was (last) seeded with."""
        return self._seed

    def set_seed(self, seed: int):
        """Reseed; also tells handlers that derive from this state to re-derive."""
        self._seed = int(seed)
        self.generation += 1
        self.seed(self._seed)

    def reset(self):
        """Return to the state right after seeding (handlers that derive from this
        state re-derive, as after :meth:`set_seed`)."""
        self.generation += 1
        self.seed(self._seed)

    def generate_seed(self) -> int:
        """Draw a new seed (an int in ``[0, 1e9)``) from this state."""
        return int(self.randint(0, _SEED_RANGE))

    def create_random_state(self, seed=None) -> RandomState:
        """A new :class:`RandomState` seeded with ``seed`` or a seed drawn from this one."""
        if seed is None:
            seed = self.generate_seed()
        return RandomState(seed)


def _rebuild_random_state(seed, state, generation):
    rnd = RandomState(seed)
    rnd.set_state(state)
    rnd.generation = generation
    return rnd


class Seedable(Describable):
    """Base class for objects that own a random state ``self.rnd``.

    Args:
        seed: integer seed; ``None`` draws one from :data:`global_rnd`.
    """

    __undescribed__ = {"rnd"}

    def __init__(self, seed=None):
        self.rnd = RandomState(seed)

    def __init_from_description__(self, description):
        self.rnd = RandomState()


global_rnd = RandomState(np.random.SeedSequence().entropy % _SEED_RANGE)
