"""MLflow tracking, in three parts: the connection to the store (here: `Connection`, opened
once per store and process), what starts runs (here: `Tracker`, with the tags and the parent
its runs get) and one run's handle that `Tracker.start` returns (`rotnet.tracked_run`);
parent-run groups are `rotnet.run_groups`'. These are the only modules that import mlflow
(where the store is, and keeping it usable, is `rotnet.store`'s). The training loop never
sees MLflow: experiments hand it hooks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rotnet.config import flatten as config_flatten
from rotnet.errors import RotnetError
from rotnet.provenance import git_commit, project_root, source_name, source_tags  # noqa: F401
from rotnet.run_groups import PARENT_TAG, RunGroup, open_group
from rotnet.store import (artifact_root, check_reachable, check_sqlite_file,  # noqa: F401
                          record_ui_address, recorded_ui_address, relocate_artifacts, sqlite_path,
                          store_lock, tracking_uri)
from rotnet.tracked_run import SPLITS, NullRun, TrackedRun

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
ID_PREFIX = 8  # the characters of a run id a run's name ends in
ATTEMPT_TAG = "rotnet.attempt"  # the start of a run that an output folder records first


def ui_link(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """A link into the MLflow UI at `base` that opens in the model-training view."""
    page = f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{page}?{MODEL_TRAINING_VIEW}"


def experiment_id(experiment: str = EXPERIMENT) -> str | None:
    """The id of `experiment` in the store, or None before its first run."""
    if not store_exists():
        return None
    found = open_connection().client.get_experiment_by_name(experiment)
    return found.experiment_id if found is not None else None


def store_exists() -> bool:
    """False for a local sqlite store not made yet (any other store: True)."""
    path = sqlite_path(tracking_uri())
    return path is None or path.is_file()


def as_params(values: dict, prefix: str = "") -> dict[str, str]:
    """{"a": {"b": 1}} -> {"a.b": "1"}: MLflow params are flat strings."""
    return {key: str(value) for key, value in config_flatten(values, prefix).items()}


# ---- the connection ----------------------------------------------------------------------


class Connection:
    """The MLflow client of one store (its URI read once, from `store.tracking_uri`), with
    the experiments it has looked up; shared by every tracker, run and reader of the process
    that uses that store (`open_connection`)."""

    def __init__(self, uri: str):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        from mlflow.tracking import MlflowClient

        check_reachable(uri)  # fail in seconds, not after MLflow's minutes of HTTP retries
        check_sqlite_file(uri)
        mlflow.set_tracking_uri(uri)
        self.uri = uri
        self._experiments: dict[str, str] = {}
        with self.lock():
            # Opening a new sqlite store creates its tables; parallel workers (a DVC queue)
            # doing that at once collide, so it happens under a file lock. A copied or moved
            # project's store first points its artifacts at the folder beside it.
            relocate_artifacts(uri)
            self.client = MlflowClient(uri)
            self.client.search_experiments(max_results=1)

    def lock(self):
        """The store's lock (a file beside a local sqlite store; nothing for a server)."""
        return store_lock(self.uri)

    def experiment_id(self, name: str) -> str:
        """Experiment `name`'s id, made (in the model-training view) if the store lacks it."""
        if name not in self._experiments:
            with self.lock():  # two new runs must not both create the experiment
                self._experiments[name] = self._get_or_create_experiment(name)
        return self._experiments[name]

    def _get_or_create_experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING_KIND:  # made by an older rotnet
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG,
                                               MODEL_TRAINING_KIND)
            return found.experiment_id
        # Artifacts beside a local sqlite store (kept there if the project moves).
        return self.client.create_experiment(name, artifact_location=artifact_root(self.uri),
                                             tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})

    def create_run(self, experiment: str, run_name: str, tags: dict[str, str]) -> str:
        """A new RUNNING run named `run_name` with `tags` and where it comes from (the git
        commit and the command: `rotnet.provenance`); returns its id."""
        commit = git_commit()
        all_tags = {"mlflow.runName": run_name, "git_commit": commit, **source_tags(commit), **tags}
        return self.client.create_run(experiment, run_name=run_name, tags=all_tags).info.run_id

    def has_run(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:
            return False


_CONNECTIONS: dict[str, Connection] = {}  # by URI: each store is opened once per process


def open_connection() -> Connection:
    """The connection to the store `MLFLOW_TRACKING_URI` names (or the project's), opened
    on first use; a store that cannot be opened raises and is tried again next time."""
    uri = tracking_uri()
    if uri not in _CONNECTIONS:
        _CONNECTIONS[uri] = Connection(uri)
    return _CONNECTIONS[uri]


# ---- what starts runs --------------------------------------------------------------------


class Tracker:
    """Starts MLflow runs in `experiment`, each with `tags` (e.g. the DVC stage) and nested
    under `group`'s parent run or under the run `parent_run_id`, if given; `start` returns
    the run's handle, to log to. One tracker may start several runs in turn (a probe stage:
    one per block). `split`: what the runs' accuracies are measured on ("validation": a tune
    trial's, logged as `val_*`, see `tracked_run.metric_key`)."""

    def __init__(self, experiment: str = EXPERIMENT, tags: dict[str, str] | None = None,
                 group: RunGroup | None = None, parent_run_id: str | None = None,
                 split: str = "test"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        self.experiment = experiment
        self.tags = dict(tags or {})
        self.group = group
        self.parent_run_id = parent_run_id
        self.split = split

    def nest_under(self, group: RunGroup) -> "Tracker":
        """A tracker like this one whose runs nest under `group`'s parent run; this one is
        left as it was."""
        return Tracker(self.experiment, self.tags, group=group, split=self.split)

    def nest_under_run(self, run: TrackedRun, tags: dict[str, str],
                       split: str = "test") -> "Tracker":
        """A tracker whose runs nest under `run` (an Optuna study's run: its trials), with
        `tags` added to this one's and their accuracies measured on `split`."""
        return Tracker(self.experiment, {**self.tags, **tags}, parent_run_id=run.run_id, split=split)

    @property
    def connection(self) -> Connection:
        """The store's connection, with this tracker's experiment made; a store that cannot
        be reached is a one-line RotnetError."""
        try:
            connection = open_connection()
            connection.experiment_id(self.experiment)
        except RotnetError:
            raise
        except Exception as err:  # an unreachable server, a locked/corrupt store
            raise RotnetError(f"cannot reach the MLflow store at {tracking_uri()}: "
                              f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
        return connection

    def connect(self) -> None:
        """Reach the store now: a bad one is refused before any output is written."""
        self.connection

    def start(self, run_name: str, params: dict[str, str], tags: dict[str, str],
              resume_run_id: str | None = None) -> TrackedRun:
        """A new run (named `run_name`, then the first characters of its id), or the run
        `resume_run_id` reopened with `tags` set again; under the group's parent, if any."""
        connection = self.connection
        experiment = connection.experiment_id(self.experiment)
        tags = {**self.tags, **tags}
        group_run_id = None
        if self.group:  # opened here, after the run's input was checked: no empty parents
            tags[PARENT_TAG] = group_run_id = open_group(connection, experiment, self.group, self.tags)
        elif self.parent_run_id:
            tags[PARENT_TAG] = self.parent_run_id
        if resume_run_id and connection.has_run(resume_run_id):
            run = TrackedRun(connection, resume_run_id, experiment, group_run_id, self.split)
            connection.client.update_run(resume_run_id, status="RUNNING")
            run.set_tags(tags)
            return run
        run_id = connection.create_run(experiment, run_name, tags)
        # The name ends in what the reports cite, so the UI's search box finds it by that.
        connection.client.update_run(run_id, name=f"{run_name}-{run_id[:ID_PREFIX]}")
        run = TrackedRun(connection, run_id, experiment, group_run_id, self.split)
        run.log_params(params)
        return run

    def on_run(self, run_id: str) -> TrackedRun:
        """The handle of the existing run `run_id` (an analysis made after the run ended, e.g.
        its attention maps; the cells a report fills); its status is left as it is unless
        finished through it. RotnetError when the store has no such run."""
        connection = self.connection
        if not connection.has_run(run_id):
            raise RotnetError(f"run {run_id} is not in the MLflow store at {connection.uri}")
        return TrackedRun(connection, run_id, connection.experiment_id(self.experiment),
                          split=self.split)

    def open_group(self, group: RunGroup) -> TrackedRun:
        """`group`'s parent run (found and reopened, or created with this tracker's tags), as
        a handle: `run_groups.gather` nests runs made elsewhere under it."""
        connection = self.connection
        experiment = connection.experiment_id(self.experiment)
        return TrackedRun(connection, open_group(connection, experiment, group, self.tags), experiment)

    def close_orphan(self, run_id: str) -> None:
        """Mark a run a killed process left RUNNING as KILLED (a run in another store, or one
        that ended, is left alone)."""
        client = self.connection.client
        try:
            run = client.get_run(run_id)
        except Exception:
            return
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, status="KILLED")

    def close_attempt(self, attempt: str, keep: str | None = None) -> None:
        """Mark the runs of `attempt` (ATTEMPT_TAG) still RUNNING as KILLED: a process killed
        before it recorded their id made them. `keep` (the run a checkpoint resumes) stays."""
        if not re.fullmatch(r"[0-9a-f]+", attempt):  # a token this module wrote, or nothing
            return
        connection = self.connection
        found = connection.client.search_runs(
            [connection.experiment_id(self.experiment)],
            f"tags.`{ATTEMPT_TAG}` = '{attempt}' and attributes.status = 'RUNNING'")
        for run in found:
            if run.info.run_id != keep:
                connection.client.set_terminated(run.info.run_id, status="KILLED")


class NullTracker(Tracker):
    """Tracking switched off (a notebook, a machine without MLflow, some tests): its runs
    are `NullRun`s, which log nothing; it never opens a store."""

    def connect(self) -> None:
        pass

    def nest_under(self, group) -> "Tracker":
        return self

    def nest_under_run(self, run, tags, split="test") -> "Tracker":
        return self

    def start(self, run_name, params, tags, resume_run_id=None) -> TrackedRun:
        return NullRun(resume_run_id or "")

    def on_run(self, run_id) -> TrackedRun:
        return NullRun(run_id)

    def open_group(self, group) -> TrackedRun:
        return NullRun()

    def close_orphan(self, run_id) -> None:
        pass

    def close_attempt(self, attempt, keep=None) -> None:
        pass


# ---- reading the store -------------------------------------------------------------------


def search_runs(filter_string: str = "", experiment: str = EXPERIMENT) -> list:
    """The runs of the experiment matching an MLflow filter (any status), oldest first."""
    if not store_exists():  # reading must not create a store (nor print MLflow's set-up lines)
        return []
    client = open_connection().client
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
            local = open_connection().client.download_artifacts(run_id, path, tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(local).read_text())


def run_metrics(run_id: str) -> dict[str, float]:
    """Each metric's latest value on a run (none for a run the store does not hold, e.g. a
    lineage tag pointing at a deleted run)."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(open_connection().client.get_run(run_id).data.metrics)
    except MlflowException:
        return {}


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in open_connection().client.get_metric_history(run_id, key)]


def mlflow_ui_app():
    """MLflow's own ASGI app, what `mlflow ui` serves (`rotnet.ui_view.ui_app` wraps it)."""
    from mlflow.server.fastapi_app import app

    return app
