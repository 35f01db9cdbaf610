"""`rotnet tune`: an Optuna study over the probe's (or pretraining's) optimiser settings.

What is tuned (the "search space", stored as the study's user attribute `definition`):
learning rate and weight decay (log-uniform) and the number of epochs (an integer); the
step schedule follows the epochs: milestones at 50%, 75% and 90% of them
(`scaled_milestones`, e.g. 100 epochs -> [50, 75, 90], 3 -> [1, 2], 1 -> []).

- Objective: the final-epoch accuracy on a class-stratified VALIDATION split carved out of
  the training set (`rotnet.data.validation_split`); the test set is never loaded into a trial.
- Storage: an Optuna RDB storage, by default sqlite at `<project_root>/optuna.db` (a
  relative sqlite path is made absolute). Rerunning with the same study name resumes it
  and adds `n_trials` more; a study of that name with a different definition is refused.
- Sampler: TPESampler seeded with `seed + <trials already in the study>`, so a resumed
  study does not replay the random start-up draws of its first call.
- Pruning: MedianPruner on the per-epoch validation accuracy (reported from the engine's
  `Hooks.on_epoch_end`); a pruned trial raises `engine.StopRun`, which `execute` turns into
  a KILLED MLflow run, tagged `pruned=true`.
- Tracking: MLflow experiment `rotnet-tune` (kept out of the `rotnet` experiment that the
  report reads): one study run, every trial a nested run (tag `mlflow.parentRunId`) whose
  accuracies are logged as what they are, `val_acc` per epoch and `best_val_acc` (the
  engine calls its evaluation split "test"; here it is the validation split); the study
  run gets the best value (metric `best_value`) and params (tags `best.*`).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from rotnet.config import Config, OptimConfig
from rotnet.config import flatten as config_flatten
from rotnet.errors import RotnetError
from rotnet.provenance import project_root
from rotnet.registry import variant_name
from rotnet.store import SQLITE_PREFIX, sqlite_path
from rotnet.tracked_run import TrackedRun
from rotnet.tracking import Tracker, as_params

TARGETS = ("probe", "pretrain")
TUNE_EXPERIMENT = "rotnet-tune"
MILESTONE_FRACTIONS = (0.5, 0.75, 0.9)
LR_RANGE = (1e-3, 0.3)
WEIGHT_DECAY_RANGE = (1e-5, 1e-2)
DEFINITION_ATTR = "definition"
RUN_ATTR = "mlflow_run_id"


@dataclass
class TuneResult:
    study_name: str
    storage: str
    study_run_id: str
    target: str
    best_number: int
    best_value: float  # validation accuracy (%), final epoch
    best_params: dict  # lr, weight_decay, epochs, milestones
    n_trials: int  # trials in the study, all states
    n_complete: int
    n_pruned: int


def scaled_milestones(epochs: int) -> list[int]:
    """LR steps at 50%/75%/90% of the epochs (floored, duplicates and epoch 0 dropped)."""
    return sorted({int(epochs * f) for f in MILESTONE_FRACTIONS} - {0})


def resolve_storage(storage: str | None) -> str:
    """An Optuna storage URL; sqlite paths (or a bare file path) made absolute."""
    if not storage:
        return f"{SQLITE_PREFIX}{project_root() / 'optuna.db'}"
    if "://" not in storage:
        path = Path(storage).expanduser().resolve()
    elif sqlite_path(storage) is not None:
        path = sqlite_path(storage).expanduser()
        path = path if path.is_absolute() else path.resolve()
    else:
        return storage  # postgresql://, mysql://: used as given
    if not path.parent.is_dir():
        raise RotnetError(f"the directory of the Optuna storage {path} does not exist")
    return f"{SQLITE_PREFIX}{path}"


def search_space(target: str, epochs_range: tuple[int, int]) -> dict:
    return {"section": f"{target}.optim",
            "lr": {"distribution": "log-uniform", "low": LR_RANGE[0], "high": LR_RANGE[1]},
            "weight_decay": {"distribution": "log-uniform", "low": WEIGHT_DECAY_RANGE[0],
                             "high": WEIGHT_DECAY_RANGE[1]},
            "epochs": {"distribution": "int", "low": epochs_range[0], "high": epochs_range[1]},
            "milestones": {"fractions_of_epochs": list(MILESTONE_FRACTIONS)}}


def trial_optim(base: OptimConfig, params: dict) -> OptimConfig:
    return replace(base, lr=float(params["lr"]), weight_decay=float(params["weight_decay"]),
                   epochs=int(params["epochs"]), milestones=scaled_milestones(int(params["epochs"])))


def trial_line(trial) -> str:
    """One finished trial as the CLI prints it: number, state, score, sampled values."""
    value = f"{trial.value:.2f}%" if trial.value is not None else "-"
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in trial.params.items())
    return f"trial {trial.number}: {trial.state.name.lower()} {value}  {shown}"


def best_values(params: dict) -> dict:
    """The best trial's values as written to params.yaml / the dvc line (rounded to 6 digits)."""
    optim = trial_optim(OptimConfig(), params)
    return {"lr": float(f"{optim.lr:.6g}"), "weight_decay": float(f"{optim.weight_decay:.6g}"),
            "epochs": optim.epochs, "milestones": optim.milestones}


def dvc_command(target: str, params: dict) -> str:
    """A ready-to-paste `dvc exp run -S ...` line with the best values."""
    parts = ["dvc", "exp", "run"]
    for key, value in best_values(params).items():
        text = json.dumps(value, separators=(",", ":"))  # floats already rounded: 0.0121327
        parts += ["-S", shlex.quote(f"{target}.optim.{key}={text}")]
    return " ".join(parts)


def write_params(path: str | Path, target: str, params: dict) -> None:
    """Write the best values into `<target>.optim` of a params.yaml, atomically, keeping the
    rest of the file (comments too, through ruamel.yaml's round trip); validated first."""
    import io

    import yaml

    from rotnet.files import atomic_write_text
    from rotnet.params import yaml_load

    path = Path(path)
    if not path.is_file():
        raise RotnetError(f"params file not found: {path}")
    values = best_values(params)
    text = path.read_text()
    try:
        from ruamel.yaml import YAML

        rt = YAML()
        rt.preserve_quotes = True
        rt.width = 100
        doc = rt.load(text) or {}
        section = doc.setdefault(target, {}).setdefault("optim", {})
        for key, value in values.items():
            section[key] = value
        buffer = io.StringIO()
        rt.dump(doc, buffer)
        new_text = buffer.getvalue()
    except ImportError:  # plain PyYAML: the values are kept, the comments are not
        doc = yaml_load(text) or {}
        doc.setdefault(target, {}).setdefault("optim", {}).update(values)
        new_text = yaml.safe_dump(doc, sort_keys=False)
    except Exception as err:
        raise RotnetError(f"cannot update {path}: {str(err).splitlines()[0]}") from None
    Config.from_dict(yaml_load(new_text))  # never write a params file the pipeline rejects
    atomic_write_text(path, new_text)


def _check_request(target: str, n_trials: int, epochs_range: tuple[int, int]) -> None:
    if target not in TARGETS:
        raise RotnetError(f"unknown tuning target {target!r}; choose one of {', '.join(TARGETS)}")
    if n_trials < 1:
        raise RotnetError(f"the number of trials must be at least 1 (got {n_trials})")
    low, high = epochs_range
    if low < 1 or high < low:
        raise RotnetError(f"the epoch range must satisfy 1 <= min <= max (got {low}..{high})")


@dataclass
class _Inputs:
    """What every trial reads, loaded and checked before the study is touched."""

    backbone: object  # experiments.Backbone, or None for the pretraining target
    val_data: object  # the training set's validation split (rotnet.data.ImageData)
    base_optim: OptimConfig
    epochs_range: tuple[int, int]
    definition: dict  # search space + objective, stored with the study
    default_name: str


def tune(config: Config, checkpoint: str | Path | None = None, *, target: str = "probe",
         block: int = 2, n_trials: int = 20, study_name: str | None = None,
         storage: str | None = None, seed: int = 0, val_fraction: float = 0.1,
         min_epochs: int | None = None, max_epochs: int | None = None,
         out_dir: str | Path | None = None, pruner=None, tracker: Tracker | None = None,
         on_trial: Callable[[object], None] | None = None) -> TuneResult:
    """Run (or resume) a study and return its best trial. Bad input is a RotnetError raised
    before the study, any MLflow run or any output exists."""
    inputs = _load_inputs(config, checkpoint, target, block, n_trials, val_fraction,
                          (min_epochs, max_epochs))
    study_name = study_name or inputs.default_name
    study, storage_url, study_run_id = _open_study(study_name, storage, inputs.definition, seed,
                                                   pruner)
    tracker = tracker if tracker is not None else Tracker(TUNE_EXPERIMENT)
    study_run = tracker.start(
        f"tune-{study_name}", as_params({"tune": inputs.definition, "sampler_seed": seed}),
        {"task": "tune", "optuna.study": study_name, "optuna.storage": storage_url,
         "target": target, "profile": config.profile, "dataset": config.data.dataset},
        resume_run_id=study_run_id)
    if study_run.run_id:
        study.set_user_attr(RUN_ATTR, study_run.run_id)
    trials_root = Path(out_dir) if out_dir else project_root() / "outputs" / "tune"
    trials_root = trials_root / re.sub(r"[^A-Za-z0-9_.-]+", "_", study_name)
    objective = _Objective(config, target, block, inputs, study_name, tracker, study_run, trials_root)
    callbacks = [lambda _study, trial: on_trial(trial)] if on_trial else []
    try:
        study.optimize(objective, n_trials=n_trials, callbacks=callbacks, gc_after_trial=True)
    except BaseException as err:
        study_run.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    return _summary(study, study_run, target, storage_url)


def _load_inputs(config: Config, checkpoint: str | Path | None, target: str, block: int,
                 n_trials: int, val_fraction: float, epochs: tuple[int | None, int | None]) -> _Inputs:
    """The backbone, the validation split and the study's definition; refused early."""
    from rotnet import experiments
    from rotnet.data import validation_split

    base_optim = config.probe.optim if target == "probe" else config.pretrain.optim
    base_epochs = base_optim.epochs if target in TARGETS else 1
    epochs_range = (epochs[0] or max(1, base_epochs // 4), epochs[1] or base_epochs)
    _check_request(target, n_trials, epochs_range)
    backbone = None
    if target == "probe":
        if checkpoint is None:
            raise RotnetError("tuning the probe needs a pretraining checkpoint")
        backbone = experiments.load_backbone(checkpoint)
    data = experiments.load_dataset(config)
    if backbone is not None:
        experiments.check_backbone(backbone, channels=data.channels, block=block)
    val_data = validation_split(data, val_fraction, config.runtime.seed)
    del data  # the test split goes no further

    objective_def = {"target": target, "metric": "final-epoch validation accuracy (%)",
                     "dataset": config.data.dataset, "profile": config.profile,
                     "train_size": config.data.train_size, "val_fraction": val_fraction,
                     "split_seed": config.runtime.seed}
    if target == "probe":
        objective_def.update(block=block, head="nonlinear",
                             checkpoint_sha256=backbone.lineage["pretrain_checkpoint_sha256"])
        default_name = f"probe-{backbone.label}-block{block}-{config.profile}"
    else:
        default_name = (f"pretrain-{variant_name(config.pretrain.blocks, config.pretrain.rotations)}"
                        f"-{config.profile}")
    definition = {"search_space": search_space(target, epochs_range), "objective": objective_def}
    return _Inputs(backbone, val_data, base_optim, epochs_range, definition, default_name)


def _open_study(study_name: str, storage: str | None, definition: dict, seed: int, pruner):
    """(the Optuna study, its storage URL, its MLflow run id if it has one); a stored study
    of this name with another definition is refused."""
    import optuna

    storage_url = resolve_storage(storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        rdb = optuna.storages.RDBStorage(storage_url)
    except Exception as err:
        raise RotnetError(f"cannot open the Optuna storage {storage_url}: "
                          f"{str(err).splitlines()[0][:200]}") from None
    existing_trials, study_run_id = 0, None
    try:
        study_id = rdb.get_study_id_from_name(study_name)
    except KeyError:
        study_id = None
    if study_id is not None:
        stored = rdb.get_study_user_attrs(study_id).get(DEFINITION_ATTR)
        if stored != json.loads(json.dumps(definition)):
            changed = _differences(stored or {}, definition)
            raise RotnetError(f"study {study_name!r} in {storage_url} was created with a different "
                              f"search space or objective ({', '.join(changed) or 'none stored'}); "
                              f"use another --study name")
        existing_trials = len(rdb.get_all_trials(study_id, deepcopy=False))
        study_run_id = rdb.get_study_user_attrs(study_id).get(RUN_ATTR)

    study = optuna.create_study(
        study_name=study_name, storage=rdb, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed + existing_trials),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    study.set_user_attr(DEFINITION_ATTR, definition)
    return study, storage_url, study_run_id


@dataclass
class _Objective:
    """One trial: sample the optimiser, train on the validation split, return its final
    accuracy; pruned (MedianPruner) on the per-epoch validation accuracy. Its run nests under
    the study's run (`study_run`)."""

    config: Config
    target: str
    block: int
    inputs: _Inputs
    study_name: str
    tracker: Tracker
    study_run: TrackedRun
    trials_root: Path

    def __call__(self, trial) -> float:
        import optuna

        from rotnet.engine import StopRun

        params = {"lr": trial.suggest_float("lr", *LR_RANGE, log=True),
                  "weight_decay": trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True),
                  "epochs": trial.suggest_int("epochs", *self.inputs.epochs_range)}
        optim = trial_optim(self.inputs.base_optim, params)
        trial.set_user_attr("milestones", optim.milestones)
        trial_dir = self.trials_root / f"trial-{trial.number:04d}"
        shutil.rmtree(trial_dir, ignore_errors=True)  # a new trial number is a new run
        trial_tracker = self.tracker.nest_under_run(self.study_run, {
            "optuna.study": self.study_name, "optuna.trial": str(trial.number),
            "split": "validation"}, split="validation")
        try:
            result = self._train(trial, optim, trial_dir, trial_tracker)
        except StopRun:
            self._tag_trial_run(trial, trial_dir, trial_tracker, pruned=True)
            raise optuna.TrialPruned() from None
        except BaseException:
            self._tag_trial_run(trial, trial_dir, trial_tracker, pruned=None)
            raise
        self._tag_trial_run(trial, trial_dir, trial_tracker, pruned=False)
        # The engine's "test_acc" of a trial is measured on the validation split.
        return float(result.metrics["test_acc"])

    @staticmethod
    def _tag_trial_run(trial, trial_dir: Path, tracker: Tracker, pruned: bool | None) -> None:
        """Link the trial to its MLflow run (the one its folder records, if it got that far)
        and tag the run pruned or not (`pruned` None: it failed, left untagged)."""
        from rotnet.experiments import recorded_run_id

        run_id = recorded_run_id(trial_dir)
        if not run_id:
            return
        trial.set_user_attr(RUN_ATTR, run_id)
        if pruned is not None:
            tracker.on_run(run_id).set_tags({"pruned": str(pruned).lower()})

    def _train(self, trial, optim: OptimConfig, trial_dir: Path, tracker: Tracker):
        from rotnet import experiments
        from rotnet.engine import Hooks, StopRun

        def on_epoch_end(metrics: dict) -> None:
            if "test_acc" not in metrics:  # an unscored pretraining epoch (pretrain.eval_every)
                return
            trial.report(metrics["test_acc"], metrics["epoch"])  # validation accuracy here
            if trial.should_prune():
                raise StopRun(f"trial {trial.number} pruned at epoch {metrics['epoch']}")

        hooks, config = Hooks(on_epoch_end=on_epoch_end), self.config
        if self.target == "probe":
            return experiments.probe(replace(config, probe=replace(config.probe, optim=optim)),
                                     self.inputs.backbone, head="nonlinear", block=self.block,
                                     optim=optim, out_dir=trial_dir, tracker=tracker, hooks=hooks,
                                     data=self.inputs.val_data,
                                     extra_tags={"optuna.trial": trial.number})
        return experiments.pretrain(replace(config, pretrain=replace(config.pretrain, optim=optim)),
                                    trial_dir, tracker=tracker, hooks=hooks,
                                    data=self.inputs.val_data)


def _summary(study, study_run: TrackedRun, target: str, storage_url: str) -> TuneResult:
    """The best trial, logged on the study run (which this finishes)."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    if not complete:
        study_run.finish("FAILED")
        raise RotnetError(f"study {study.study_name!r} has no completed trial yet (all "
                          f"{len(trials)} pruned or failed); run more trials")
    best = study.best_trial
    best_params = {**best.params, "milestones": scaled_milestones(int(best.params["epochs"]))}
    study_run.log_metrics({"best_value": best.value, "n_trials": len(trials),
                           "n_complete": len(complete), "n_pruned": len(pruned)},
                          step=len(trials))
    study_run.set_tags({"best.trial": best.number, "best.value": f"{best.value:.4f}",
                        "best.run_id": best.user_attrs.get(RUN_ATTR, ""),
                        **{f"best.{k}": v for k, v in best_params.items()},
                        "best.dvc_command": dvc_command(target, best_params)})
    study_run.finish("FINISHED")
    return TuneResult(study.study_name, storage_url, study_run.run_id, target, best.number,
                      float(best.value), best_params, len(trials), len(complete), len(pruned))


def _differences(stored: dict, wanted: dict) -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    a, b = config_flatten(stored), config_flatten(wanted)
    return [key for key in sorted(set(a) | set(b), key=str) if json.dumps(a.get(key)) != json.dumps(b.get(key))]
