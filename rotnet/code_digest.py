"""The code a DVC stage's result depends on: its script and every rotnet module the script
imports, directly or not (function-level imports included), as one digest file per script.

dvc.yaml's `code` stage writes them (stages/code.py) and every other stage depends on its
script's digest instead of listing each module. DVC reads and rewrites dvc.lock once per
stage, so its size is paid by every stage: with some thirty modules listed per stage the
quick profile's dvc.lock held about 12 700 lines, four fifths of them these modules, and
reading and writing it took about 2 s of each stage. An edit to a module still reruns
exactly the stages whose scripts import it: the `code` stage reruns (it depends on every
module and script), and only the digests that name the module change.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

PACKAGE = "rotnet"
DIGEST_SUFFIX = ".txt"


def _module_file(module: str, root: Path) -> Path | None:
    path = root / (module.replace(".", "/") + ".py")
    return path if module.split(".")[0] == PACKAGE and path.is_file() else None


def _imported_modules(path: Path, root: Path) -> set[str]:
    """The rotnet modules `path` imports anywhere (absolute imports: the package uses no
    relative ones)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if _module_file(name, root)}


def module_closure(script: Path, root: Path) -> set[str]:
    """Paths (relative to `root`, the repository) of every rotnet module `script` imports,
    directly or transitively, and the package's __init__.py, which any of them runs."""
    seen: set[str] = set()
    todo = list(_imported_modules(script, root))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imported_modules(_module_file(module, root), root)
    paths = {_module_file(m, root).relative_to(root).as_posix() for m in seen}
    return paths | ({f"{PACKAGE}/__init__.py"} if paths else set())


def digest_text(script: Path, root: Path) -> str:
    """One line per file the script's result depends on, "sha256  path", sorted by path."""
    paths = sorted({script.resolve().relative_to(root.resolve()).as_posix(),
                    *module_closure(script, root)})
    return "".join(f"{hashlib.sha256((root / p).read_bytes()).hexdigest()}  {p}\n" for p in paths)


def digest_name(script: Path) -> str:
    """The digest file of `script` (stages/probe.py -> probe.txt)."""
    return script.stem + DIGEST_SUFFIX


def write_digests(scripts: list[Path], out_dir: Path, root: Path) -> list[Path]:
    """A digest file per script in `out_dir` (created); returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for script in scripts:
        path = out_dir / digest_name(script)
        path.write_text(digest_text(script, root))
        written.append(path)
    return written
