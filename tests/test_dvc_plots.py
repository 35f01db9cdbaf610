"""`dvc plots show`: the top-level charts in dvc.yaml read files that stages write (the
report's comparison curves, every seed), with columns those files have, through a template
that exists; the offline page carries the vega libraries inline and no CDN script tags."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

from helpers import ROOT, cli_env, copy_project, run_command
from rotnet import offline_plots, report_publish
from rotnet.errors import RotnetError
from rotnet.repro import DVC

ROTATION_SETS = ("b4-r2", "b4-r2-perp", "b4-r4", "b4-r8")


def top_level_plots() -> dict[str, dict]:
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    return {name: spec for entry in doc["plots"] for name, spec in entry.items()}


def stage_output_files() -> set[str]:
    """Every output a stage of dvc.yaml declares, as DVC resolves matrix and foreach."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {out.def_path for stage in repo.index.stages for out in stage.outs}


def test_top_level_plots_read_files_the_stages_write():
    written = stage_output_files()
    charts = top_level_plots()
    assert charts, "dvc.yaml has no top-level plots"
    for name, spec in charts.items():
        # a file, or one in a folder a stage declares (the report's reports/plots)
        missing = {y for y in spec["y"] if not any(y == w or y.startswith(w + "/") for w in written)}
        assert not missing, f"plot {name!r} reads files no stage writes: {sorted(missing)}"


def test_one_chart_per_comparison_first_and_from_the_report():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    charts = {name: set(spec["y"]) for name, spec in top_level_plots().items()}
    assert list(charts) == list(report_publish.COMPARISONS)  # in the report's order
    assert charts == {name: {f"reports/plots/{name}.csv"} for name in report_publish.COMPARISONS}
    # the report stage writes them; no single-stage chart is listed before them
    assert any("reports/plots" in out for out in doc["stages"]["report"]["outs"])


def test_plot_columns_and_template_exist():
    columns = set(report_publish.CURVE_COLUMNS)
    for name, spec in top_level_plots().items():
        assert spec["x"] in columns, name
        assert set(spec["y"].values()) <= columns, name
        template = json.loads((ROOT / ".dvc" / "plots" / f"{spec['template']}.json").read_text())
        assert "<DVC_METRIC_DATA>" in json.dumps(template)
        assert template["encoding"]["y"]["scale"]["domain"] == [0, 100]  # no noise blown up
        # one colour per variant (or block) and seed: every seed's curve, told apart
        assert template["encoding"]["color"]["field"] == "series"


def test_the_offline_page_drops_dvcs_cdn_scripts():
    page = offline_plots.template_html("window.vegaEmbed = function () {};", "stamp")
    html = HTML(page).with_scripts(VegaRenderer.SCRIPTS)  # what DVC does for vega plots
    rendered = html.with_element("<div id='p'></div>").embed()
    assert "cdn.jsdelivr.net" in VegaRenderer.SCRIPTS  # what DVC would add
    assert "<script src" not in rendered and "window.vegaEmbed = function" in rendered
    assert "<div id='p'></div>" in rendered


@pytest.mark.parametrize("argv, action, rest", [([], "show", []), (["--open"], "show", ["--open"]),
                                               (["diff", "HEAD~1"], "diff", ["HEAD~1"])])
def test_the_dvc_command_uses_the_offline_template(tmp_path, argv, action, rest):
    command = offline_plots.dvc_command(tmp_path / "t.html", argv)
    assert command[:len(DVC)] == DVC
    assert command[len(DVC):] == ["plots", action, "--html-template",
                           str(tmp_path / "t.html"), *rest]


def test_a_bundle_that_would_close_the_script_tag_is_refused():
    with pytest.raises(RotnetError, match="</script"):
        offline_plots.template_html("var s = '</SCRIPT>';", "stamp")


def test_offline_template_inlines_vega_from_the_installed_wheel(tmp_path):
    vl_convert = pytest.importorskip("vl_convert")
    path = offline_plots.offline_template(tmp_path / "t.html")
    page = path.read_text(encoding="utf-8")
    assert "{plot_divs}" in page and "<script src" not in page
    assert "window.vegaEmbed=" in page.replace(" ", "")
    assert vl_convert.__version__ in page
    before = path.stat().st_mtime_ns
    assert offline_plots.offline_template(path) == path and path.stat().st_mtime_ns == before


@pytest.mark.slow
def test_make_plots_renders_in_a_browser_without_network(tmp_path):
    """The offline page, opened in headless Chromium (no network here, as for the users it
    is for), draws every top-level chart: vega puts an SVG, labelled with the template's
    description, in each."""
    pytest.importorskip("vl_convert")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("no chromium")
    env = cli_env(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    project = copy_project(tmp_path, env)
    charts = top_level_plots()
    for spec in charts.values():  # three epochs of made-up curves in every file they read
        for name in spec["y"]:
            rows = ["epoch,test_acc,series"] + [f"{e},{40 + 10 * e + s},b4-r{r} s{s}"
                                                for e in (1, 2, 3) for r in (4, 8) for s in (0, 1)]
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            (project / name).write_text("\n".join(rows) + "\n")
    run_command([sys.executable, "-m", "rotnet.offline_plots"], project, env, timeout=600)
    page = project / "dvc_plots" / "index.html"
    assert "cdn.jsdelivr.net" not in page.read_text(encoding="utf-8")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    for name in charts:  # DVC titles each chart's div with its name
        assert f'id="{name}"' in dom, name
    template = json.loads((ROOT / ".dvc" / "plots" / "accuracy.json").read_text())
    drawn = dom.count(f'aria-label="{template["description"]}"')
    assert drawn == len(charts), f"vega drew {drawn} of the {len(charts)} charts"
