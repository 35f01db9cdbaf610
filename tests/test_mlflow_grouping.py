"""MLflow as a reader browses it: a group's runs (Figure 5a/5b, an ablation) nested under one
parent run, also across reruns and resumes; the data set a run trained on in its inputs,
with a digest; the pretrained backbone in the pretraining run's artifacts."""

from __future__ import annotations

from helpers import tiny_config
from rotnet import experiments, figure5
from rotnet.subsets import write_label_subset
from rotnet.tracking import PARENT_TAG, GROUP_TAG, RunGroup, Tracker

GROUP = RunGroup(key="figure5b:test:s0", name="figure5b-test", tags={"profile": "smoke"})


def test_children_of_a_group_nest_under_one_parent_also_when_resumed(tracking_store):
    first = Tracker(group=GROUP)
    child = first.start("child-1", {}, {"task": "probe"})
    first.finish("KILLED")  # a killed child ...
    second = Tracker(group=GROUP)
    assert second.start("child-1", {}, {"task": "probe"}, resume_run_id=child) == child
    second.finish()  # ... resumed by another process, and a sibling started by a third
    sibling = Tracker(group=GROUP)
    sibling.start("child-2", {}, {"task": "probe"})
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
    from rotnet.tracking import NullTracker
    off = NullTracker()
    assert off.nest_under(GROUP) is off  # tracking switched off stays off
