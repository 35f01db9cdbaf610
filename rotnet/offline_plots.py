"""`dvc plots show` that renders without a network connection.

DVC's HTML loads vega, vega-lite and vega-embed from a CDN, so offline its page stays
white. DVC accepts an HTML template of our own (`--html-template`); a template without
DVC's `{scripts}` placeholder drops those CDN tags, and ours carries the three libraries
inline, bundled by the `vl-convert-python` wheel (no download at run time). The template
(~0.9 MB) is generated once under .dvc/tmp/ rather than committed.

    python -m rotnet.offline_plots [show|diff] [dvc plots options]    (or: make plots)
"""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

from rotnet.errors import RotnetError
from rotnet.repro import DVC

TEMPLATE = Path(".dvc/tmp/plots-offline.html")
# DVC 3's plot specs are written for vega-lite 5 ("$schema": .../vega-lite/v5.json).
VEGA_LITE = "5.21"
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC plots (offline)</title>
    <!-- {stamp} -->
    <script type="text/javascript">{bundle}</script>
    <style>table { border-spacing: 15px; }</style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def _vl_convert():
    try:
        import vl_convert
    except ImportError:
        raise RotnetError("offline plots need the vl-convert-python package: "
                          "pip install -c constraints.txt -e '.[workflow]'") from None
    return vl_convert


def template_html(bundle: str, stamp: str) -> str:
    """DVC's page with `bundle` (the JavaScript libraries) inline; DVC fills
    {plot_divs} and {refresh_tag}."""
    if "</script" in bundle.lower():  # would end the inline <script> early
        raise RotnetError("the vega bundle contains '</script'; cannot inline it")
    return PAGE.replace("{stamp}", html.escape(stamp)).replace("{bundle}", bundle)


def offline_template(path: Path = TEMPLATE) -> Path:
    """The template at `path`, (re)written when missing or made by another vl-convert."""
    vl_convert = _vl_convert()
    stamp = f"vl-convert {vl_convert.__version__}, vega-lite {VEGA_LITE}"
    if path.is_file() and f"<!-- {stamp} -->" in path.read_text(encoding="utf-8"):
        return path
    page = template_html(vl_convert.javascript_bundle(vl_version=VEGA_LITE), stamp)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def dvc_command(template: Path, argv: list[str]) -> list[str]:
    """`dvc plots show|diff` (show when argv names neither) with the offline template."""
    action, rest = (argv[0], argv[1:]) if argv[:1] in (["show"], ["diff"]) else ("show", argv)
    return [*DVC, "plots", action, "--html-template",
            str(template.resolve()), *rest]


def main(argv: list[str] | None = None) -> int:
    """Run `dvc plots show` (or `diff`) with the offline template; other arguments go to DVC."""
    try:
        template = offline_template()
    except RotnetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return subprocess.call(dvc_command(template, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
