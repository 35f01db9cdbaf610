"""Attention maps, first-layer filters and the attention measures (the paper's Figures 3, 4
and 6): the formula, the measures on networks whose answer is known, the figures' content,
the outputs and MLflow logging from checkpoints, and `rotnet attention`'s bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from helpers import ROOT
from rotnet import attention, attention_render, registry
from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.attention_figures import draw_figure3, draw_figure4, draw_figure6
from rotnet.models import NINBackbone


def _images(n: int = 24, seed: int = 0) -> torch.Tensor:
    from rotnet.augment import normalize
    from rotnet.generated import generate_objects

    pixels, _ = generate_objects(n, seed)
    return normalize(pixels, (0.5,) * 3, (0.25,) * 3)


def _equivariant(backbone: NINBackbone) -> NINBackbone:
    """Every kernel averaged over its four quarter turns (so it commutes with rot90), and every
    pooling at stride 1 (a stride-2 grid does not map onto itself under a turn)."""
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.data
            module.weight.data = sum(torch.rot90(w, k, dims=(-2, -1)) for k in range(4)) / 4
    for block in backbone.blocks:
        for i, layer in enumerate(block):
            if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
                block[i] = type(layer)(3, stride=1, padding=1)
    return backbone


# ---- the formula -------------------------------------------------------------------


def test_the_map_is_the_sum_over_channels_of_the_magnitude_to_the_power_p():
    a = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]],
                       [[2.0, 1.0], [-1.0, 0.5]]]])  # 1 image, 2 channels, 2×2
    assert torch.equal(attention.attention_from_activations(a, 1),
                       torch.tensor([[[3.0, 3.0], [1.0, 3.5]]]))
    assert torch.equal(attention.attention_from_activations(a, 2),
                       torch.tensor([[[5.0, 5.0], [1.0, 9.25]]]))
    assert torch.equal(attention.attention_from_activations(a, 4),
                       torch.tensor([[[17.0, 17.0], [1.0, 81.0625]]]))


def test_p_follows_the_paper_for_blocks_1_to_3_and_stays_at_4():
    assert [attention.attention_power(b) for b in range(1, 6)] == [1, 2, 4, 4, 4]
    assert attention.ATTENTION_POWERS is registry.ATTENTION_POWERS


def test_every_block_map_is_upsampled_to_the_image():
    backbone = NINBackbone(4, 3, 0.125)
    maps = attention.attention_maps(backbone, _images(3))
    assert [tuple(m.shape) for m in maps] == [(3, 32, 32)] * 4
    assert backbone.training  # put back as it was


def test_a_constant_map_correlates_0_and_scale_does_not_matter():
    a = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(attention.correlation(a, a), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(attention.correlation(a, -a), -torch.ones(2, dtype=torch.float64))
    assert torch.equal(attention.correlation(a, torch.ones(2, 8, 8)), torch.zeros(2, dtype=torch.float64))
    tiny = attention.correlation(a * 1e-20, a.flip(-1))
    # float32 rounding of the tiny map: equal to ~1e-7, also where the correlation is near 0
    assert torch.allclose(tiny, attention.correlation(a, a.flip(-1)), atol=1e-6)


# ---- the measures ------------------------------------------------------------------


def test_a_network_built_equivariant_scores_1_and_a_random_one_less():
    torch.manual_seed(0)
    x = _images()
    built = attention.equivariance(_equivariant(NINBackbone(4, 3, 0.25)), x)
    random = attention.equivariance(NINBackbone(4, 3, 0.25), x)
    assert all(s.mean > 0.9999 for s in built), built
    assert all(s.mean < 0.95 for s in random), random
    assert all(s.control < 0.9 for s in built)  # two different images do not look alike
    assert {s.images for s in built} == {len(x)}


def test_a_network_is_similar_to_itself_on_its_shared_blocks():
    torch.manual_seed(1)
    x = _images(8)
    four, three = NINBackbone(4, 3, 0.25), NINBackbone(3, 3, 0.25)
    three.blocks = four.blocks[:3]
    scores = attention.similarity(four, three, x, batch=3)
    assert len(scores) == 3 and all(abs(s.mean - 1) < 1e-9 for s in scores)


def test_the_images_are_seeded_one_per_class():
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    chosen = attention.one_per_class(labels, seed=3)
    assert [int(labels[i]) for i in chosen] == [0, 1, 2]
    assert chosen == attention.one_per_class(labels, seed=3)
    assert len({tuple(attention.one_per_class(labels, seed=s)) for s in range(6)}) > 1
    sample = attention.seeded_sample(100, 10, seed=0)
    assert len(sample) == 10 and torch.equal(sample, sample.sort().values)
    assert len(attention.seeded_sample(5, 10, seed=0)) == 5


def test_each_filter_tile_is_scaled_on_its_own():
    weight = torch.stack([torch.full((3, 2, 2), 5.0), torch.arange(12.0).reshape(3, 2, 2) * 100])
    weight[0, 0, 0, 0] = -5.0
    mosaic = attention.filter_tiles(weight, columns=2, gap=1)
    assert mosaic.shape == (2, 5, 3)
    first, second = mosaic[:, :2], mosaic[:, 3:]
    for tile in (first, second):
        assert tile.min() == 0.0 and tile.max() == 1.0
    assert torch.equal(mosaic[:, 2], torch.ones(2, 3))  # the gap


# ---- the figures hold what they are given -------------------------------------------


def _arrays(ax) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for image in ax.get_images()]


def test_figure3_shows_each_image_and_each_models_block_maps():
    rng = np.random.default_rng(0)
    images = [rng.random((32, 32, 3)) for _ in range(2)]
    rotnet = [[rng.random((32, 32)) for _ in range(2)] for _ in range(4)]  # [block][image]
    supervised = [[rng.random((32, 32)) for _ in range(2)] for _ in range(3)]
    fig = draw_figure3(images, ["cat", "dog"], [("RotNet", rotnet), ("supervised", supervised)])
    columns = 1 + 4 + 3
    assert len(fig.axes) == 2 * columns
    for row in range(2):
        cells = [images[row]] + [b[row] for b in rotnet] + [b[row] for b in supervised]
        for column, expected in enumerate(cells):
            (shown,) = _arrays(fig.axes[row * columns + column])
            assert np.array_equal(shown, expected)
    titles = [ax.get_title() for ax in fig.axes[:columns]]
    assert titles[1] == "RotNet\nblock 1" and titles[-1] == "supervised\nblock 3"
    assert [fig.axes[r * columns].get_ylabel() for r in range(2)] == ["cat", "dog"]


def test_figure6_shows_the_rotated_copies_then_each_blocks_maps_turned_back():
    rng = np.random.default_rng(1)
    angles = (0, 90, 180, 270)
    copies = [[rng.random((32, 32)) for _ in range(3)] for _ in angles]  # grey images
    maps = [[[rng.random((32, 32)) for _ in range(3)] for _ in angles] for _ in range(2)]
    fig = draw_figure6(copies, ["a", "b", "c"], maps, angles, "RotNet")
    columns = 4 + 2 * 4
    assert len(fig.axes) == 3 * columns
    for row in range(3):
        cells = [c[row] for c in copies] + [per_angle[a][row] for per_angle in maps
                                            for a in range(4)]
        for column, expected in enumerate(cells):
            assert np.array_equal(_arrays(fig.axes[row * columns + column])[0], expected)
    assert fig.axes[4 + 4 + 1].get_title() == "block 2\nfrom 90°"


def test_figure4_shows_one_mosaic_per_network():
    rng = np.random.default_rng(2)
    rgb, grey = rng.random((11, 11, 3)), rng.random((11, 11, 1))
    fig = draw_figure4([("RotNet", rgb), ("supervised", grey)])
    assert [ax.get_title() for ax in fig.axes] == ["RotNet", "supervised"]
    assert np.array_equal(_arrays(fig.axes[0])[0], rgb)
    assert np.array_equal(_arrays(fig.axes[1])[0], grey[..., 0])


# ---- the table and the claim lines ----------------------------------------------------


def _metrics(equivariance, similarity=(), control=0.2) -> dict:
    scores = [attention.Score(v, control, 10) for v in equivariance]
    metrics = attention_render.score_metrics(attention_render.EQUIVARIANCE, scores)
    metrics.update(attention_render.score_metrics(
        attention_render.SIMILARITY, [attention.Score(v, control, 10) for v in similarity]))
    return metrics


def test_the_metrics_are_named_per_measure_and_block():
    metrics = _metrics([0.9, 0.8], [0.7])
    assert metrics == {"attention_equivariance_block1": 0.9, "attention_equivariance_control_block1": 0.2,
                       "attention_equivariance_block2": 0.8, "attention_equivariance_control_block2": 0.2,
                       "attention_similarity_block1": 0.7, "attention_similarity_control_block1": 0.2}


def test_the_table_has_a_row_per_block_with_the_seeds_mean():
    rotnet = [_metrics([0.9, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3]), _metrics([0.7, 0.8, 0.7, 0.6], [0.5, 0.4, 0.3])]
    supervised = [_metrics([0.6, 0.5, 0.4])] * 2
    text = attention_render.attention_table_markdown(rotnet, supervised, "t")
    rows = [line for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 4
    assert rows[0] == "| 1 | 1 | 0.800 (0.200) | 0.600 (0.200) | 0.500 (0.200) |"
    assert rows[3] == "| 4 | 4 | 0.600 (0.200) | – | – |"


@pytest.mark.parametrize("similarity, verdict", [
    ([0.8, 0.7, 0.6], attention_render.HOLDS),
    ([0.8, 0.3, 0.6], attention_render.PARTLY),
    ([0.1, 0.2, 0.3], attention_render.FAILS),
    ([], attention_render.NOT_RUN),
])
def test_the_claim_lines_state_the_paper_and_the_verdict(similarity, verdict):
    lines = attention_render.attention_claims_markdown([_metrics([0.9, 0.9], similarity)],
                                                       [_metrics([0.8])])
    assert lines[0].endswith(f"(Figure 3): {verdict}")
    assert attention_render.PAPER_FIGURE3 in "\n".join(lines)
    figure6 = next(line for line in lines if "(Figure 6)" in line)
    assert figure6.endswith(attention_render.HOLDS)


def test_a_block_below_its_control_does_not_count():
    lines = attention_render.attention_claims_markdown([_metrics([0.6], [0.6], control=0.7)],
                                                       [_metrics([0.6])])
    assert lines[0].endswith(attention_render.FAILS)


def test_the_stage_runs_for_the_params_variants_every_registry_variant_by_default():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["attention"]
    assert stage["matrix"]["variant"] == "${attention.variants}"
    assert tuple(Config.from_dict({}).attention.variants) == registry.VARIANTS
    assert Config.from_dict({"profile": "quick"}).attention.variants == [registry.BASELINE]
    with pytest.raises(RotnetError, match="attention.variants"):
        Config.from_dict({"attention": {"variants": ["b9-r4"]}})


# ---- from checkpoints: files, MLflow, the command line ---------------------------------


@pytest.fixture
def tracked_pair(tmp_path, tracking_store, tiny_data, make_config):
    """A tiny tracked RotNet and supervised NIN, trained in this test's store."""
    from rotnet import experiments
    from rotnet.tracking import Tracker

    config = make_config()
    rotnet = experiments.pretrain(config, tmp_path / "pretrain", tracker=Tracker(), data=tiny_data)
    supervised = experiments.supervised(config, out_dir=tmp_path / "supervised",
                                        tracker=Tracker(), data=tiny_data)
    return rotnet, supervised


def test_the_report_writes_the_figures_and_logs_them_on_both_runs(tmp_path, tracked_pair,
                                                                   tracking_store, tiny_data):
    from rotnet.attention_report import attention_report, load_network, test_images
    from rotnet.tracking import Tracker

    networks = [load_network(r.out_dir / "checkpoint.pt") for r in tracked_pair]
    out = tmp_path / "reports" / "b4-r4-s0"
    metrics = attention_report(networks, test_images(tiny_data, 0), out, context="test",
                               tracker=Tracker())
    names = {"figure3.png", "figure4.png", "figure6-rotnet.png", "figure6-supervised.png",
             "attention.md"}
    assert {p.name for p in out.iterdir()} == names
    text = (out / "attention.md").read_text()
    assert "(Figure 3)" in text and "(Figure 6)" in text
    assert set(metrics[0]) > {"attention_equivariance_block4", "attention_similarity_block3"}
    assert "attention_similarity_block1" not in metrics[1]
    for result, values in zip(tracked_pair, metrics):
        run = tracking_store.run(result.run_id)
        assert run.data.metrics["attention_equivariance_block1"] == pytest.approx(
            values["attention_equivariance_block1"])
        logged = tracking_store.client().list_artifacts(result.run_id, "attention/b4-r4-s0")
        assert {a.path.rsplit("/", 1)[-1] for a in logged} == names


def _call(args, capsys, monkeypatch):
    from rotnet import cli

    monkeypatch.setattr(sys, "argv", ["rotnet", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return (0 if exit_info.value.code is None else exit_info.value.code), out, err


def _picture_folder(path, count=3):
    from PIL import Image

    path.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path / f"p{i}.png")
    return path


def test_the_command_draws_a_checkpoint_on_any_pictures(tmp_path, tiny_pretrained, capsys,
                                                        monkeypatch):
    out = tmp_path / "out"
    code, stdout, err = _call(["attention", tiny_pretrained, "--images",
                               _picture_folder(tmp_path / "pictures"), "--out", out],
                              capsys, monkeypatch)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"figure3.png", "figure4.png",
                                               "figure6-rotnet.png", "attention.md"}
    assert "attention_equivariance_block4" in stdout


@pytest.mark.parametrize("case, words", [
    ("missing-checkpoint", ["not found"]),
    ("not-a-checkpoint", ["not a rotnet checkpoint"]),
    ("missing-folder", ["--images", "no such folder"]),
    ("empty-folder", ["--images", "no image files"]),
    ("broken-picture", ["cannot read image"]),
    ("out-is-a-file", ["--out", "is a file"]),
])
def test_bad_input_exits_2_with_one_line_and_nothing_written(case, words, tmp_path,
                                                             tiny_pretrained, capsys, monkeypatch):
    checkpoint, pictures, out = tiny_pretrained, tmp_path / "pictures", tmp_path / "out"
    if case == "missing-checkpoint":
        checkpoint = tmp_path / "nope.pt"
    elif case == "not-a-checkpoint":
        checkpoint = tmp_path / "wrong.pt"
        torch.save({"weights": torch.zeros(1)}, checkpoint)
    if case != "missing-folder":
        _picture_folder(pictures, count=0 if case == "empty-folder" else 2)
    if case == "broken-picture":
        (pictures / "broken.png").write_bytes(b"not a png")
    if case == "out-is-a-file":
        out.write_text("")
    code, _, err = _call(["attention", checkpoint, "--images", pictures, "--out", out],
                         capsys, monkeypatch)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert all(word in lines[0] for word in words), lines[0]
    assert not out.exists() or out.is_file()
