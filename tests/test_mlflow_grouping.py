"""MLflow as a reader browses it: a group's runs (Figure 5a/5b, an ablation) nested under one
parent run, also across reruns and resumes; the data set a run trained on in its inputs,
with a digest; the pretrained backbone in the pretraining run's artifacts."""

from __future__ import annotations

from helpers import tiny_config
from rotnet import experiments, figure5
from rotnet.subsets import write_label_subset
from rotnet.run_groups import GROUP_TAG, PARENT_TAG, RunGroup, gather
from rotnet.tracking import NullTracker, Tracker

GROUP = RunGroup(key="figure5b:test:s0", name="figure5b-test", tags={"profile": "smoke"})


def test_children_of_a_group_nest_under_one_parent_also_when_resumed(tracking_store):
    first = Tracker(group=GROUP).start("child-1", {}, {"task": "probe"})
    first.finish("KILLED")  # a killed child ...
    child = first.run_id
    second = Tracker(group=GROUP).start("child-1", {}, {"task": "probe"}, resume_run_id=child)
    assert second.run_id == child
    second.finish()  # ... resumed by another process, and a sibling started by a third
    sibling = Tracker(group=GROUP).start("child-2", {}, {"task": "probe"})
    sibling.finish()
    runs = {r.info.run_id: r for r in tracking_store.runs()}
    [parent] = [r for r in runs.values() if r.data.tags.get(GROUP_TAG) == GROUP.key]
    assert len(runs) == 3 and parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.runName"] == "figure5b-test"
    for run_id in (child, sibling.run_id):
        assert runs[run_id].data.tags[PARENT_TAG] == parent.info.run_id
        assert runs[run_id].info.status == "FINISHED"


def test_figure5b_runs_nest_under_the_sweep_and_log_their_data_set(tracking_store, tmp_path,
                                                                   tiny_pretrained):
    config = tiny_config()
    data = experiments.load_dataset(config)
    write_label_subset(tmp_path / "subsets", data.train_labels, 1, data.name)
    backbone = experiments.load_backbone(tiny_pretrained)
    results = [figure5.semisup_run(config, method, 1, tmp_path / "subsets", backbone=backbone,
                                   out_dir=tmp_path / "semisup") for method in ("conv", "supervised")]
    runs = {r.info.run_id: r for r in tracking_store.runs()}
    [parent] = [r for r in runs.values() if r.data.tags.get(GROUP_TAG, "").startswith("figure5b:")]
    assert len(runs) == 3
    for result in results:
        run = runs[result.run_id]
        assert run.data.tags[PARENT_TAG] == parent.info.run_id
        [dataset_input] = tracking_store.run(result.run_id).inputs.dataset_inputs
        assert dataset_input.dataset.name == f"{data.name}-subset" and dataset_input.dataset.digest
        assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"


def test_pretraining_logs_its_final_checkpoint_and_data_set(tracking_store, tmp_path, tiny_data):
    result = experiments.pretrain(tiny_config(), tmp_path / "pretrain", data=tiny_data)
    client = tracking_store.client()
    assert [a.path for a in client.list_artifacts(result.run_id)] == ["checkpoint.pt"]
    [dataset_input] = tracking_store.run(result.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == tiny_data.name and len(dataset_input.dataset.digest) >= 8


def test_a_figure_has_one_parent_per_backbone_protocol_and_seed(tiny_pretrained):
    config, backbone = tiny_config(), experiments.load_backbone(tiny_pretrained)
    backbone.lineage["pretrain_run_id"] = "abcdef123456"
    a, b = (figure5.figure_group(f, config, backbone) for f in ("figure5a", "figure5b"))
    assert a.key != b.key and a.key.endswith(":b4-r4:abcdef123456")
    assert b.name == "figure5b-generated-smoke-s0-b4-r4-abcdef"
    other_seed = tiny_config({"runtime": {"seed": 1}})
    assert figure5.figure_group("figure5b", other_seed, backbone).key != b.key


def test_nesting_a_tracker_leaves_the_one_it_came_from_alone(tracking_store):
    """A stage's tracker handed to a figure's runs keeps its own runs unnested."""
    stage = Tracker(tags={"stage": "semisup@20-0"})
    nested = stage.nest_under(GROUP)
    assert nested is not stage and stage.group is None and nested.group == GROUP
    assert nested.tags == stage.tags
    off = NullTracker()
    assert off.nest_under(GROUP) is off  # tracking switched off stays off


def test_a_run_handle_logs_to_its_own_run_only(tracking_store):
    """One tracker starts two runs in turn (a probe stage's blocks); each handle keeps
    logging to its own run, and finishing one leaves the other running."""
    tracker = Tracker(tags={"stage": "probe@b4-r4-0"})
    block1 = tracker.start("block1", {"p": "1"}, {"block": "1"})
    block2 = tracker.start("block2", {"p": "2"}, {"block": "2"})
    block1.log_epoch({"epoch": 1, "test_acc": 10.0})
    block2.log_epoch({"epoch": 1, "test_acc": 20.0})
    block1.set_tags({"note": "first"})
    block1.finish()
    runs = {r.info.run_id: r for r in tracking_store.runs()}
    one, two = runs[block1.run_id], runs[block2.run_id]
    assert one.data.metrics == {"test_acc": 10.0} and two.data.metrics == {"test_acc": 20.0}
    assert one.data.tags["note"] == "first" and "note" not in two.data.tags
    assert (one.data.params, two.data.params) == ({"p": "1"}, {"p": "2"})
    assert one.data.tags["stage"] == two.data.tags["stage"] == "probe@b4-r4-0"
    assert (one.info.status, two.info.status) == ("FINISHED", "RUNNING")


def test_a_group_gathers_runs_made_elsewhere_with_its_files_and_metrics(tracking_store, tmp_path):
    """`gather` nests runs without a parent under the group's parent (a run that has one
    keeps it), attaches the files in their folders and logs the metrics; a second gather
    finds the same parent."""
    tracker = Tracker()
    loose = [tracker.start(f"loose-{i}", {}, {}) for i in range(2)]
    nested = Tracker(group=RunGroup("elsewhere", "elsewhere")).start("nested", {}, {})
    for run in (*loose, nested):
        run.finish()
    (tmp_path / "tables").mkdir()
    table = tmp_path / "tables" / "t.md"
    table.write_text("| a |\n")
    parent = gather(tracker.open_group(GROUP), [r.run_id for r in (*loose, nested)],
                    [table], {"table1.b4.B2": 71.5}, artifacts_root=tmp_path)
    runs = {r.info.run_id: r for r in tracking_store.runs()}
    assert [runs[r.run_id].data.tags[PARENT_TAG] for r in loose] == [parent, parent]
    assert runs[nested.run_id].data.tags[PARENT_TAG] != parent
    assert runs[parent].data.tags[GROUP_TAG] == GROUP.key and runs[parent].info.status == "FINISHED"
    assert runs[parent].data.metrics == {"table1.b4.B2": 71.5}
    client = tracking_store.client()
    assert [a.path for a in client.list_artifacts(parent, "tables")] == ["tables/t.md"]
    assert gather(tracker.open_group(GROUP), []) == parent
    assert gather(NullTracker().open_group(GROUP), [loose[0].run_id]) == ""  # tracking off


def test_the_store_is_opened_once_per_process(tracking_store, monkeypatch):
    """Trackers, run handles and readers share one connection per store."""
    from rotnet import tracking

    first = Tracker().start("a", {}, {})
    opened = []
    monkeypatch.setattr(tracking, "Connection", lambda uri: opened.append(uri))
    second = Tracker().start("b", {}, {})
    tracking.run_metrics(first.run_id), tracking.search_runs()
    assert opened == [] and second.connection is first.connection


def test_a_tune_trial_logs_its_accuracy_as_validation_accuracy(tracking_store):
    """A trial's evaluation split is the validation split: its runs say so in the metric
    names (val_acc, best_val_acc, val_acc_class_<c>); other metrics keep theirs."""
    study = Tracker().start("study", {}, {})
    trial = Tracker().nest_under_run(study, {"optuna.trial": "0"}, split="validation")
    run = trial.start("trial", {}, {})
    run.log_epoch({"epoch": 1, "test_acc": 50.0, "train_loss": 1.0})
    run.log_metrics({"best_test_acc": 50.0, "test_acc_class_cat": 40.0}, step=1)
    run.log_missing_epochs([{"epoch": 1, "test_acc": 50.0}, {"epoch": 2, "test_acc": 60.0}])
    logged = tracking_store.run(run.run_id)
    assert logged.data.metrics == {"val_acc": 60.0, "train_loss": 1.0, "best_val_acc": 50.0,
                                   "val_acc_class_cat": 40.0}
    assert logged.data.tags[PARENT_TAG] == study.run_id and logged.data.tags["optuna.trial"] == "0"
    assert [m.step for m in tracking_store.client().get_metric_history(run.run_id, "val_acc")] == [1, 2]
