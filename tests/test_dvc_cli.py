"""rotnet.dvc_cli: DVC with dvc.lock read by the safe (C) loader, and the same dvc.lock out."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("dvc")
from dvc.utils.serialize import _yaml  # noqa: E402

from rotnet import dvc_cli  # noqa: E402


def lock_text() -> str:
    """A dvc.lock as DVC writes it: its own dumper on its own layout (hashes that look like
    numbers, nested lists, a matrix stage's name with '@')."""
    stage = {"cmd": "python stages/pretrain.py --seed 0 runs/pretrain/b4-r4-s0",
             "deps": [{"path": "rotnet/engine.py", "hash": "md5", "md5": "1234e5", "size": 17450},
                      {"path": "stages/pretrain.py", "hash": "md5",
                       "md5": "0e5f8e5b2a0b4d4e9b6c1e6f3b2a1c00", "size": 2048}],
             "params": {"params.yaml": {"seeds": [0, 1, 2], "pretrain.optim.lr": 0.05,
                                        "pretrain.optim.milestones": [5, 7], "data.root": None}},
             "outs": [{"path": "runs/pretrain/b4-r4-s0", "hash": "md5",
                       "md5": "ab12.dir", "size": 99, "nfiles": 3}]}
    data = {"schema": "2.0", "stages": {"pretrain@b4-r4-0": stage, "data": {"cmd": "python stages/data.py"}}}
    return _yaml.dumps_yaml(data)


@pytest.fixture
def patched(monkeypatch):
    monkeypatch.setattr(_yaml, "parse_yaml_for_update", _yaml.parse_yaml_for_update)
    assert dvc_cli.install()
    return _yaml.parse_yaml_for_update


def test_dvc_lock_takes_the_safe_loader_and_dvc_yaml_keeps_the_round_trip_one(patched):
    from ruamel.yaml.comments import CommentedMap

    text = "stages:  # a comment DVC keeps\n  data:\n    cmd: echo\n"
    assert type(patched(text, "sub/dvc.lock")) is dict
    assert isinstance(patched(text, "sub/dvc.yaml"), CommentedMap)


def test_dvc_writes_the_same_lock_from_either_read(patched, monkeypatch):
    """What DVC does to dvc.lock in a stage's commit: read for update, change one stage's
    entry, dump. The safe read must give the bytes the round-trip read gives."""
    text = lock_text()
    outputs = []
    for parse in (patched, lambda t, p: _yaml.parse_yaml(t, p, typ="rt")):
        data = parse(text, "dvc.lock")
        data["stages"]["pretrain@b4-r4-0"]["deps"][0]["md5"] = "5e3"
        data["stages"]["new@1"] = {"cmd": "true", "outs": [{"path": "x", "hash": "md5", "md5": "1"}]}
        outputs.append(_yaml.dumps_yaml(data))
    assert outputs[0] == outputs[1]
    assert _yaml.parse_yaml(outputs[0], "dvc.lock")["stages"]["pretrain@b4-r4-0"]["deps"][0]["md5"] == "5e3"


def test_the_command_is_dvcs():
    result = subprocess.run([sys.executable, "-m", "rotnet.dvc_cli", "--version"],
                            capture_output=True, text=True, timeout=120)
    plain = subprocess.run([sys.executable, "-m", "dvc", "--version"],
                           capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plain.stdout and result.stdout.strip()
