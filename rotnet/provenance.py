"""Where a run comes from: the project checkout, its git commit, and the command that
started it (recorded with every MLflow run as MLflow's standard source tags)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def project_root() -> Path:
    """ROTNET_HOME, else the source checkout this package lives in, else the cwd."""
    if os.environ.get("ROTNET_HOME"):
        return Path(os.environ["ROTNET_HOME"]).resolve()
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").exists() else Path.cwd().resolve()


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or project_root(),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def source_name(argv: list[str] | None = None) -> str:
    """What started a run, for MLflow's `mlflow.source.name`: a script by its path in the
    project (`stages/pretrain.py`), the CLI by its command (`rotnet pretrain`)."""
    argv = argv or sys.argv
    program = Path(argv[0]).absolute()
    if program.name == "rotnet" and len(argv) > 1:
        return f"rotnet {argv[1]}"
    try:
        return str(program.relative_to(project_root()))
    except ValueError:
        return program.name


def source_tags(commit: str) -> dict[str, str]:
    """MLflow's standard source tags (shown in the run page's header)."""
    tags = {"mlflow.source.name": source_name()}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags
