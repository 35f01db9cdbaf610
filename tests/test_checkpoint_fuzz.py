"""Hostile checkpoints: whatever a file named like a checkpoint holds (text, random bytes,
a truncated or bit-flipped checkpoint, or the format marker over wrong content), reading
it raises only the project's one-line RotnetError, and every command that reads one exits
2 with one line, writing nothing."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from helpers import Store, cli_env, crafted_checkpoints, run_rotnet, write_params
from rotnet import checkpoint, experiments
from rotnet.errors import RotnetError

KINDS = ("text", "random", "truncated", "flipped")
PER_KIND = 75  # 300 files in all
# Crafted content only a resumed run restores (a backbone does not read it).
RESUME_ONLY = {"optimizer state of another shape", "scheduler without keys", "rng missing"}


def damaged(kind: str, good: bytes, rng: random.Random) -> bytes:
    """One seeded hostile file of `kind`, made from the good checkpoint's bytes `good`."""
    if kind == "text":
        words = ["checkpoint", "format:", "rotnet-checkpoint/2", "PK", "{", "}", "\n", "0.1", "é"]
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 400))).encode()
    if kind == "random":
        body = rng.randbytes(rng.randint(0, 4096))
        return (b"PK\x03\x04" + body) if rng.random() < 0.5 else body  # half look like a zip
    if kind == "truncated":
        return good[:rng.randrange(len(good))]
    flipped = bytearray(good)
    for _ in range(rng.randint(1, 8)):
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def test_no_damaged_file_escapes_as_another_error_or_loads_changed(tiny_pretrained, tmp_path):
    good_bytes = tiny_pretrained.read_bytes()
    good = checkpoint.load_checkpoint(tiny_pretrained)["model"]
    rng, path, escaped = random.Random(25), tmp_path / "checkpoint.pt", []
    for kind in KINDS:
        for case in range(PER_KIND):
            path.write_bytes(damaged(kind, good_bytes, rng))
            try:
                state = checkpoint.load_checkpoint(path)
                experiments.load_backbone(path)
            except RotnetError as err:
                assert "\n" not in str(err), str(err)
                continue
            except Exception as err:  # noqa: BLE001 - what the test is looking for
                escaped.append((kind, case, repr(err)[:120]))
                continue
            # Accepted only where nothing that matters changed (a flip in a zip timestamp).
            if not all(torch.equal(good[k], v) for k, v in state["model"].items()):
                escaped.append((kind, case, "loaded with changed weights"))
    assert escaped == []


@pytest.fixture(scope="module")
def crafted(tiny_pretrained, tmp_path_factory) -> dict[str, Path]:
    return crafted_checkpoints(tiny_pretrained, tmp_path_factory.mktemp("crafted"))


def test_crafted_checkpoints_are_refused_as_backbones(crafted):
    for name, path in crafted.items():
        if name in RESUME_ONLY:
            experiments.load_backbone(path)  # a backbone reads the weights only
            continue
        with pytest.raises(RotnetError) as refused:
            experiments.load_backbone(path)
        assert "\n" not in str(refused.value), name


def test_crafted_checkpoints_are_refused_on_resume_before_the_run_starts(crafted, tmp_path,
                                                                          tiny_data, tracking_store):
    from helpers import tiny_config
    from rotnet.tracking import Tracker

    for name, path in crafted.items():
        out = tmp_path / name.replace(" ", "-")
        out.mkdir()
        shutil.copyfile(path, out / "checkpoint.pt")
        with pytest.raises(RotnetError):
            experiments.pretrain(tiny_config(), out, tracker=Tracker(), data=tiny_data)
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt"], name
        assert (out / "checkpoint.pt").read_bytes() == path.read_bytes()
    assert tracking_store.runs() == []


def _command(name: str, bad: Path, tmp: Path, params: Path) -> tuple[list, Path]:
    """argv of `name` reading the hostile file `bad`, and where it would write."""
    out = tmp / "out"
    common = ["--params", params, "--out", out]
    if name == "snapshots":
        folder = tmp / "snaps"
        folder.mkdir()
        shutil.copyfile(bad, folder / "snapshot-epoch001.pt")
        return ["snapshots", folder, *common], out
    if name == "resume":
        out.mkdir()
        shutil.copyfile(bad, out / "checkpoint.pt")
        return ["pretrain", "--params", params, "--out", out], out / "mlflow-run-id"
    extra = {"semisup": ["--subsets", tmp / "subsets"],
             "tune": ["--trials", "1", "--storage", f"sqlite:///{tmp / 'optuna.db'}"]}
    return [name, bad, *extra.get(name, []), *common], out


COMMANDS = ["probe", "semisup", "snapshots", "tune", "resume"]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_reads_a_checkpoint_refuses_damaged_ones(command, tiny_pretrained,
                                                                    tmp_path):
    rng = random.Random(f"{command}-25")
    params = write_params(tmp_path / "params.yaml")
    store = Store(tmp_path / "mlflow.db")
    first = COMMANDS.index(command)
    for kind in (KINDS[first % 4], KINDS[(first + 1) % 4]):  # two kinds each, every kind twice+
        tmp = tmp_path / kind
        tmp.mkdir()
        bad = tmp / "bad.pt"
        bad.write_bytes(damaged(kind, tiny_pretrained.read_bytes(), rng))
        argv, written = _command(command, bad, tmp, params)
        result = run_rotnet(argv, tmp, cli_env(store))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (kind, result.stderr[-2000:])
        assert lines[0].startswith("error:") and "Traceback" not in result.stderr
        assert not written.exists(), kind
        assert not (tmp / "subsets").exists() and not (tmp / "optuna.db").exists()
    assert not store.path.exists()  # nor any MLflow store
