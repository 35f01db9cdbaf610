"""DVC stage `subsets`: the label-subset index files of the semi-supervised sweep."""

from rotnet.warm import hand_over

hand_over(__file__)  # under `rotnet repro` the stage runs in a fork of its warm server; this process exits here (rotnet/warm.py)

from rotnet.figure5 import write_subsets
from rotnet.stage_io import run_stage, stage_config


def main(out):
    write_subsets(stage_config(), out)


if __name__ == "__main__":
    run_stage(main)
