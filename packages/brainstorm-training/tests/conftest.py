import os
import sys

import pytest

# Tests run with --import-mode=importlib; make the helper module importable.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state."""
    import brainstorm as bs

    bs.global_rnd.set_seed(1234)
