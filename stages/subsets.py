"""DVC stage `subsets`: the label-subset index files of the semi-supervised sweep."""

from rotnet.pipeline import run_stage, stage_config
from rotnet.studies import write_subsets


def main(out):
    write_subsets(stage_config(), out)


if __name__ == "__main__":
    run_stage(main)
