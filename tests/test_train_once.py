"""Each probe is trained once: Figure 5a's last snapshot is the fully pretrained baseline,
whose block-2 probe has the fingerprint of Table 1's b4-r4 B2 cell, so the snapshots stage
leaves it to the probe stage and the report reuses that run for the figure."""

from __future__ import annotations

from rotnet import figure5, report
from test_report import CONFIG, log_run, probe_tags

EPOCHS = CONFIG.pretrain.optim.epochs


def test_the_snapshots_stage_skips_the_snapshot_table_1_probes():
    probed = figure5.probed_snapshot_epochs(CONFIG, list(range(1, EPOCHS + 1)))
    every = CONFIG.snapshots.every
    assert probed == [e for e in range(1, EPOCHS) if e % every == 0]  # but the last
    assert report.expected_fingerprint(CONFIG, probe_tags("b4-r4", 2), snapshot_epoch=EPOCHS) == \
        report.expected_fingerprint(CONFIG, probe_tags("b4-r4", 2))  # why: the same run


def test_the_report_draws_the_last_snapshot_from_the_table_1_run(tracking_store):
    pretrain = log_run({"task": "pretrain", "variant": "b4-r4", "blocks": 4, "rotations": "4"},
                       [50.0, 77.5])
    snapshots = {epoch: log_run(probe_tags("b4-r4", 2, pretrain_run_id=pretrain, figure5="snapshots",
                                           snapshot_epoch=epoch, snapshot_rotation_acc=f"{60 + epoch}"),
                                [40.0 + epoch]) for epoch in range(1, EPOCHS)}
    table1 = log_run(probe_tags("b4-r4", 2, pretrain_run_id=pretrain), [70.0, 81.0])
    data = report.collect(CONFIG)
    probe = data.series("figure5a", report.SNAPSHOT_PROBE)
    assert [p.x for p in probe] == list(range(1, EPOCHS + 1))
    assert [p.run.run_id for p in probe] == [*snapshots.values(), table1]
    assert probe[-1].value == 81.0 and data.by_key("table1/b4-r4/B2").run.run_id == table1
    rotation = data.series("figure5a", report.SNAPSHOT_ROTATION)
    assert (rotation[-1].x, rotation[-1].value) == (EPOCHS, 77.5)  # the pretraining's own
