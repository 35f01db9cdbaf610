"""MLflow tracking: the only module that imports mlflow (where the store is, and keeping it
usable, is `rotnet.store`'s). The training loop never sees MLflow: experiments hand it hooks.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from rotnet.config import flatten as config_flatten
from rotnet.errors import RotnetError
from rotnet.provenance import git_commit, project_root, source_name, source_tags  # noqa: F401
from rotnet.store import (artifact_root, check_reachable, check_sqlite_file,  # noqa: F401
                          record_ui_address, recorded_ui_address, relocate_artifacts, sqlite_path,
                          store_lock, tracking_uri)

EXPERIMENT = "rotnet"
CLASS_METRIC_PREFIX = "test_acc_class_"  # + class name: a classifier's final per-class accuracy


def class_metric(name: str) -> str:
    """The MLflow metric of class `name`'s test accuracy (characters MLflow refuses -> _)."""
    return CLASS_METRIC_PREFIX + re.sub(r"[^\w.-]", "_", name)
# MLflow 3's UI opens an experiment tagged with this kind in its model-training view (runs,
# charts); an untagged one opens as a GenAI experiment (traces, evaluations).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# The tag alone does not do it in MLflow 3.17: the UI's GenAI / Model training switch follows
# the URL's workflowType (else the browser's last choice, GenAI when new), so every link
# rotnet prints or writes asks for the model-training view.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_link(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """A link into the MLflow UI at `base` that opens in the model-training view."""
    page = f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{page}?{MODEL_TRAINING_VIEW}"


def experiment_id(experiment: str = EXPERIMENT) -> str | None:
    """The id of `experiment` in the store, or None before its first run."""
    if not store_exists():
        return None
    found = _client().get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else None


def store_exists() -> bool:
    """False for a local sqlite store not made yet (any other store: True)."""
    path = sqlite_path(tracking_uri())
    return path is None or path.is_file()


def as_params(values: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: MLflow params are flat strings."""
    return {key: str(value) for key, value in config_flatten(values, prefix).items()}


def _client():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    check_reachable(uri)  # fail in seconds, not after MLflow's minutes of HTTP retries
    check_sqlite_file(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        # Opening a new sqlite store creates its tables; parallel workers (a DVC queue)
        # doing that at once collide, so it happens under a file lock. A copied or moved
        # project's store first points its artifacts at the folder beside it.
        relocate_artifacts(uri)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    return client


ID_PREFIX = 8  # the characters of a run id a run's name ends in
GROUP_TAG = "rotnet.group"  # a parent run's key: the group its nested runs belong to
PARENT_TAG = "mlflow.parentRunId"  # what nests a run under another in the MLflow UI
ATTEMPT_TAG = "rotnet.attempt"  # the start of a run that an output folder records first


@dataclass(frozen=True)
class RunGroup:
    """A parent run grouping related runs (an ablation, Figure 5a, Figure 5b). Found again by
    `key` (tag `rotnet.group`), so a rerun or a resumed child joins the same parent."""

    key: str
    name: str
    tags: dict = field(default_factory=dict)


class Tracker:
    """Starts MLflow runs and logs to the latest one (`run_id`): params, tags, per-epoch
    metrics, artifacts, final status. One tracker may start several runs in turn (a probe
    stage: one per block); each nests under the tracker's parent run, if it has one."""

    def __init__(self, experiment: str = EXPERIMENT, tags: dict[str, str] | None = None,
                 group: RunGroup | None = None, parent_run_id: str | None = None):
        self.experiment = experiment
        self.tags = dict(tags or {})  # added to every run this tracker starts (e.g. the DVC stage)
        # The runs this tracker starts nest under the group's parent run, or under parent_run_id.
        self.group = group
        self.parent_run_id = parent_run_id
        self.group_run_id: str | None = None
        self.run_id: str | None = None
        self._client = None

    def nest_under(self, group: RunGroup) -> "Tracker":
        """A tracker like this one (tags, connection) whose runs nest under `group`'s parent
        run; this one is left as it was."""
        nested = Tracker(self.experiment, tags=self.tags, group=group)
        nested._client = self._client
        return nested

    def child(self, tags: dict[str, str]) -> "Tracker":
        """A tracker whose runs nest under this one's run (an Optuna study's trials), on the
        same MLflow connection."""
        child = Tracker(self.experiment, tags={**self.tags, **tags}, parent_run_id=self.run_id)
        child._client = self._client
        return child

    def on_run(self, run_id: str) -> "Tracker":
        """A tracker that logs onto the existing run `run_id` (an analysis made after the run
        ended, e.g. its attention maps), on the same MLflow connection; its status is left as
        it is. RotnetError when the store has no such run."""
        if not self._exists(run_id):
            raise RotnetError(f"run {run_id} is not in the MLflow store at {tracking_uri()}")
        other = Tracker(self.experiment, tags=self.tags)
        other._client, other.run_id = self._client, run_id
        return other

    @property
    def client(self):
        if self._client is None:
            try:
                self._client = _client()
                self._experiment_id()
            except RotnetError:
                raise
            except Exception as err:  # an unreachable server, a locked/corrupt store
                raise RotnetError(f"cannot reach the MLflow store at {tracking_uri()}: "
                                  f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
        return self._client

    def _experiment_id(self) -> str:
        with store_lock(tracking_uri()):  # two new runs must not both create the experiment
            return self._get_or_create_experiment()

    def _get_or_create_experiment(self) -> str:
        client = self._client
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # made by an older rotnet
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
            return found.experiment_id
        # Artifacts beside a local sqlite store (kept there if the project moves).
        return client.create_experiment(self.experiment, artifact_location=artifact_root(tracking_uri()),
                                        tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str],
              resume_run_id: str | None = None) -> str:
        client = self.client
        tags = {**self.tags, **tags}
        if self.group:  # opened here, after the run's input was checked: no empty parents
            tags[PARENT_TAG] = self.group_run_id = self._open_group(self.group)
        elif self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        if resume_run_id and self._exists(resume_run_id):
            self.run_id = resume_run_id
            client.update_run(resume_run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(resume_run_id, key, value)
            return resume_run_id
        commit = git_commit()
        all_tags = {"mlflow.runName": run_name, "git_commit": commit, **source_tags(commit), **tags}
        run = client.create_run(self._experiment_id(), run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        # The name ends in what the reports cite, so the UI's search box finds it by that.
        client.update_run(self.run_id, name=f"{run_name}-{self.run_id[:ID_PREFIX]}")
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            client.log_batch(self.run_id, params=items[start:start + 100])
        return self.run_id

    def _open_group(self, group: RunGroup) -> str:
        """The group's parent run, reopened (RUNNING) or created; under the store's lock, so
        stages started side by side make one parent."""
        client, experiment = self.client, self._experiment_id()
        if not re.fullmatch(r"[\w.:+-]+", group.key):
            raise RotnetError(f"invalid run group key {group.key!r}")
        with store_lock(tracking_uri()):
            found = client.search_runs([experiment], f"tags.`{GROUP_TAG}` = '{group.key}'",
                                       max_results=1)
            if found:
                client.update_run(found[0].info.run_id, status="RUNNING")
                return found[0].info.run_id
            commit = git_commit()
            tags = {"mlflow.runName": group.name, "git_commit": commit, **source_tags(commit),
                    **self.tags, **{k: str(v) for k, v in group.tags.items()}, GROUP_TAG: group.key}
            return client.create_run(experiment, run_name=group.name, tags=tags).info.run_id

    def gather(self, group: RunGroup, run_ids, artifacts=(), metrics: dict | None = None,
               artifacts_root: Path | None = None) -> str:
        """`group`'s parent run (found or created), with finished runs made elsewhere nested
        under it (a run that has a parent keeps it), `artifacts` (paths; in their folders
        below `artifacts_root`, if given) attached and `metrics` logged; returns its id."""
        parent = self._open_group(group)
        for run_id in run_ids:
            try:
                tags = self.client.get_run(run_id).data.tags
            except Exception:  # deleted, or logged to another store: nothing to nest
                continue
            if PARENT_TAG not in tags:
                self.client.set_tag(run_id, PARENT_TAG, parent)
        for path in map(Path, artifacts):
            folder = path.parent.relative_to(artifacts_root) if artifacts_root else Path(".")
            self.client.log_artifact(parent, str(path), None if folder == Path(".") else str(folder))
        if metrics:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self.client.log_batch(parent, metrics=[Metric(k, float(v), now, 0)
                                                   for k, v in metrics.items()])
        self.client.set_terminated(parent, status="FINISHED")
        return parent

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Set `tags` on a run this tracker did not start (the cells a report fills)."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_model(self, module, input_example, name: str = "model") -> str | None:
        """`module` (a torch nn.Module) as this run's MLflow model, with the signature of
        `input_example` (a numpy batch) and its output: "Logged models" lists it and
        `mlflow.pytorch.load_model(f"models:/{model_id}")` loads it back. Returns its id."""
        import mlflow
        import torch

        with torch.no_grad():
            output = module(torch.from_numpy(input_example)).numpy()
        signature = mlflow.models.infer_signature(input_example, output)
        self.client  # the store, connected (and its experiment made) as for every other call
        mlflow.set_experiment(experiment_id=self._experiment_id())  # where the model is listed
        quiet = logging.getLogger("mlflow.pytorch")
        level, quiet.level = quiet.level, logging.ERROR  # its note on pickled modules
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Pickled (the class is rotnet.models'): loads back as the same nn.Module, and
            # saves in a second, where torch.export ("pt2") takes half a minute.
            info = mlflow.pytorch.log_model(
                module, name=name, run_id=self.run_id, signature=signature,
                input_example=input_example, serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        quiet.setLevel(level)
        return info.model_id

    def connect(self) -> None:
        """Reach the store now: a bad one is refused before any output is written."""
        self.client

    def close_orphan(self, run_id: str) -> None:
        """Mark a run a killed process left RUNNING as KILLED (a run in another store, or one
        that ended, is left alone)."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            return
        if run.info.status == "RUNNING":
            self.client.set_terminated(run_id, status="KILLED")

    def close_attempt(self, attempt: str, keep: str | None = None) -> None:
        """Mark the runs of `attempt` (ATTEMPT_TAG) still RUNNING as KILLED: a process killed
        before it recorded their id made them. `keep` (the run a checkpoint resumes) stays."""
        if not re.fullmatch(r"[0-9a-f]+", attempt):  # a token this module wrote, or nothing
            return
        found = self.client.search_runs(
            [self._experiment_id()], f"tags.`{ATTEMPT_TAG}` = '{attempt}' and "
                                     "attributes.status = 'RUNNING'")
        for run in found:
            if run.info.run_id != keep:
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def log_epoch(self, metrics: dict) -> None:
        """One history entry, at step = its epoch."""
        self.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=metrics["epoch"])

    def log_missing_epochs(self, history: list[dict]) -> None:
        """Re-log the epochs of a resumed run's history that a kill kept out of MLflow."""
        logged = {m.step for m in self.client.get_metric_history(self.run_id, "test_acc")}
        for metrics in history:
            if metrics["epoch"] not in logged:
                self.log_epoch(metrics)

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """`path` among the run's artifacts (in folder `artifact_path`; the UI previews a PNG)."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dataset(self, name: str, features, targets, source: str, context: str) -> None:
        """The data set a run read (numpy arrays), with MLflow's digest of them, for the run
        page's Datasets column and tab."""
        import mlflow.data
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        with warnings.catch_warnings():  # MLflow 3.17 registers its local source class twice
            warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
            dataset = mlflow.data.from_numpy(features, targets=targets, source=source, name=name)
        # Stages side by side log the same data set (data.seed's): MLflow checks then inserts
        # it, so two at once collide on its unique key; the store's lock makes them take turns.
        with store_lock(tracking_uri()):
            self.client.log_inputs(self.run_id, datasets=[DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def finish(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)
        if self.group_run_id:  # the parent says how its latest child ended
            self.client.set_terminated(self.group_run_id, status=status)


class NullTracker(Tracker):
    """Tracking switched off (a notebook, a machine without MLflow, some tests)."""

    def connect(self) -> None:
        pass

    def close_orphan(self, run_id) -> None:
        pass

    def close_attempt(self, attempt, keep=None) -> None:
        pass

    def log_missing_epochs(self, history) -> None:
        pass

    def nest_under(self, group) -> "Tracker":
        return self

    def child(self, tags) -> "Tracker":
        return self

    def on_run(self, run_id) -> "Tracker":
        return self

    def start(self, run_name, params, tags, resume_run_id=None) -> str:
        self.run_id = resume_run_id or ""
        return self.run_id

    def log_metrics(self, metrics, step) -> None:
        pass

    def set_tags(self, tags) -> None:
        pass

    def gather(self, group, run_ids, artifacts=(), metrics=None, artifacts_root=None) -> str:
        return ""

    def tag_run(self, run_id, tags) -> None:
        pass

    def log_model(self, module, input_example, name="model") -> None:
        return None

    def log_artifact(self, path, artifact_path=None) -> None:
        pass

    def log_dataset(self, name, features, targets, source, context) -> None:
        pass

    def finish(self, status="FINISHED") -> None:
        pass


def search_runs(filter_string: str = "", experiment: str = EXPERIMENT) -> list:
    """Finished runs of the experiment matching an MLflow filter, oldest first."""
    if not store_exists():  # reading must not create a store (nor print MLflow's set-up lines)
        return []
    client = _client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], filter_string=filter_string,
                                  order_by=["attributes.start_time ASC"], max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def read_json_artifact(run_id: str, path: str) -> dict | None:
    """A run's JSON artifact at `path` (None: the run has none, e.g. it predates it)."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = _client().download_artifacts(run_id, path, tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(local).read_text())


def run_metrics(run_id: str) -> dict[str, float]:
    """Each metric's latest value on a run (none for a run the store does not hold, e.g. a
    lineage tag pointing at a deleted run)."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(_client().get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in _client().get_metric_history(run_id, key)]



def mlflow_ui_app():
    """MLflow's own ASGI app, what `mlflow ui` serves (`rotnet.ui_view.ui_app` wraps it)."""
    from mlflow.server.fastapi_app import app

    return app
