"""The paper's Tables 1-3 and 9 and Figures 5a/5b, read back from the MLflow runs (through
`rotnet.tracking` only): which run fills which cell and point (`collect`). Writing them as
Markdown, PNG and `runs.json` under `reports/` is `rotnet.report_render`'s.

Which run fills which cell: its tags name the cell (see `table_specs`), and its protocol
fingerprint (`rotnet.protocol`) must equal the one the reported params imply for that cell,
so a run of another protocol (another lr, fewer epochs) never fills it. A cell has one
replicate per seed of params' `seeds`: the fingerprint differs only in the seed (the params
with runtime.seed = that seed), so a cell holds the same protocol's runs, one per seed, and
states their mean ± sd (`rotnet.spread`). Per replicate, the most recent such FINISHED run
wins (start time, then run id, so ties are deterministic); a cell with none shows "—" (not
run), so a half-finished pipeline still reports. Runs with a `figure5` tag
(semi-supervised subsets, snapshot probes) never fill a table cell: they were trained on
less data or on an unfinished backbone. Every file is a pure function of the runs, written
atomically and only when its bytes change, so rerunning without new runs changes nothing.
Figures with no runs yet are still written, saying "no ... runs yet" (a DVC output must
exist), and figures.md says the same.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from rotnet import protocol, tracking
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.spread import Spread, spread_of
from rotnet.registry import BASELINE, RANDOM_BACKBONES, parse_variant, rotation_set_label

# The figure series (the names in runs.json, figures.md and the claims)
SNAPSHOT_PROBE, SNAPSHOT_ROTATION = "non-linear probe on block 2", "rotation prediction (snapshot)"
ROTNET_CONV, SUPERVISED = "RotNet + conv (block 2)", "supervised NIN"

PAPER_DATASET = "cifar10"  # the data set of every number in PAPER
# The paper's CIFAR-10 test accuracies (%): Tables 1-3 of Gidaris, Singh, Komodakis,
# "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018. Tables 1
# and 2 are keyed by variant (`tests/test_registry.py` checks them against rotnet.registry).
PAPER = {
    "table1": {"b3-r4": (85.45, 88.26, 62.09), "b4-r4": (85.07, 89.06, 86.21, 61.73),
               "b5-r4": (85.04, 89.76, 86.82, 74.50, 50.37)},  # blocks B1, B2, ...
    "table2": {"b4-r4": 89.06, "b4-r8": 88.51, "b4-r2": 87.46, "b4-r2-perp": 85.52},
    # Random init + conv: most likely run with BatchNorm as initialised (the authors' code
    # loads no weights into it), so the paper's number belongs to that row only.
    "table3": {"supervised": 92.80, "random-conv-initial-bn": 72.50, "nonlinear": 89.06, "conv": 91.16,
               "nonlinear-finetuned": 91.73, "conv-finetuned": 92.17},
    # Table 9 (appendix B): per-class accuracy, CIFAR-10 class names in the data set's order.
    "table9": {"supervised": (93.7, 96.3, 89.4, 82.4, 93.6, 89.7, 95.0, 94.3, 95.7, 95.2),
               "conv": (91.7, 95.8, 87.1, 83.5, 91.5, 85.3, 94.2, 91.9, 95.7, 94.2)},
    "prior_work": {"Roto-Scat + SVM": 82.3, "Exemplar CNN": 84.3, "DCGAN": 82.8,
                   "Scattering": 84.7},
}

@dataclass(frozen=True)
class Run:
    run_id: str
    experiment_id: str
    name: str
    start_time: int
    tags: dict
    value: float  # test_acc at the last step: the final epoch
    best: float | None  # best_test_acc, kept only as a separately labelled number
    per_class: tuple[tuple[str, float], ...] = ()  # (class, final-epoch test accuracy)


@dataclass(frozen=True)
class Replicate:
    seed: int
    fingerprint: str  # what params.yaml implies for this cell with this seed; `run` carries it
    run: Run | None


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    column: str
    paper: float | None
    replicates: tuple[Replicate, ...]  # one per seed of params' `seeds`, in that order
    key: str = ""  # what names the cell in code: table1/b4-r4/B2, table2/b4-r8, table3/conv

    @property
    def runs(self) -> list[Run]:
        return [r.run for r in self.replicates if r.run is not None]

    @property
    def run(self) -> Run | None:
        """The first seed's run that exists (what a single link points to)."""
        return next(iter(self.runs), None)

    @property
    def fingerprints(self) -> list[str]:
        return [r.fingerprint for r in self.replicates]

    @functools.cached_property
    def spread(self) -> Spread | None:
        return runs_spread(self.runs)

    @property
    def value(self) -> float | None:
        """The mean over the seeds' runs."""
        return None if self.spread is None else self.spread.mean

    @property
    def diff(self) -> float | None:
        return None if self.value is None or self.paper is None else self.value - self.paper


def runs_spread(runs: list[Run]) -> Spread | None:
    """Mean, sd and test-set SE of the runs' final accuracies (None: no runs)."""
    return spread_of([r.value for r in runs], scored_images(runs))


def scored_images(runs: list[Run]) -> int | None:
    """How many test images the runs were scored on (their `test_images` tag; the fewest
    where they differ); None where no run recorded it."""
    counts = [int(r.tags["test_images"]) for r in runs if r.tags.get("test_images", "").isdigit()]
    return min(counts, default=None)


@dataclass(frozen=True)
class Point:
    figure: str
    series: str
    x: float
    value: float
    run: Run

    @property
    def fingerprint(self) -> str:
        return self.run.tags["fingerprint"]

    @property
    def key(self) -> str:
        """What names the point in code: figure5a/epoch5, figure5b/conv/k100."""
        if self.figure == "figure5a":  # both series of a snapshot come from one run
            return f"figure5a/epoch{self.x:g}"
        return f"figure5b/{'conv' if self.series == ROTNET_CONV else 'supervised'}/k{self.x:g}"


@dataclass
class ReportData:
    profile: str
    dataset: str
    tracking_uri: str
    cells: list[Cell]
    points: list[Point]
    precision: str = ""  # the resolved precision of every run that fills a cell or point

    def not_run(self) -> list[Cell]:
        """Cells that miss a run for any of their seeds (`rotnet report --strict`)."""
        return [c for c in self.cells if any(r.run is None for r in c.replicates)]

    def table(self, name: str) -> list[Cell]:
        return [c for c in self.cells if c.table == name]

    def cell(self, table: str, row: str, column: str = "accuracy") -> Cell:
        return next(c for c in self.cells if (c.table, c.row, c.column) == (table, row, column))

    def by_key(self, key: str) -> Cell | None:
        return next((c for c in self.cells if c.key == key), None)

    def series(self, figure: str, series: str) -> list[Point]:
        return sorted((p for p in self.points if (p.figure, p.series) == (figure, series)),
                      key=lambda p: p.x)


def table_specs() -> list[tuple[str, str, str, str, float | None, dict]]:
    """(key, table, row, column, paper value, tags the run must have) for every table cell."""
    specs = []
    for variant, paper in PAPER["table1"].items():
        for block, value in enumerate(paper, 1):
            specs.append((f"table1/{variant}/B{block}", "table1",
                          f"RotNet {parse_variant(variant)[0]} blocks", f"B{block}", value,
                          {"method": "nonlinear", "variant": variant, "block": str(block)}))
    for variant, value in PAPER["table2"].items():
        row = rotation_set_label(parse_variant(variant)[1])
        specs.append((f"table2/{variant}", "table2", row, "accuracy", value,
                      {"method": "nonlinear", "variant": variant, "block": "2"}))
    on_rotnet = {"variant": BASELINE, "block": "2"}  # the baseline RotNet's block 2
    on_random = {"block": "2", "method": "conv"}  # a random backbone has no variant
    rows3 = [("Supervised NIN", "supervised", {"task": "supervised"}),
             ("Random init + conv (BatchNorm as initialised)", "random-conv-initial-bn",
              {**on_random, "backbone": RANDOM_BACKBONES[False]}),
             ("Random init + conv (BatchNorm calibrated on training images)", "random-conv",
              {**on_random, "backbone": RANDOM_BACKBONES[True]}),
             ("RotNet + non-linear", "nonlinear", {**on_rotnet, "method": "nonlinear"}),
             ("RotNet + conv", "conv", {**on_rotnet, "method": "conv"}),
             ("RotNet + non-linear (fine-tuned)", "nonlinear-finetuned",
              {**on_rotnet, "method": "nonlinear-finetuned"}),
             ("RotNet + conv (fine-tuned)", "conv-finetuned", {**on_rotnet, "method": "conv-finetuned"})]
    for row, key, want in rows3:
        specs.append((f"table3/{key}", "table3", row, "accuracy", PAPER["table3"].get(key), want))
    return specs


# ---- the fingerprint params imply for a run ------------------------------------------


def backbone_protocol(config: Config, want: dict, precision: str, epoch: int | None = None) -> dict:
    """The backbone a probe with tags `want` reads: the random one its `backbone` tag names,
    or its `variant`'s pretraining after `epoch` epochs (default: all of them)."""
    if want.get("backbone") in RANDOM_BACKBONES.values():
        return protocol.random_backbone(config, calibrated=want["backbone"] == RANDOM_BACKBONES[True])
    pretrain = config.with_variant(want["variant"])
    return protocol.pretrained_backbone(protocol.pretrain_fingerprint(pretrain, precision),
                                        epoch or pretrain.pretrain.optim.epochs)


def expected_fingerprint(config: Config, want: dict, *, subset_per_class: int | None = None,
                         snapshot_epoch: int | None = None, precision: str | None = None) -> str:
    """The fingerprint of the run with tags `want` that the pipeline makes from `config`
    (a semi-supervised run trains on `subset_per_class`; a snapshot probe reads the
    backbone after `snapshot_epoch` epochs) in `precision` (default: what the config's
    runtime resolves to on this machine)."""
    precision = precision or protocol.run_precision(config.runtime)
    semisup = subset_per_class is not None
    if want.get("task") == "pretrain":
        return protocol.pretrain_fingerprint(config.with_variant(want["variant"]), precision)
    if want.get("task") == "supervised":
        model = protocol.supervised_model(config.supervised.blocks, config.pretrain.width,
                                          subset_per_class)
        return protocol.fingerprint(config, config.semisup_optim("supervised") if semisup else
                                    config.supervised.optim, model, precision)
    head, finetune = want["method"].split("-")[0], want["method"].endswith("-finetuned")
    optim = (config.semisup_optim("conv") if semisup else config.finetune.optim if finetune else
             config.conv_probe.optim if head == "conv" else config.probe.optim)
    backbone = backbone_protocol(config, want, precision, snapshot_epoch)
    return protocol.fingerprint(config, optim, protocol.classifier_model(
        head, int(want["block"]), finetune, config.probe.hidden, backbone, subset_per_class,
        config.finetune.backbone_lr_scale), precision)


# ---- reading the runs ------------------------------------------------------------------


def finished_runs(profile: str, dataset: str) -> list[Run]:
    """Every FINISHED run of this profile and data set that logged a test accuracy."""
    for name, value in (("profile", profile), ("dataset", dataset)):
        if not re.fullmatch(r"[\w.+-]+", value):
            raise RotnetError(f"invalid {name} {value!r}")
    query = f"tags.profile = '{profile}' and tags.dataset = '{dataset}' and attributes.status = 'FINISHED'"
    try:
        found = tracking.search_runs(query)
    except Exception as err:  # a locked or corrupt store, an unreachable server
        raise RotnetError(f"cannot read the MLflow store at {tracking.tracking_uri()}: "
                          f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
    runs = [Run(r.info.run_id, str(r.info.experiment_id), r.data.tags.get("mlflow.runName", ""),
                r.info.start_time or 0, dict(r.data.tags), r.data.metrics["test_acc"],
                r.data.metrics.get("best_test_acc"), _per_class(r.data.metrics))
            for r in found if r.info.status == "FINISHED" and "test_acc" in r.data.metrics]
    if not runs:
        raise RotnetError(f"no finished runs for profile {profile} on data set {dataset} in "
                          f"{tracking.tracking_uri()}; run the pipeline (dvc repro) first")
    return runs


def _per_class(metrics: dict) -> tuple[tuple[str, float], ...]:
    prefix = tracking.CLASS_METRIC_PREFIX
    return tuple(sorted((k[len(prefix):], v) for k, v in metrics.items() if k.startswith(prefix)))


def latest(runs: list[Run], **want: str | None) -> Run | None:
    """The most recent run whose tags equal `want` (a None value: the tag must be absent)."""
    hits = [r for r in runs if all(r.tags.get(k) == v for k, v in want.items())]
    return max(hits, key=lambda r: (r.start_time, r.run_id), default=None)


def latest_by(runs: list[Run], key: str, fingerprint_at, **want: str | None) -> dict[float, Run]:
    """The most recent matching run per integer value x of tag `key` (e.g. snapshot_epoch)
    whose fingerprint is `fingerprint_at(x)`."""
    out: dict[float, Run] = {}
    for run in runs:
        x = run.tags.get(key, "")
        if not x.isdigit():
            continue
        x = int(x)
        if (all(run.tags.get(k) == v for k, v in want.items())
                and run.tags.get("fingerprint") == fingerprint_at(x)):
            if x not in out or (run.start_time, run.run_id) > (out[x].start_time, out[x].run_id):
                out[x] = run
    return dict(sorted(out.items()))


def protocol_to_report(params: Path, exp: str | None = None, profile: str | None = None,
                       dataset: str | None = None) -> tuple[Config, str | None]:
    """The protocol `rotnet report` reports, and the reports/ subfolder it goes to (None:
    reports/ itself): a profile's defaults, a DVC experiment's params, or a params file
    (params.yaml, the pipeline's own, by default); `dataset` overrides its data set."""
    from rotnet.config import merge
    from rotnet.params import nested, read_params, revision_params

    if profile:
        values, label = {"profile": profile}, profile
    elif exp:
        values, label = revision_params(exp), exp
    else:
        default = params == Path("params.yaml")
        values = read_params(params) if params.exists() or not default else {}
        label = None if default else params.stem
    overrides = nested({"data.dataset": dataset} if dataset else {})
    return Config.from_dict(merge(values, overrides)), label


def collect(config: Config, precision: str | None = None) -> ReportData:
    """The run behind every table cell and figure point of the protocol `config` states, run
    in `precision` (default: what config's runtime resolves to on this machine); cells may
    have none."""
    precision = precision or protocol.run_precision(config.runtime)
    runs = finished_runs(config.profile, config.data.dataset)
    by_fingerprint: dict[str, list[Run]] = {}  # a cell's runs are found among its fingerprint's
    for run in runs:
        by_fingerprint.setdefault(run.tags.get("fingerprint"), []).append(run)
    seeded = {seed: config.with_seed(seed) for seed in config.seeds}
    cells = []
    for key, table, row, column, paper, want in table_specs():
        replicates = []
        for seed, seed_config in seeded.items():
            fingerprint = expected_fingerprint(seed_config, want, precision=precision)
            replicates.append(Replicate(seed, fingerprint, latest(
                by_fingerprint.get(fingerprint, []), figure5=None, fingerprint=fingerprint, **want)))
        cells.append(Cell(table, row, column, paper, tuple(replicates), key))
    points = [p for seed_config in seeded.values()
              for p in figure_points(seed_config, runs, precision)]
    return ReportData(config.profile, config.data.dataset, tracking.tracking_uri(), cells, points,
                      precision)


def figure_points(config: Config, runs: list[Run], precision: str | None = None) -> list[Point]:
    """Figure 5a (snapshot probes) and 5b (semi-supervised) points of the protocol `config`
    (its runtime.seed's runs: `collect` calls it once per seed)."""
    points = []
    probe_on_snapshot = {"method": "nonlinear", "block": str(config.snapshots.block), "variant": BASELINE}
    snaps = latest_by(runs, "snapshot_epoch", lambda epoch: expected_fingerprint(
        config, probe_on_snapshot, snapshot_epoch=epoch, precision=precision),
        figure5="snapshots", **probe_on_snapshot)
    for epoch, run in snaps.items():
        points.append(Point("figure5a", SNAPSHOT_PROBE, epoch, run.value, run))
        try:  # the snapshot's own rotation accuracy, recorded as a tag by the snapshot probe
            rotation = float(run.tags["snapshot_rotation_acc"])
        except (KeyError, ValueError):
            continue
        points.append(Point("figure5a", SNAPSHOT_ROTATION, epoch, rotation, run))
    if config.pretrain.optim.epochs not in snaps:
        points += fully_pretrained_points(config, runs, precision)
    for series, want in ((ROTNET_CONV, {"method": "conv", "block": "2", "variant": BASELINE}),
                         (SUPERVISED, {"task": "supervised"})):
        def fingerprint_at(k: int, want=want) -> str | None:
            return (expected_fingerprint(config, want, subset_per_class=k, precision=precision)
                    if k in config.semisup.per_class else None)

        for k, run in latest_by(runs, "subset_per_class", fingerprint_at, figure5="semisup",
                                **want).items():
            points.append(Point("figure5b", series, k, run.value, run))
    return points + whole_set_supervised_point(config, runs, precision)


def fully_pretrained_points(config: Config, runs: list[Run], precision: str | None = None) -> list[Point]:
    """Figure 5a's last snapshot, the fully pretrained baseline: its probe is Table 1's run
    (the same fingerprint; `figure5.snapshots_to_probe` does not train it twice) and its
    rotation accuracy the pretraining run's own."""
    want = {"method": "nonlinear", "block": str(config.snapshots.block), "variant": BASELINE}
    probe = latest(runs, figure5=None, fingerprint=expected_fingerprint(config, want, precision=precision),
                   **want)
    if probe is None:
        return []
    epoch = config.pretrain.optim.epochs
    pretraining = next((r for r in runs if r.run_id == probe.tags.get("pretrain_run_id")), None)
    return [Point("figure5a", SNAPSHOT_PROBE, epoch, probe.value, probe)] + (
        [Point("figure5a", SNAPSHOT_ROTATION, epoch, pretraining.value, probe)] if pretraining else [])


def whole_set_supervised_point(config: Config, runs: list[Run],
                               precision: str | None = None) -> list[Point]:
    """Figure 5b's supervised point at K = all training images per class (5000 on CIFAR-10):
    the Table 3 supervised run, trained once (`figure5.semisup_methods`)."""
    want = {"task": "supervised"}
    run = latest(runs, figure5=None, fingerprint=expected_fingerprint(
        config, want, precision=precision), **want)
    if run is None or "train_images" not in run.tags:  # older runs did not record their size
        return []
    per_class, rest = divmod(int(run.tags["train_images"]), int(run.tags["num_classes"]))
    if rest or per_class not in config.semisup.per_class:
        return []
    return [Point("figure5b", SUPERVISED, per_class, run.value, run)]
