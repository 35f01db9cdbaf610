"""DVC stage `subsets`: the label-subset index files of the semi-supervised sweep."""

from rotnet.figure5 import write_subsets
from rotnet.stage_io import run_stage, stage_config


def main(out):
    write_subsets(stage_config(), out)


if __name__ == "__main__":
    run_stage(main)
