"""Parent-run groups: one MLflow parent run for related runs (an ablation, Figure 5a, Figure
5b, a protocol's report), found again by its key so that a rerun, a resumed run or another
stage's run joins the same parent. `tracking.Tracker` opens a group's parent for the runs it
starts; `gather` nests runs made elsewhere under it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rotnet.errors import RotnetError

GROUP_TAG = "rotnet.group"  # a parent run's key: the group its nested runs belong to
PARENT_TAG = "mlflow.parentRunId"  # what nests a run under another in the MLflow UI


@dataclass(frozen=True)
class RunGroup:
    """A parent run grouping related runs. Found again by `key` (tag `rotnet.group`), so a
    rerun or a resumed child joins the same parent; `name` is its run name, `tags` its own."""

    key: str
    name: str
    tags: dict = field(default_factory=dict)


def open_group(connection, experiment_id: str, group: RunGroup, tags: dict[str, str]) -> str:
    """The id of `group`'s parent run in the experiment, reopened (RUNNING) or created with
    `tags` (those of the tracker opening it) and the group's own; under the store's lock,
    so stages started side by side make one parent."""
    if not re.fullmatch(r"[\w.:+-]+", group.key):
        raise RotnetError(f"invalid run group key {group.key!r}")
    client = connection.client
    with connection.lock():
        found = client.search_runs([experiment_id], f"tags.`{GROUP_TAG}` = '{group.key}'",
                                   max_results=1)
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        return connection.create_run(experiment_id, group.name, {
            **tags, **{k: str(v) for k, v in group.tags.items()}, GROUP_TAG: group.key})


def gather(parent, run_ids, artifacts=(), metrics: dict | None = None,
           artifacts_root: Path | None = None) -> str:
    """Into a group's parent run (`parent`, a `TrackedRun` from `Tracker.open_group`): nest
    finished runs made elsewhere (a run that has a parent keeps it), attach `artifacts`
    (paths; in their folders below `artifacts_root`, if given), log `metrics` at step 0,
    and finish it. Returns its id ("" when untracked)."""
    if not parent.run_id:  # a NullRun: tracking is off
        return ""
    client = parent.connection.client
    for run_id in run_ids:
        try:
            tags = client.get_run(run_id).data.tags
        except Exception:  # deleted, or logged to another store: nothing to nest
            continue
        if PARENT_TAG not in tags:
            client.set_tag(run_id, PARENT_TAG, parent.run_id)
    for path in map(Path, artifacts):
        folder = path.parent.relative_to(artifacts_root) if artifacts_root else Path(".")
        parent.log_artifact(path, None if folder == Path(".") else str(folder))
    if metrics:
        parent.log_metrics(metrics, step=0)
    parent.finish("FINISHED")
    return parent.run_id
