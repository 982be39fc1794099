import os
import sys

import numpy as np
import pytest

# Tests run with --import-mode=importlib; make the helper module importable.
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def rng():
    return np.random.RandomState(0)
