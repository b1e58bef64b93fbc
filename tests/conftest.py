import os
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def default_bundle():
    from helpers.engine.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model()
