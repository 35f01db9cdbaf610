"""DVC stage `code`: one digest per stage script in the scripts folder (its own and every
rotnet module it imports; rotnet/code_digest.py), which that script's stages depend on.
Standard library and a few light modules only: it runs cold, in well under a second."""

from pathlib import Path

from rotnet.code_digest import write_digests
from rotnet.stage_io import run_stage


def main(scripts_dir, out):
    scripts = sorted(p for p in Path(scripts_dir).glob("*.py") if p.resolve() != Path(__file__).resolve())
    write_digests(scripts, Path(out), Path.cwd())


if __name__ == "__main__":
    run_stage(main)
