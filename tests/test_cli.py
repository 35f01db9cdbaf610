"""The `rotnet` command line: bad input exits 2 with one line on stderr and leaves no run
behind; a good run shows up in the MLflow store as FINISHED.

Most cases call `rotnet.cli.main` in-process (the console script's entry point, with its
exit codes) for speed; a few run the installed `rotnet` script as a user would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from helpers import cli_env, run_rotnet
from rotnet import cli
from rotnet.models import NINClassifier

COMMANDS = ("pretrain", "probe", "supervised", "semisup", "snapshots")
SHRINK = ["--set", "data.train_size=64", "--set", "data.test_size=32",
          "--set", "pretrain.optim.batch_size=16"]


def call(args, capsys, monkeypatch):
    """Run `rotnet ARGS` in-process; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["rotnet", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (0 if code is None else code), out, err


def assert_one_line_error(err: str, *words: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


def assert_no_run_left(out_dir, store):
    assert not (out_dir / "metrics.json").exists()
    assert all(r.info.status == "FAILED" for r in store.runs())


# ---- the installed script ------------------------------------------------------------


def test_help_lists_the_commands(tmp_path):
    result = run_rotnet(["--help"], tmp_path, cli_env())
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", [c.name or c.callback.__name__.replace("_", "-")
                                     for c in cli.app.registered_commands])
def test_each_command_shows_one_example(command):
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and result.output.count("Example: `rotnet ") == 1


def test_help_states_the_profile_defaults():
    from typer.testing import CliRunner

    text = CliRunner().invoke(cli.app, ["pretrain", "--help"], env={"COLUMNS": "200"}).output
    for shown in ("default: from the profile (paper: 100, supervised NIN 200)",
                  "default: from the profile (paper: cifar10)", "(paper: 4)"):
        assert shown in " ".join(text.replace("│", " ").split()), shown


def test_bad_input_through_the_installed_script(tmp_path):
    env = cli_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'unused.db'}")
    result = run_rotnet(["pretrain", "--profile", "smoke", "--blocks", "6", "--out", "out"],
                        tmp_path, env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "blocks", "6")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "unused.db").exists()  # MLflow was never opened

    module = subprocess.run([sys.executable, "-m", "rotnet.cli", "pretrain", "--profile", "smoke",
                             "--rotations", "3"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert module.returncode == 2
    assert_one_line_error(module.stderr, "rotation", "3")


def test_successful_smoke_pretraining_is_a_finished_run_in_the_store(tmp_path, tracking_store):
    out = tmp_path / "out"
    result = run_rotnet(["pretrain", "--profile", "smoke", "--out", out, *SHRINK], tmp_path,
                        cli_env(tracking_store))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    (run,) = tracking_store.runs()
    assert run.info.status == "FINISHED"
    assert run.info.run_id == metrics["run_id"]
    assert run.data.params["profile"] == "smoke"
    assert run.data.params["data.train_size"] == "64"
    assert run.data.tags["task"] == "pretrain"
    assert [s for s, _ in tracking_store.history(run.info.run_id, "test_acc")] == [1, 2]


# ---- bad input, in-process ------------------------------------------------------------


def corrupt_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(b"\x80\x04 not a pickle of CIFAR-10")
    return root


def wrong_file(path):
    torch.save(NINClassifier(4, 4, 3, 0.125).state_dict(), path)
    return path


# (name, argv builder, words the error line must contain). {ckpt} is a 4-block pretraining
# checkpoint; {tmp} the test's directory; every command writes to {tmp}/out.
CASES = [
    ("unknown-dataset", ["pretrain", "--profile", "smoke", "--dataset", "imagenet"],
     ["imagenet"]),
    ("rotations", ["pretrain", "--profile", "smoke", "--rotations", "3"], ["rotation", "3"]),
    ("rotations-5", ["pretrain", "--profile", "smoke", "--rotations", "5"], ["rotation"]),
    ("blocks-6", ["pretrain", "--profile", "smoke", "--blocks", "6"], ["blocks", "6"]),
    ("blocks-2", ["pretrain", "--profile", "smoke", "--blocks", "2"], ["blocks", "2"]),
    ("epochs-0", ["pretrain", "--profile", "smoke", "--epochs", "0"], ["epochs"]),
    ("probe-epochs-0", ["probe", "{ckpt}", "--epochs", "0"], ["epochs"]),
    ("missing-data", ["pretrain", "--profile", "smoke", "--dataset", "cifar10", "--data-root",
                      "{tmp}/empty", "--set", "data.download=false"], ["CIFAR-10", "not found"]),
    ("corrupt-data", ["pretrain", "--profile", "smoke", "--dataset", "cifar10", "--data-root",
                      "{corrupt}", "--set", "data.download=false"], ["corrupt", "data_batch_1"]),
    ("other-architecture", ["pretrain", "--profile", "smoke", "--blocks", "5"], ["blocks"]),
    ("probe-block-5", ["probe", "{ckpt}", "--block", "5"], ["block 5"]),
    ("probe-head", ["probe", "{ckpt}", "--head", "svm"], ["svm"]),
    ("missing-checkpoint", ["probe", "{tmp}/nope.pt"], ["not found"]),
    ("not-a-checkpoint", ["probe", "{wrong}"], ["not a rotnet checkpoint"]),
    ("unknown-key", ["pretrain", "--profile", "smoke", "--set", "pretrain.blocs=3"], ["blocs"]),
    ("unknown-profile", ["pretrain", "--profile", "huge"], ["huge"]),
    ("missing-params", ["pretrain", "--params", "{tmp}/params.yaml"], ["not found"]),
]


@pytest.mark.parametrize("name, argv, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_no_run(name, argv, words, tmp_path, tiny_pretrained,
                                                    tracking_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    if name == "other-architecture":  # the out dir holds a 4-block checkpoint
        out.mkdir()
        shutil.copyfile(tiny_pretrained, out / "checkpoint.pt")
    values = {"ckpt": tiny_pretrained, "tmp": tmp_path}
    if "{corrupt}" in argv:
        values["corrupt"] = corrupt_cifar(tmp_path / "cifar")
    if "{wrong}" in argv:
        values["wrong"] = wrong_file(tmp_path / "weights.pt")
    args = [a.format(**values) for a in argv] + ["--out", str(out)]

    code, stdout, err = call(args, capsys, monkeypatch)
    assert code == 2, (stdout, err)
    assert_one_line_error(err, *words)
    assert_no_run_left(out, tracking_store)
    assert tracking_store.runs() == []  # every check comes before MLflow is touched
    if name == "other-architecture":
        assert (out / "checkpoint.pt").read_bytes() == tiny_pretrained.read_bytes()


def test_good_probe_command_exits_0(tmp_path, tiny_pretrained, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(["probe", tiny_pretrained, "--epochs", "1", "--no-track", "--out",
                         tmp_path / "out", "--set", "probe.optim.batch_size=32"], capsys, monkeypatch)
    assert code == 0, err
    assert "probe on block 2" in err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["run_id"] == ""
    # the profile came from the checkpoint (smoke), so the data set is the generated one
    assert metrics["tags"]["dataset"] == "generated"


# ---- fixed choices, checked while the command line is parsed --------------------------

CHOICE_CASES = [
    (["ablate", "--rotations", "3"], "--rotations 3: choose one of 4, 8, 2, 2-perp"),
    (["ablate", "--blocks", "7"], "--blocks 7: choose one of 3, 4, 5"),
    (["pretrain", "--dataset", "imagenet"], "--dataset imagenet: choose one of generated, cifar10"),
    (["probe", "x.pt", "--head", "svm"], "--head svm: choose one of nonlinear, conv"),
    (["params", "--profile", "huge"], "--profile huge: choose one of paper, paper-authors, quick, smoke"),
    (["report", "--profile", "huge"], "--profile huge"),
    (["tune", "--target", "probes"], "--target probes: choose one of probe, pretrain"),
]


@pytest.mark.parametrize("argv, words", [
    (["pretrain", "--epochs", "abc"], ["--epochs", "valid integer", "rotnet pretrain --help"]),
    (["pretrain", "--epochs", "1e9"], ["--epochs", "valid integer"]),
    (["pretrain", "--epoch", "3"], ["No such option: --epoch", "--epochs"]),  # did you mean
    (["probe"], ["Missing argument", "rotnet probe --help"]),
    (["pretrain", "extra"], ["unexpected extra argument"]),
    (["nonsense"], ["No such command"]),
])
def test_a_usage_error_is_one_line_not_a_panel(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(argv, capsys, monkeypatch)
    assert code == 2
    assert_one_line_error(err, *words)
    assert "╭" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", CHOICE_CASES, ids=[" ".join(c[0]) for c in CHOICE_CASES])
def test_a_bad_choice_names_the_option_typed(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ablation/dvc.yaml, params.yaml or checkpoint here:
    code, _, err = call(argv, capsys, monkeypatch)  # the option is checked before any of them
    assert code == 2
    assert_one_line_error(err, message)


def test_a_directory_given_as_checkpoint_suggests_its_checkpoint_pt(tmp_path, tiny_pretrained,
                                                                   capsys, monkeypatch):
    run_dir = tmp_path / "runs" / "pretrain"
    run_dir.mkdir(parents=True)
    shutil.copyfile(tiny_pretrained, run_dir / "checkpoint.pt")
    code, _, err = call(["probe", run_dir, "--no-track"], capsys, monkeypatch)
    assert code == 2
    assert_one_line_error(err, f"did you mean {run_dir / 'checkpoint.pt'}?")
    code, _, err = call(["semisup", tmp_path], capsys, monkeypatch)
    assert code == 2
    assert_one_line_error(err, "is a directory", "no checkpoint.pt")


def test_version(capsys, monkeypatch):
    from rotnet import __version__

    code, out, _ = call(["--version"], capsys, monkeypatch)
    assert code == 0 and out.strip() == f"rotnet {__version__}"
