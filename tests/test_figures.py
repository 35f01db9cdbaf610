"""Figures 5a/5b as a researcher reads them, checked on the matplotlib objects (not pixels):
integer epoch ticks, dashed chance lines, a fixed 0-100 % y-axis, the paper's values as
marks, series that stay distinguishable where they coincide, and a ± sd band exactly
where a point has several runs (seeds)."""

import json

import matplotlib.collections
import pytest

from rotnet import figures, report, report_render

SMOKE_EPOCHS = [(1, 25.0), (2, 25.4)]  # two snapshots, chance-level rotation accuracy


def axes_of(fig):
    (ax,) = fig.axes
    return ax


def lines_labelled(ax, prefix: str):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


def bands(ax):
    return [a for a in [*ax.collections, *ax.patches] if (a.get_gid() or "").startswith("band:")]


def figure5a(**kwargs):
    args = {"rotation": SMOKE_EPOCHS, "probe": [(1, 11.0), (2, 12.5)], "supervised": 30.0,
            "classes": 10, "rotations": 4, **kwargs}
    return axes_of(figures.draw_figure5a(**args))


def test_epoch_ticks_are_whole_epochs():
    ax = figure5a()
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_chance_levels_are_dashed_labelled_lines():
    ax = figure5a()
    chance = {line.get_label(): line for line in lines_labelled(ax, "chance")}
    assert sorted(chance) == ["chance, 10 classes (10.00)", "chance, 4 rotations (25.00)"]
    assert {tuple(line.get_ydata()) for line in chance.values()} == {(10.0, 10.0), (25.0, 25.0)}
    assert all(line.get_linestyle() == "--" for line in chance.values())
    ax_b = axes_of(figures.draw_figure5b([(20, 50.0)], [(20, 40.0)], classes=10))
    assert [line.get_ydata()[0] for line in lines_labelled(ax_b, "chance")] == [10.0]


@pytest.mark.parametrize("values", [[(1, 24.9), (2, 25.1)], [(1, 99.0), (2, 99.5)]])
def test_y_axis_is_the_whole_accuracy_range_whatever_the_values(values):
    # autoscaling would stretch 24.9 -> 25.1 (chance-level noise) over the whole height
    assert figure5a(rotation=values).get_ylim() == (0.0, 100.0)
    assert axes_of(figures.draw_figure5b(values, values)).get_ylim() == (0.0, 100.0)


def test_one_run_per_point_is_a_plain_line():
    ax = figure5a()
    assert bands(ax) == []
    (probe,) = lines_labelled(ax, "non-linear probe")
    assert list(probe.get_ydata()) == [11.0, 12.5]
    assert probe.get_label() == "non-linear probe on block 2"


def test_several_runs_per_point_draw_the_mean_and_a_sd_band():
    ax = figure5a(probe=[(1, [10.0, 12.0, 14.0]), (2, [20.0, 20.0, 20.0])])
    (probe,) = lines_labelled(ax, "non-linear probe")
    assert list(probe.get_ydata()) == [12.0, 20.0]
    assert "mean ± sd, n=3" in probe.get_label()
    (band,) = bands(ax)
    assert isinstance(band, matplotlib.collections.PolyCollection)
    ys = band.get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(10.0) and max(ys) == pytest.approx(20.0)  # 12 ± 2, 20 ± 0


def test_a_replicated_flat_line_gets_a_band_too():
    ax = figure5a(supervised=[90.0, 92.0])
    (line,) = lines_labelled(ax, "supervised NIN")
    assert line.get_ydata()[0] == 91.0 and "n=2" in line.get_label()
    assert len(bands(ax)) == 1


def test_paper_values_are_star_marks_above_the_curves():
    marks = [figures.Mark("paper: RotNet + conv at 5000", 5000, 91.16),
             figures.Mark("paper: supervised NIN at 5000", 5000, 92.80)]
    ax = axes_of(figures.draw_figure5b([(20, 30.0), (100, 50.0)], [(20, 20.0), (100, 45.0)],
                                       paper=marks))
    paper = lines_labelled(ax, "paper")
    points = [(line.get_xdata()[0], line.get_ydata()[0]) for line in paper]
    assert points == [(5000, 91.16), (5000, 92.80)]
    assert all(line.get_marker() == "*" and line.get_zorder() > 2 for line in paper)
    assert 5000 in list(ax.get_xticks())  # the paper's K is labelled on the log axis


def test_identical_series_stay_distinguishable():
    same = [(1, 10.0), (2, 10.0), (3, 10.0)]
    ax_b = axes_of(figures.draw_figure5b(same, same))
    ax_a = figure5a(rotation=same, probe=same)
    for ax, over, under in ((ax_b, "supervised", "RotNet"), (ax_a, "rotation", "non-linear")):
        (top,) = lines_labelled(ax, over)
        (bottom,) = lines_labelled(ax, under)
        assert list(top.get_ydata()) == list(bottom.get_ydata())
        assert top.get_marker() != bottom.get_marker()
        assert top.get_markerfacecolor() == "none"  # hollow: the point under it shows
        assert top.get_markersize() > bottom.get_markersize()
    (ours,), (supervised,) = lines_labelled(ax_b, "RotNet"), lines_labelled(ax_b, "supervised")
    assert ours.get_linestyle() != supervised.get_linestyle()


def test_no_points_draws_a_note_without_lines():
    ax = axes_of(figures.draw_figure5b([], [], classes=10))
    assert ax.get_lines() == [] and "no semi-supervised runs yet" in ax.texts[0].get_text()


# ---- what the report feeds the figures ---------------------------------------------------


def run(run_id: str, value: float, **tags) -> report.Run:
    return report.Run(run_id, "0", run_id, 1, {"fingerprint": "f", **tags}, value, None)


def report_data(points: list[report.Point], dataset: str = "cifar10") -> report.ReportData:
    supervised = report.Cell("table3", "Supervised NIN", "accuracy", 92.80, (
        report.Replicate(0, "f", run("sup", 80.0, num_classes="10")),), "table3/supervised")
    return report.ReportData("quick", dataset, "sqlite://", [supervised], points)


@pytest.fixture
def drawn(monkeypatch):
    """The Figure objects the report draws (instead of their PNG bytes)."""
    got = []
    monkeypatch.setattr(figures, "png", lambda fig: got.append(fig) or b"")
    return got


def test_report_marks_the_paper_and_chance_on_both_figures(drawn):
    data = report_data([
        report.Point("figure5a", "non-linear probe on block 2", 20, 70.0, run("s20", 70.0)),
        report.Point("figure5a", "non-linear probe on block 2", 40, 75.0, run("s40", 75.0)),
        report.Point("figure5b", "RotNet + conv (block 2)", 20, 40.0, run("k20", 40.0))])
    report_render.figure5a_png(data, "")
    report_render.figure5b_png(data, "")
    ax_a, ax_b = (axes_of(fig) for fig in drawn)
    marks_a = {line.get_label(): (line.get_xdata()[0], line.get_ydata()[0])
               for line in lines_labelled(ax_a, "paper")}
    assert marks_a == {"paper: probe on block 2, fully pretrained (89.06)": (40, 89.06),
                       "paper: supervised NIN (92.80)": (40, 92.80)}  # at the last snapshot
    assert {line.get_ydata()[0] for line in lines_labelled(ax_a, "chance")} == {10.0, 25.0}
    marks_b = {(line.get_xdata()[0], line.get_ydata()[0]) for line in lines_labelled(ax_b, "paper")}
    assert marks_b == {(5000, 91.16), (5000, 92.80)}  # the paper's Table 3 rows at K = 5000


def test_report_passes_every_run_at_a_point_to_the_figure(drawn):
    series = "RotNet + conv (block 2)"
    data = report_data([report.Point("figure5b", series, 20, v, run(f"seed{i}", v))
                        for i, v in enumerate([40.0, 44.0])])
    assert report_render.series_values(data, "figure5b", series) == [(20, [40.0, 44.0])]
    report_render.figure5b_png(data, "")
    (ours,) = lines_labelled(axes_of(drawn[0]), "RotNet")
    assert list(ours.get_ydata()) == [42.0] and len(bands(axes_of(drawn[0]))) == 1


def test_class_count_comes_from_the_runs():
    assert report_render.class_count(report_data([])) == 10
    no_tag = report.ReportData("quick", "cifar10", "", [], [report.Point(
        "figure5b", "s", 20, 1.0, report.Run("r", "0", "r", 1, {}, 1.0, None, (("a", 1.0),) * 3))])
    assert report_render.class_count(no_tag) == 3


def test_the_paper_value_of_a_point_is_in_runs_json():
    data = report_data([report.Point("figure5b", "supervised NIN", 5000, 91.0, run("t3", 91.0)),
                        report.Point("figure5b", "supervised NIN", 20, 30.0, run("k20", 30.0))])
    points = json.loads(report_render.runs_json(data, "http://ui"))["points"]
    assert {p["x"]: p["paper"] for p in points} == {20: None, 5000: 92.80}


def test_no_paper_marks_on_another_data_set(drawn):
    probe = report.Point("figure5a", "non-linear probe on block 2", 1, 20.0, run("s", 20.0))
    supervised = report.Point("figure5b", "supervised NIN", 20, 30.0, run("k", 30.0))
    data = report_data([probe, supervised], dataset="generated")
    report_render.figure5a_png(data, "")
    report_render.figure5b_png(data, "")
    for fig in drawn:
        assert lines_labelled(axes_of(fig), "paper") == []
        assert lines_labelled(axes_of(fig), "chance")  # chance still drawn
    assert 5000 not in list(axes_of(drawn[1]).get_xticks())
