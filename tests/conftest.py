"""Shared fixtures: small configs on the generated data set, a throw-away MLflow store.
Plain helpers (paths, configs, running `rotnet`, copying the project) are in helpers.py.

Every test that may touch MLflow gets a sqlite store under its tmp_path (never the
project's `mlflow.db`). Creating a sqlite store runs MLflow's migrations, which takes
seconds, so one empty store is made per session and copied for each test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import THREADS, Store, tiny_config  # noqa: E402

torch.set_num_threads(THREADS)  # see helpers.THREADS


# The longest files (1-5 min each on a 2-core AVX2 CPU), longest first: `make test` runs the
# files on 2 workers (pytest-xdist, --dist loadfile: a file's tests stay in one process, with
# its module fixtures), and a long file started last runs alone at the end while the other
# worker idles (test_ui_browser.py, last by name, did for 2-3 min).
LONGEST_FIRST = ("test_pipeline.py", "test_crash_consistency.py", "test_distributed.py",
                 "test_ui_browser.py", "test_fast_path.py", "test_dvc_queue.py")


def pytest_configure(config):
    # MLflow's sqlite store triggers this SQLAlchemy deprecation on every first use.
    config.addinivalue_line(
        "filterwarnings", "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(items):
    """The files of LONGEST_FIRST before the others, each file's tests in their order."""
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(autouse=True)
def _keep_torch_global_state():
    """`Runtime(deterministic=True)` switches torch's deterministic mode on for the process;
    put it back so one test's setting does not leak into the next."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


@pytest.fixture(autouse=True)
def _never_the_project_store(tmp_path_factory, monkeypatch):
    """A test that forgets `tracking_store` must not log into the project's store. (A store
    a module fixture has already set up is left alone.)"""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        guard = tmp_path_factory.getbasetemp() / "unexpected-mlflow.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{guard}")


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory) -> Path:
    """A sqlite file with MLflow's tables and the `rotnet` experiment, no runs."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
        from rotnet.tracking import Tracker

        Tracker().connect()  # creates the tables and the experiment
    return path


@pytest.fixture
def tracking_store(_empty_store, tmp_path, monkeypatch) -> Store:
    """MLFLOW_TRACKING_URI=sqlite:///<tmp_path>/mlflow.db, an empty store."""
    path = tmp_path / "mlflow.db"
    shutil.copyfile(_empty_store, path)
    store = Store(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return store


@pytest.fixture(scope="session")
def tiny_data():
    """The TINY config's data set (generated, 64 train / 32 test images)."""
    from rotnet.experiments import load_dataset

    return load_dataset(tiny_config())


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tiny_data) -> Path:
    """A 2-epoch, 4-block RotNet pretraining checkpoint (untracked). Read it; do not write
    next to it (copy it first)."""
    from rotnet import experiments
    from rotnet.tracking import NullTracker

    out = tmp_path_factory.mktemp("tiny-pretrain")
    experiments.pretrain(tiny_config(), out, tracker=NullTracker(), data=tiny_data)
    return out / "checkpoint.pt"
