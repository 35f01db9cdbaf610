"""`python -m rotnet.dvc_cli ARGS`: DVC's command line (`python -m dvc ARGS`) with dvc.lock
read by the safe YAML loader.

Each `dvc repro --single-item STAGE` that `rotnet repro` starts reads dvc.lock to update its
stage's entry. DVC reads it with ruamel's round-trip loader, which keeps comments and
styles for the dump and is pure Python: on the quick profile's dvc.lock (about 12 600
lines, mostly the per-stage hashes of rotnet/*.py) that read took 1.3 to 1.9 s of every
stage on a 2-core EPYC. DVC writes dvc.lock itself and puts no comment in it, so the
safe loader (ruamel's C parser, `ruamel.yaml.clib`) reads the same data in 0.3 s, and
DVC's dump of it is byte for byte the one it makes from the round-trip read (checked in
tests/test_dvc_cli.py). dvc.yaml and every other file DVC modifies keep the round-trip
loader. If DVC's internals are not the ones patched here, DVC runs unpatched.
"""

from __future__ import annotations

import logging
import os
import runpy

from rotnet.warm import hand_over_module, in_fork

LOCKFILE = "dvc.lock"
DVC_LOGGERS = ("dvc", "dvc_objects", "dvc_data")  # those `dvc.logger.setup` gives handlers


def install() -> bool:
    """Patch DVC's read-for-update of YAML files so that dvc.lock takes the safe loader;
    False (nothing patched) where DVC does not have the function this replaces."""
    try:
        from dvc.utils.serialize import _yaml
    except ImportError:
        return False
    round_trip = getattr(_yaml, "parse_yaml_for_update", None)
    if round_trip is None or not hasattr(_yaml, "parse_yaml"):
        return False

    def parse_for_update(text, path):
        if os.path.basename(str(path)) == LOCKFILE:
            return _yaml.parse_yaml(text, path)  # typ="safe": C parser when installed
        return round_trip(text, path)

    _yaml.parse_yaml_for_update = parse_for_update
    return True


def _fresh_logging() -> None:
    """Logging as a new DVC process sets it up. DVC configured its loggers when the warm
    server imported it, for the server's stdout and stderr (a terminal, maybe, where this
    process writes to a pipe), and MLflow's import gave the root logger a handler that would
    print every DVC line a second time."""
    from dvc import logger

    logging.root.handlers.clear()
    logging.root.setLevel(logging.WARNING)
    for name in DVC_LOGGERS:
        logging.getLogger(name).handlers.clear()
    logger.setup()  # for this process's streams (the server unwrapped its own: rotnet.warm)


def main() -> None:
    """DVC's own entry point (`python -m dvc`), run after `install`; sys.argv[1:] is DVC's.
    Under `rotnet repro` it runs in a fork of the warm server, which has DVC imported."""
    hand_over_module("rotnet.dvc_cli")
    if in_fork():  # DVC was imported by the warm server, for its own streams
        _fresh_logging()
    install()
    runpy.run_module("dvc", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
