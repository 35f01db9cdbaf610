"""DVC stage `report`: Tables 1-3 and Figure 5a/5b, read back from the MLflow store only."""

from rotnet.report import collect
from rotnet.report_render import write_report
from rotnet.stage_io import run_stage, stage_config


def main(out):
    write_report(out, collect(stage_config()))


if __name__ == "__main__":
    run_stage(main)
