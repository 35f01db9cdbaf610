"""Label subsets of the semi-supervised protocol: the first K images of each class, stored."""

from __future__ import annotations

import json

import pytest
import torch

from rotnet import figure5
from rotnet.errors import RotnetError
from rotnet.subsets import label_subset, read_label_subset, subset_path, write_label_subset


@pytest.fixture(scope="module")
def labels():
    """An unbalanced, shuffled label vector: class c has 30 + 5c examples."""
    values = torch.cat([torch.full((30 + 5 * c,), c) for c in range(10)])
    return values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))]


def test_subset_is_class_balanced(labels):
    for k in (1, 5, 20, 30):
        indices = label_subset(labels, k)
        assert len(indices) == 10 * k
        assert torch.bincount(labels[indices], minlength=10).tolist() == [k] * 10
        assert len(set(indices.tolist())) == len(indices)


def test_subset_is_the_first_k_of_each_class_in_data_set_order(labels):
    indices = label_subset(labels, 7)
    assert indices.tolist() == sorted(indices.tolist())
    for c in range(10):
        first = [i for i, y in enumerate(labels.tolist()) if y == c][:7]
        assert [i for i in indices.tolist() if labels[i] == c] == first


def test_subset_is_deterministic(labels):
    assert torch.equal(label_subset(labels, 12), label_subset(labels.clone(), 12))


def test_subsets_are_nested(labels):
    sizes = [1, 5, 20, 30]
    subsets = [set(label_subset(labels, k).tolist()) for k in sizes]
    for small, large in zip(subsets, subsets[1:]):
        assert small < large


def test_too_many_per_class_is_a_rotnet_error(labels):
    assert len(label_subset(labels, 30)) == 300  # the smallest class has exactly 30
    with pytest.raises(RotnetError, match="31"):
        label_subset(labels, 31)


def test_index_files_are_identical_across_writes(tmp_path, labels):
    first = write_label_subset(tmp_path / "a", labels, 20, "toy")
    second = write_label_subset(tmp_path / "b", labels, 20, "toy")
    assert first == subset_path(tmp_path / "a", 20)
    assert first.read_bytes() == second.read_bytes()
    again = write_label_subset(tmp_path / "a", labels, 20, "toy")  # rewriting the same file
    assert again.read_bytes() == second.read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [first.name]  # no temp files
    record = json.loads(first.read_text())
    assert record["dataset"] == "toy" and record["per_class"] == 20
    assert record["train_images"] == len(labels)


def test_read_returns_the_written_subset(tmp_path, labels):
    path = write_label_subset(tmp_path, labels, 5, "toy")
    assert torch.equal(read_label_subset(path, labels), label_subset(labels, 5))


def test_reading_a_file_made_for_another_training_set_size_is_a_rotnet_error(tmp_path, labels):
    path = write_label_subset(tmp_path, labels, 5, "toy")
    with pytest.raises(RotnetError, match=str(len(labels))):
        read_label_subset(path, labels[:-1])
    with pytest.raises(RotnetError):
        read_label_subset(path, torch.cat([labels, labels]))


def test_missing_or_garbled_subset_files_are_rotnet_errors(tmp_path, labels):
    with pytest.raises(RotnetError, match="not found"):
        read_label_subset(tmp_path / "per_class_5.json", labels)
    for text in ("not json", json.dumps({"per_class": 5}), json.dumps([1, 2])):
        path = tmp_path / "bad.json"
        path.write_text(text)
        with pytest.raises(RotnetError):
            read_label_subset(path, labels)
    # indices outside the training set
    path = tmp_path / "outside.json"
    path.write_text(json.dumps({"train_images": len(labels), "indices": [0, len(labels)]}))
    with pytest.raises(RotnetError):
        read_label_subset(path, labels)


def test_write_subsets_for_the_profile(tmp_path, make_config):
    config = make_config({"data": {"train_size": 200}, "semisup": {"per_class": [3, 8]}})
    paths = figure5.write_subsets(config, tmp_path)
    assert [p.name for p in paths] == ["per_class_3.json", "per_class_8.json"]
    from rotnet.experiments import load_dataset

    train_labels = load_dataset(config).train_labels
    small, large = (read_label_subset(p, train_labels) for p in paths)
    assert torch.bincount(train_labels[large], minlength=10).tolist() == [8] * 10
    assert set(small.tolist()) < set(large.tolist())
    # The same call writes the same bytes.
    again = figure5.write_subsets(config, tmp_path / "again")
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_semisup_run_with_more_labels_than_a_class_has_fails_before_training(
        tmp_path, make_config, tracking_store):
    config = make_config({"data": {"train_size": 60}})  # about 6 images per class
    from rotnet.experiments import load_dataset

    labels = load_dataset(config).train_labels
    too_many = int(torch.bincount(labels).min()) + 1
    with pytest.raises(RotnetError, match="per class"):
        write_label_subset(tmp_path / "subsets", labels, too_many, "generated")
    assert not (tmp_path / "subsets").exists() or not any((tmp_path / "subsets").iterdir())
    with pytest.raises(RotnetError, match="not found"):
        figure5.semisup_run(config, "supervised", too_many, tmp_path / "subsets",
                            out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert tracking_store.runs() == []


def test_every_seed_trains_on_exactly_k_per_class_of_its_own_training_set(tmp_path):
    """The training set is data.seed's, not the training seed's: the one file per K that the
    subsets stage writes holds exactly K images per class of every seed's training set."""
    from helpers import tiny_config
    from rotnet.experiments import load_dataset

    config = tiny_config({"data": {"train_size": 200}, "semisup": {"per_class": [3, 7]}})
    figure5.write_subsets(config, tmp_path)
    for seed in (0, 1, 2):
        labels = load_dataset(config.with_seed(seed)).train_labels
        for k in (3, 7):
            indices = read_label_subset(subset_path(tmp_path, k), labels)
            assert torch.bincount(labels[indices]).tolist() == [k] * 10, (seed, k)


def test_a_subset_cut_from_another_training_set_is_refused(tmp_path, labels):
    path = write_label_subset(tmp_path, labels, 5, "generated")
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    with pytest.raises(RotnetError, match="cut from another training set"):
        read_label_subset(path, shuffled)
