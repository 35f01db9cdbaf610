"""The typed configuration: paper defaults, profiles, strict validation, params/--set parsing."""

from __future__ import annotations

import pytest
import yaml

from rotnet.config import Config
from rotnet.errors import RotnetError
from rotnet.params import dump_params, parse_set, read_params


def check_paper_sgd(optim):
    assert optim.lr == 0.1
    assert optim.lr_decay == 0.2
    assert optim.momentum == 0.9
    assert optim.nesterov is True
    assert optim.weight_decay == 5e-4
    assert optim.batch_size == 128


def test_defaults_are_the_paper_protocol():
    config = Config.from_dict({})
    assert config.profile == "paper"
    assert config.data.dataset == "cifar10"
    assert config.data.train_size is None and config.data.test_size is None

    p = config.pretrain
    assert (p.blocks, p.rotations, p.width) == (4, "4", 1.0)
    assert p.optim.epochs == 100 and p.optim.milestones == [30, 60, 80]
    check_paper_sgd(p.optim)
    assert p.optim.epoch_samples is None

    # Non-linear probe: 0.1 / 0.02 / 0.004 / 0.0008 from epochs 0 / 20 / 40 / 45.
    assert config.probe.hidden == 200
    assert config.probe.optim.epochs == 100 and config.probe.optim.milestones == [20, 40, 45]
    check_paper_sgd(config.probe.optim)

    # Conv probe: milestones 35 / 70 / 85.
    assert config.conv_probe.optim.epochs == 100
    assert config.conv_probe.optim.milestones == [35, 70, 85]
    check_paper_sgd(config.conv_probe.optim)

    # Supervised NIN (authors' code): 3 blocks, 200 epochs, 60 / 120 / 160.
    assert config.supervised.blocks == 3
    assert config.supervised.optim.epochs == 200
    assert config.supervised.optim.milestones == [60, 120, 160]
    check_paper_sgd(config.supervised.optim)

    # Semi-supervised: K = 20 .. 5000 per class, an epoch held at 50k samples.
    assert config.semisup.per_class == [20, 100, 400, 1000, 5000]
    assert config.semisup.optim.epoch_samples == 50_000
    check_paper_sgd(config.semisup.optim)

    # Figure 5a: every 20 epochs, block 2.
    assert config.snapshots.every == 20 and config.snapshots.block == 2
    check_paper_sgd(config.finetune.optim)


def test_paper_profile_by_name_equals_the_defaults():
    assert Config.from_dict({"profile": "paper"}) == Config.from_dict({}) == Config()
    assert Config.profile_defaults("paper") == Config()


def test_learning_rate_schedule_of_the_probe_matches_the_reference_steps():
    """0.1 × 0.2^k after each milestone: 0.1 / 0.02 / 0.004 / 0.0008."""
    optim = Config().probe.optim
    lrs = [optim.lr * optim.lr_decay ** sum(epoch >= m for m in optim.milestones)
           for epoch in (0, 19, 20, 39, 40, 44, 45, 99)]
    assert lrs == pytest.approx([0.1, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008])


@pytest.mark.parametrize("profile", ["quick", "smoke"])
def test_small_profiles_use_the_generated_data_set(profile):
    config = Config.from_dict({"profile": profile})
    assert config.profile == profile
    assert config.data.dataset == "generated"
    paper = Config()
    assert config.pretrain.optim.epochs < paper.pretrain.optim.epochs
    assert config.pretrain.width < 1.0
    # Milestones stay inside the (shorter) schedule.
    for _, optim in config.optim_sections():
        assert all(m <= optim.epochs for m in optim.milestones)
    # What the profile does not touch keeps the paper's value.
    assert config.pretrain.blocks == paper.pretrain.blocks
    assert config.pretrain.optim.momentum == paper.pretrain.optim.momentum


def test_overrides_go_on_top_of_the_profile():
    config = Config.from_dict({"profile": "smoke", "data": {"train_size": 100},
                               "pretrain": {"optim": {"lr": 0.05}}})
    smoke = Config.from_dict({"profile": "smoke"})
    assert config.data.train_size == 100
    assert config.data.test_size == smoke.data.test_size  # siblings survive the merge
    assert config.pretrain.optim.lr == 0.05
    assert config.pretrain.optim.epochs == smoke.pretrain.optim.epochs


def test_to_dict_round_trips():
    config = Config.from_dict({"profile": "quick", "runtime": {"seed": 3}})
    assert Config.from_dict(config.to_dict()) == config


def test_unknown_profile_is_a_rotnet_error():
    with pytest.raises(RotnetError, match="fast"):
        Config.from_dict({"profile": "fast"})


@pytest.mark.parametrize("values, key", [
    ({"pretrian": {"blocks": 4}}, "pretrian"),
    ({"pretrain": {"blocs": 4}}, "blocs"),
    ({"pretrain": {"optim": {"learning_rate": 0.1}}}, "learning_rate"),
    ({"data": {"datset": "generated"}}, "datset"),
])
def test_unknown_key_is_a_rotnet_error_naming_the_key(values, key):
    with pytest.raises(RotnetError, match=key) as err:
        Config.from_dict(values)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("values", [
    {"pretrain": {"blocks": "four"}},
    {"pretrain": {"blocks": 4.5}},
    {"pretrain": {"blocks": True}},
    {"pretrain": {"optim": {"lr": "fast"}}},
    {"pretrain": {"optim": {"milestones": 30}}},
    {"pretrain": {"optim": {"milestones": [30, "sixty"]}}},
    {"pretrain": {"optim": {"nesterov": "yes"}}},
    {"data": {"train_size": "all"}},
    {"pretrain": 4},
])
def test_wrong_type_is_a_rotnet_error(values):
    with pytest.raises(RotnetError):
        Config.from_dict(values)


@pytest.mark.parametrize("values, words", [
    ({"pretrain": {"rotations": "3"}}, "rotation"),
    ({"pretrain": {"rotations": 3}}, "rotation"),
    ({"pretrain": {"blocks": 6}}, "blocks"),
    ({"pretrain": {"blocks": 2}}, "blocks"),
    ({"supervised": {"blocks": 6}}, "blocks"),
    ({"pretrain": {"optim": {"epochs": 0}}}, "epochs"),
    ({"probe": {"optim": {"epochs": -1}}}, "epochs"),
    ({"pretrain": {"optim": {"lr": 0}}}, "lr"),
    ({"pretrain": {"optim": {"batch_size": 0}}}, "batch_size"),
    ({"pretrain": {"width": 0}}, "width"),
    ({"probe": {"kind": "linear"}}, "kind"),
    ({"probe": {"block": 6}}, "block"),
    ({"data": {"train_size": 0}}, "train_size"),
    ({"semisup": {"per_class": [20, 0]}}, "per_class"),
    ({"finetune": {"backbone_lr_scale": 0}}, "backbone_lr_scale"),
    ({"finetune": {"backbone_lr_scale": 2.0}}, "backbone_lr_scale"),
    ({"pretrain": {"eval_every": 0}}, "eval_every"),
    ({"probe": {"optim": {"warmup_epochs": -1}}}, "warmup_epochs"),
    ({"pretrain": {"optim": {"epochs": 2, "warmup_epochs": 3}}}, "warmup_epochs"),
])
def test_invalid_values_are_rotnet_errors(values, words):
    with pytest.raises(RotnetError, match=words):
        Config.from_dict(values)


@pytest.mark.parametrize("rotations", ["4", "8", "2", "2-perp"])
def test_every_supported_rotation_set_is_accepted(rotations):
    assert Config.from_dict({"pretrain": {"rotations": rotations}}).pretrain.rotations == rotations


def test_yaml_int_rotations_become_the_set_name(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("profile: smoke\npretrain:\n  rotations: 4\n  blocks: 3\n")
    values = read_params(path)
    assert values["pretrain"]["rotations"] == 4  # YAML reads an int...
    config = Config.from_dict(values)
    assert config.pretrain.rotations == "4"  # ...the config holds the set's name
    assert config.pretrain.blocks == 3
    assert Config.from_dict(parse_set("pretrain.rotations=8")).pretrain.rotations == "8"


def test_int_given_for_a_float_becomes_a_float():
    config = Config.from_dict({"pretrain": {"width": 1, "optim": {"lr": 1}}})
    assert isinstance(config.pretrain.width, float) and config.pretrain.width == 1.0
    assert isinstance(config.pretrain.optim.lr, float)


def test_parse_set_builds_a_nested_dict_with_yaml_values():
    assert parse_set("pretrain.optim.lr=0.05") == {"pretrain": {"optim": {"lr": 0.05}}}
    assert parse_set("pretrain.blocks=5") == {"pretrain": {"blocks": 5}}
    assert parse_set("runtime.deterministic=true") == {"runtime": {"deterministic": True}}
    assert parse_set("data.train_size=null") == {"data": {"train_size": None}}
    assert parse_set("pretrain.optim.milestones=[10, 20]") == {
        "pretrain": {"optim": {"milestones": [10, 20]}}}
    assert parse_set("data.dataset=generated") == {"data": {"dataset": "generated"}}
    assert parse_set("profile=smoke") == {"profile": "smoke"}
    # Only the first "=" separates key and value.
    assert parse_set("data.root=a=b") == {"data": {"root": "a=b"}}
    # An unparsable YAML value stays a string.
    assert parse_set("data.root=[oops") == {"data": {"root": "[oops"}}


@pytest.mark.parametrize("raw, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("1.5e3", 1500.0),
                                        ("-2e-2", -0.02), ("+3e1", 30.0), (".5e1", 5.0),
                                        ("10", 10), ("0.1", 0.1), ("1e", "1e"), ("e3", "e3")])
def test_set_values_are_numbers_as_yaml_1_2_reads_them(raw, value):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; researchers and DVC (YAML 1.2) mean 0.001."""
    parsed = parse_set(f"pretrain.optim.lr={raw}")["pretrain"]["optim"]["lr"]
    assert parsed == value and type(parsed) is type(value)


def test_set_lr_1e_3_reaches_the_config():
    from rotnet.cli_options import RunOptions

    options = RunOptions(profile="smoke", sets=["pretrain.optim.lr=1e-3"])
    assert options.config().pretrain.optim.lr == 0.001


def test_a_params_file_as_dvc_exp_run_set_writes_it_reads_its_numbers(tmp_path):
    """`dvc exp run -S key=value` rewrites params.yaml through DVC's apply_overrides, which
    writes 1e-7 as `1e-07`: a YAML 1.1 string, a YAML 1.2 float."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text(dump_params(Config.profile_defaults("smoke")))
    apply_overrides(path, ["pretrain.optim.lr=1e-7", "probe.optim.weight_decay=5e-4"])
    assert "lr: 1e-07" in path.read_text()
    assert yaml.safe_load(path.read_text())["pretrain"]["optim"]["lr"] == "1e-07"  # PyYAML alone
    config = Config.from_dict(read_params(path))
    assert config.pretrain.optim.lr == 1e-7 and config.probe.optim.weight_decay == 5e-4


@pytest.mark.parametrize("item", ["pretrain.blocks", "=5", "  =5", ""])
def test_parse_set_without_key_or_value_is_a_rotnet_error(item):
    with pytest.raises(RotnetError):
        parse_set(item)


def test_parse_set_result_feeds_the_config():
    config = Config.from_dict({"profile": "smoke", **parse_set("pretrain.optim.epochs=3")})
    assert config.pretrain.optim.epochs == 3
    with pytest.raises(RotnetError, match="blocs"):
        Config.from_dict(parse_set("pretrain.blocs=3"))


def test_read_params_rejects_missing_invalid_and_non_mapping_files(tmp_path):
    with pytest.raises(RotnetError, match="not found"):
        read_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain: [unclosed\n")
    with pytest.raises(RotnetError):
        read_params(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(RotnetError):
        read_params(listing)


@pytest.mark.parametrize("profile", ["paper", "paper-authors", "quick", "smoke"])
def test_dumped_params_read_back_to_the_same_config(tmp_path, profile):
    config = Config.from_dict({"profile": profile, "runtime": {"seed": 5}})
    path = tmp_path / "params.yaml"
    path.write_text(dump_params(config))
    assert yaml.safe_load(path.read_text())["runtime"]["seed"] == 5
    assert Config.from_dict(read_params(path)) == config


def test_the_params_file_states_every_key():
    """params.yaml has every key of the config (a new one shows in `dvc params diff` and takes
    `-S`); its values may be any profile's or a user's."""
    from helpers import ROOT
    from rotnet.checkpoint import flatten

    assert set(flatten(read_params(ROOT / "params.yaml"))) == set(flatten(Config().to_dict()))


def test_figure5b_supervised_nin_trains_as_the_supervised_baseline_in_the_paper_profile():
    config = Config()
    supervised, rotnet_conv = config.semisup_optim("supervised"), config.semisup_optim("conv")
    assert (supervised.epochs, supervised.milestones, supervised.epoch_samples) == \
        (200, [60, 120, 160], 50_000)
    check_paper_sgd(supervised)
    assert (rotnet_conv.epochs, rotnet_conv.milestones, rotnet_conv.epoch_samples) == \
        (100, [35, 70, 85], 50_000)
    quick = Config.profile_defaults("quick")  # scaled: the quick supervised NIN's schedule
    assert quick.semisup_optim("supervised").epochs == quick.supervised.optim.epochs
    assert quick.semisup_optim("supervised").epoch_samples == quick.semisup.optim.epoch_samples


def test_the_authors_schedule_is_a_named_profile():
    authors, paper = Config.profile_defaults("paper-authors"), Config()
    assert (authors.pretrain.optim.epochs, authors.pretrain.optim.milestones) == (200, [60, 120, 160])
    check_paper_sgd(authors.pretrain.optim)
    assert (paper.pretrain.optim.epochs, paper.pretrain.optim.milestones) == (100, [30, 60, 80])
    # only pretraining differs from the paper profile
    assert authors.to_dict() | {"profile": "paper", "pretrain": None} == \
        paper.to_dict() | {"pretrain": None}
    assert "paper-authors" in dump_params(authors).splitlines()[0]
