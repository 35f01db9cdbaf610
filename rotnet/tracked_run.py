"""One MLflow run's handle, what `tracking.Tracker.start` (or `on_run`) returns: everything
logged through it goes to its own run — metrics per epoch, tags, artifacts, the data set
it read, its network as an MLflow model — and `finish` ends it. `NullRun` is the handle of
an untracked run: it logs nothing.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

MLFLOW_BATCH = 100  # MLflow caps a batch at 100 params or tags
SPLITS = ("test", "validation")  # the split a run's accuracies are measured on


def metric_key(name: str, split: str = "test") -> str:
    """The MLflow name of metric `name` (the engine's: `test_acc`, `best_test_acc`,
    `test_acc_class_<c>`) for a run measured on `split`: a tune trial's "test" split is the
    validation split carved from the training set, so it logs `val_acc`, `best_val_acc`,
    `val_acc_class_<c>`."""
    if split == "test":
        return name
    for measured, named in (("best_test_", "best_val_"), ("test_", "val_")):
        if name.startswith(measured):
            return named + name[len(measured):]
    return name


class TrackedRun:
    """Logs to the MLflow run `run_id` only. `group_run_id`: the parent run of its group
    (`run_groups`), which `finish` ends with the same status: a group says how its latest
    child ended."""

    def __init__(self, connection, run_id: str, experiment_id: str,
                 group_run_id: str | None = None, split: str = "test"):
        self.connection = connection  # tracking.Connection: the store's client, opened once
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.group_run_id = group_run_id
        self.split = split

    @property
    def _client(self):
        return self.connection.client

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[
            Metric(metric_key(k, self.split), float(v), now, step) for k, v in metrics.items()])

    def log_epoch(self, metrics: dict) -> None:
        """One history entry, at step = its epoch."""
        self.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=metrics["epoch"])

    def log_missing_epochs(self, history: list[dict]) -> None:
        """Re-log the epochs of a resumed run's history that a kill kept out of MLflow."""
        # train_loss: every epoch logs it (test_acc only a scored one, pretrain.eval_every)
        logged = {m.step for m in self._client.get_metric_history(self.run_id, "train_loss")}
        for metrics in history:
            if metrics["epoch"] not in logged:
                self.log_epoch(metrics)

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), MLFLOW_BATCH):
            self._client.log_batch(self.run_id, tags=items[start:start + MLFLOW_BATCH])

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]  # MLflow's longest param value
        for start in range(0, len(items), MLFLOW_BATCH):
            self._client.log_batch(self.run_id, params=items[start:start + MLFLOW_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """`path` among the run's artifacts (in folder `artifact_path`; the UI previews a PNG)."""
        self._client.log_artifact(self.run_id, str(path), artifact_path)

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
        with self.connection.lock():
            self._client.log_inputs(self.run_id, datasets=[DatasetInput(
                dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])])

    def log_model(self, module, input_example, name: str = "model") -> str | None:
        """`module` (a torch nn.Module) as this run's MLflow model, with the signature of
        `input_example` (a numpy batch) and its output: "Logged models" lists it and
        `mlflow.pytorch.load_model(f"models:/{model_id}")` loads it back. Returns its id."""
        import mlflow
        import torch

        with torch.no_grad():
            output = module(torch.from_numpy(input_example)).numpy()
        signature = mlflow.models.infer_signature(input_example, output)
        # MLflow's model logging goes through its global store and experiment: this run's.
        mlflow.set_tracking_uri(self.connection.uri)
        mlflow.set_experiment(experiment_id=self.experiment_id)  # where the model is listed
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

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status=status)
        if self.group_run_id:
            self._client.set_terminated(self.group_run_id, status=status)


class NullRun(TrackedRun):
    """An untracked run (tracking switched off, or a rank other than 0): logs nothing.
    `run_id` is the run a checkpoint names, if any, else empty."""

    def __init__(self, run_id: str = ""):
        super().__init__(None, run_id, "")

    def log_metrics(self, metrics, step) -> None:
        pass

    def log_missing_epochs(self, history) -> None:
        pass

    def set_tags(self, tags) -> None:
        pass

    def log_params(self, params) -> None:
        pass

    def log_artifact(self, path, artifact_path=None) -> None:
        pass

    def log_dataset(self, name, features, targets, source, context) -> None:
        pass

    def log_model(self, module, input_example, name="model") -> None:
        return None

    def finish(self, status="FINISHED") -> None:
        pass
