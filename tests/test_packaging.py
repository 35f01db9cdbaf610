"""What the repository states about itself: every third-party module the package imports is
declared in pyproject.toml, and no text points at a file outside the repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

from helpers import ROOT


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values()
                                       for s in extra]
    return {re.split(r"[<>=!~\[; ]", spec)[0].lower().replace("_", "-") for spec in specs}


def _imported_top_level() -> set[str]:
    names = set()
    for path in (ROOT / "rotnet").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"rotnet"}


def test_every_imported_package_is_declared():
    distributions = packages_distributions()
    declared = _declared()
    for module in sorted(_imported_top_level()):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        assert dists & declared, f"rotnet imports {module} ({sorted(dists)}), not in pyproject.toml"


def test_no_text_cites_a_path_outside_the_repository():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if name == "tests/test_packaging.py":  # its own pattern
            continue
        if name.endswith((".py", ".md", ".yaml", ".toml", ".txt")) or name == "Makefile":
            text = (ROOT / name).read_text(errors="replace")
            assert not re.search(r"REFERENCE\.md|\.\./shared|/work/", text), name
