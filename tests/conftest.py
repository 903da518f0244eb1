import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", category=RuntimeWarning, module="onnx.backend.test.case")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: full-size models (minutes); deselect with -m 'not slow'")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
