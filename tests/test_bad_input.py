"""Bad input of every kind the CLI takes exits 2 with one line, before any output folder,
MLflow run or store exists, and leaves a finished result untouched: invalid settings,
paths `--out` cannot be, hostile data, unreadable or crafted checkpoints (see also
test_checkpoint_fuzz.py), Click's usage errors."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from helpers import RunsCode, cli_main, crafted_checkpoints, write_params
from test_data import write_fashion


def _one_image_per_class(root: Path) -> Path:
    from PIL import Image

    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 200, 30)).save(root / name / "x.png")
    return root


def _with_an_empty_class(root: Path) -> Path:
    from PIL import Image

    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (10 * i, 200, 30)).save(root / name / f"{i}.png")
    (root / "c").mkdir()
    return root


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height pixels, with no pixel data: PIL refuses a
    decompression bomb from the header alone."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def _with_a_bomb(root: Path) -> Path:
    _with_an_empty_class(root)
    (root / "c" / "huge.png").write_bytes(_png_header(15000, 15000))  # 225 megapixels
    return root


def _damaged(tmp: Path, good: Path) -> dict[str, Path]:
    """A text file, random bytes and a truncated and a bit-flipped copy of `good`."""
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    files = {"text": b"checkpoint: yes\n", "random": os.urandom(2048),
             "truncated": data[:len(data) // 2], "flipped": bytes(flipped)}
    for name, content in files.items():
        (tmp / f"{name}.pt").write_bytes(content)
    return {name: tmp / f"{name}.pt" for name in files}


def _in_folder(folder: Path, name: str, source: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / name).write_bytes(source.read_bytes())
    return folder


def bad_inputs(tmp: Path, good: Path, params: Path) -> dict:
    """name -> (argv, extra environment, a path that must not exist afterwards); `good` is a
    finished pretraining folder."""
    bad_out = tmp / "bad-out"
    base = ["pretrain", "--params", params, "--out", bad_out]
    not_utf8 = tmp / "latin1.yaml"
    not_utf8.write_bytes("profile: smoke\n# caf\xe9\n".encode("latin-1"))
    a_file = tmp / "a-file"
    a_file.write_text("x")
    read_only = tmp / "read-only"
    read_only.mkdir(mode=0o555)
    text_store = tmp / "notes.txt"
    text_store.write_text("my notes\n")
    corrupt = tmp / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    evil = tmp / "evil.pt"
    torch.save({"format": "rotnet-checkpoint/2", "payload": RunsCode(tmp / "pwned")}, evil)
    images = _one_image_per_class(tmp / "images")
    cases = _checkpoint_cases(tmp, good, params, bad_out)
    cases.update(_data_and_path_cases(tmp, params, base, bad_out))
    return {
        **cases,
        "weight_decay<0": (base + ["--set", "pretrain.optim.weight_decay=-1"], {}, bad_out),
        "momentum=0+nesterov": (base + ["--set", "pretrain.optim.momentum=0"], {}, bad_out),
        "momentum<0": (base + ["--set", "pretrain.optim.momentum=-0.5"], {}, bad_out),
        "log_every=0": (base + ["--set", "runtime.log_every=0"], {}, bad_out),
        "device tpu9": (base + ["--device", "tpu9"], {}, bad_out),
        "cuda without GPU (finished out)": (
            ["pretrain", "--params", params, "--out", good, "--device", "cuda"], {}, bad_out),
        "width=inf": (base + ["--set", "pretrain.width=.inf"], {}, bad_out),
        "lr=inf": (base + ["--set", "pretrain.optim.lr=.inf"], {}, bad_out),
        "lr=nan": (base + ["--set", "pretrain.optim.lr=.nan"], {}, bad_out),
        "params not UTF-8": (["pretrain", "--params", not_utf8, "--out", bad_out], {}, bad_out),
        "out is a file": (["pretrain", "--params", params, "--out", a_file / "sub"], {}, a_file / "sub"),
        "out is a file itself": (["pretrain", "--params", params, "--out", a_file], {}, bad_out),
        "out too long": (base[:-1] + [tmp / "deep" / ("x" * 300)], {}, tmp / "deep"),
        "out read-only": (base[:-1] + [read_only / "run"], {}, read_only / "run"),
        "out under /proc": (base[:-1] + ["/proc/rotnet-out/run"], {}, Path("/proc/rotnet-out")),
        "imagefolder, no test images": (
            base + ["--dataset", "imagefolder", "--data-root", images], {}, bad_out),
        "probe.hidden=0": (base + ["--set", "probe.hidden=0"], {}, bad_out),
        "MLflow URI is a text file": (base, {"MLFLOW_TRACKING_URI": f"sqlite:///{text_store}"},
                                      bad_out),
        "semisup, corrupt checkpoint": (["semisup", corrupt, "--params", params, "--subsets",
                                         tmp / "subsets", "--out", bad_out], {}, tmp / "subsets"),
        "checkpoint that runs code": (["probe", evil, "--params", params, "--out", bad_out], {},
                                      tmp / "pwned"),
    }


def _checkpoint_cases(tmp: Path, good: Path, params: Path, bad_out: Path) -> dict:
    """Every command that reads a checkpoint, given a damaged or crafted one."""
    damaged = _damaged(tmp, good / "checkpoint.pt")
    crafted = crafted_checkpoints(good / "checkpoint.pt", tmp / "crafted")
    subsets, storage = tmp / "subsets", tmp / "optuna.db"
    resumed = _in_folder(tmp / "resumed", "checkpoint.pt", crafted["optimizer state of another shape"])
    snapshots = _in_folder(tmp / "snaps", "snapshot-epoch001.pt", crafted["empty history"])
    second_bad = _in_folder(tmp / "snaps2", "snapshot-epoch001.pt", good / "checkpoint.pt")
    shutil.copyfile(damaged["flipped"], second_bad / "snapshot-epoch002.pt")
    common = ["--params", params, "--out", bad_out]
    return {
        "probe, text checkpoint": (["probe", damaged["text"], *common], {}, bad_out),
        "probe, arch of 5 blocks": (["probe", crafted["arch of 5 blocks"], *common], {}, bad_out),
        "probe, no task": (["probe", crafted["no task"], *common], {}, bad_out),
        "semisup, truncated checkpoint": (["semisup", damaged["truncated"], "--subsets", subsets,
                                           *common], {}, subsets),
        "semisup, missing tensor": (["semisup", crafted["missing tensor"], "--subsets", subsets,
                                     *common], {}, subsets),
        "snapshots, empty history": (["snapshots", snapshots, *common], {}, bad_out),
        "snapshots, the second one damaged": (["snapshots", second_bad, *common], {}, bad_out),
        "tune, random bytes": (["tune", damaged["random"], "--trials", "1", "--storage",
                                f"sqlite:///{storage}", *common], {}, storage),
        "tune, flipped bit": (["tune", damaged["flipped"], "--trials", "1", "--storage",
                               f"sqlite:///{storage}", *common], {}, storage),
        "resume, optimizer state of another shape": (
            ["pretrain", "--params", params, "--out", resumed], {}, resumed / "mlflow-run-id"),
        "semisup, one size too many": (["semisup", good / "checkpoint.pt", "--per-class", "1",
                                        "--per-class", "1000", "--subsets", subsets, *common],
                                       {}, subsets),
    }


def _data_and_path_cases(tmp: Path, params: Path, base: list, bad_out: Path) -> dict:
    """Hostile data, paths `--out` cannot be, and Click's usage errors."""
    write_fashion(tmp / "no-images", train_count=0, test_count=0)
    whole = base + ["--set", "data.train_size=null", "--set", "data.test_size=null"]  # not cut
    return {
        "fashion-mnist, 0 images": (whole + ["--dataset", "fashion-mnist", "--data-root",
                                             tmp / "no-images"], {}, bad_out),
        "imagefolder, empty class": (whole + ["--dataset", "imagefolder", "--data-root",
                                              _with_an_empty_class(tmp / "empty-class")], {}, bad_out),
        "imagefolder, decompression bomb": (base + ["--dataset", "imagefolder", "--data-root",
                                                    _with_a_bomb(tmp / "bomb")], {}, bad_out),
        "out ''": (base[:-1] + [""], {}, tmp / "checkpoint.pt"),  # the tests run in tmp
        "out very deep": (base[:-1] + [tmp / ("d/" * 2100)], {}, tmp / "d"),
        "params --out /proc/x": (["params", "--out", "/proc/rotnet-params"], {},
                                 Path("/proc/rotnet-params")),
        "params --out a folder": (["params", "--out", tmp], {}, tmp / "params.yaml"),
        "epochs abc": (base + ["--epochs", "abc"], {}, bad_out),
        "epochs 1e9": (base + ["--epochs", "1e9"], {}, bad_out),
        "unknown option": (base + ["--epoch", "3"], {}, bad_out),
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, _empty_store):
    """A finished, tracked run: what a bad rerun must leave exactly as it was."""
    tmp = tmp_path_factory.mktemp("bad-inputs")
    store_path = tmp / "mlflow.db"
    shutil.copyfile(_empty_store, store_path)
    params = write_params(tmp / "params.yaml")
    good = tmp / "good"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store_path}")
        assert cli_main(["pretrain", "--params", params, "--out", good]) == 0
    return tmp, store_path, params, good


def _state_of(good: Path, store) -> tuple:
    files = {p.name: p.read_bytes() for p in good.iterdir() if p.name != ".lock"}
    return files, sorted((r.info.run_id, r.info.status) for r in store.runs())


CASES = ["weight_decay<0", "momentum=0+nesterov", "momentum<0", "log_every=0", "device tpu9",
         "cuda without GPU (finished out)", "width=inf", "lr=inf", "lr=nan", "params not UTF-8",
         "out is a file", "out is a file itself", "out too long", "out read-only",
         "out under /proc", "imagefolder, no test images", "probe.hidden=0",
         "MLflow URI is a text file", "semisup, corrupt checkpoint", "checkpoint that runs code",
         # issue 25
         "probe, text checkpoint", "probe, arch of 5 blocks", "probe, no task",
         "semisup, truncated checkpoint", "semisup, missing tensor", "snapshots, empty history",
         "snapshots, the second one damaged",
         "tune, random bytes", "tune, flipped bit", "resume, optimizer state of another shape",
         "semisup, one size too many", "fashion-mnist, 0 images", "imagefolder, empty class",
         "imagefolder, decompression bomb", "out ''", "out very deep", "params --out /proc/x",
         "params --out a folder", "epochs abc", "epochs 1e9", "unknown option"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, finished, tmp_path, capsys,
                                                            monkeypatch):
    from helpers import Store

    tmp, store_path, params, good = finished
    if case == "cuda without GPU (finished out)" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    if case == "out read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store_path}")
    argv, env, must_not_exist = bad_inputs(tmp_path, good, params)[case]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    store = Store(store_path)
    before = _state_of(good, store)
    capsys.readouterr()

    code = cli_main(argv)

    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not must_not_exist.exists()
    assert not (tmp_path / "bad-out").exists()
    assert _state_of(good, store) == before  # no new run, the finished one untouched
    assert not list(tmp_path.glob(".*.tmp-*"))  # no half-written file either
    if case == "MLflow URI is a text file":
        assert (tmp_path / "notes.txt").read_text() == "my notes\n"


# Refused late: after the data set, the checkpoint or the device were read.
LATE = ["out is a file", "out is a file itself", "out under /proc", "semisup, one size too many",
        "resume, optimizer state of another shape", "imagefolder, decompression bomb",
        "tune, random bytes"]


@pytest.mark.parametrize("case", LATE)
def test_a_refused_command_creates_no_mlflow_store(case, finished, tmp_path, capsys, monkeypatch):
    tmp, _, params, good = finished
    store = tmp_path / "new" / "mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    argv, _, _ = bad_inputs(tmp_path, good, params)[case]
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err  # no MLflow INFO lines
    assert not (tmp_path / "new").exists()
