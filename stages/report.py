"""DVC stage `report`: Tables 1-3 and Figure 5a/5b, read back from the MLflow store only,
with the summary metrics and comparison curves DVC shows; the runs are tagged with the
cells they fill and the files logged to the report's MLflow run."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from rotnet.report import collect
from rotnet.report_publish import publish
from rotnet.report_render import write_report
from rotnet.stage_io import run_stage, stage_config, stage_tracker


def main(out):
    data = collect(stage_config())
    publish(data, out, write_report(out, data), stage_tracker("report"))


if __name__ == "__main__":
    run_stage(main)
