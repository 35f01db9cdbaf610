"""The generated data set: deterministic, balanced, and a sensible task for rotations and classes."""

import pytest
import torch

from rotnet.data import load_data
from rotnet.generated import CLASSES, generate_objects


def object_maps(images: torch.Tensor) -> torch.Tensor:
    """Per image, how far each pixel is from the image's median colour: high on the object.

    Half the objects are darker than their background and half lighter, so plain
    mean images would wash out; these maps do not.
    """
    pixels = images.float() / 255
    median = pixels.flatten(2).median(dim=2).values[:, :, None, None]
    return (pixels - median).abs().mean(dim=1)


@pytest.fixture(scope="module")
def sample():
    return generate_objects(2000, seed=3)


def test_same_seed_gives_identical_images_and_other_seeds_differ():
    images, labels = generate_objects(300, seed=7)
    again_images, again_labels = generate_objects(300, seed=7)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)
    other_images, _ = generate_objects(300, seed=8)
    assert not torch.equal(images, other_images)


def test_shapes_and_dtypes():
    images, labels = generate_objects(25, seed=0)
    assert images.shape == (25, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.shape == (25,) and labels.dtype == torch.int64
    assert int(labels.min()) >= 0 and int(labels.max()) < len(CLASSES) == 10
    small, _ = generate_objects(4, seed=0, size=16)
    assert small.shape == (4, 3, 16, 16)


def test_labels_are_balanced():
    _, labels = generate_objects(1000, seed=1)
    assert torch.bincount(labels, minlength=10).tolist() == [100] * 10
    _, labels = generate_objects(25, seed=1)
    counts = torch.bincount(labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1


def test_images_use_the_full_range_and_vary():
    images, _ = generate_objects(200, seed=2)
    contrast = images.float().flatten(1).std(dim=1)
    assert float(contrast.min()) > 10  # every image shows an object against its background
    assert len({image.numpy().tobytes() for image in images}) == len(images)


def test_loader_splits_are_disjoint_and_normalised_from_train():
    data = load_data("generated", seed=5, train_size=500, test_size=200)
    assert data.train_images.shape == (500, 3, 32, 32) and data.test_images.shape == (200, 3, 32, 32)
    assert data.classes == CLASSES and data.channels == 3
    train = {image.numpy().tobytes() for image in data.train_images}
    assert not any(image.numpy().tobytes() in train for image in data.test_images)
    expected_mean = (data.train_images.double() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(torch.tensor(data.mean, dtype=torch.float64), expected_mean)
    assert all(0.1 < s < 0.5 for s in data.std)


def test_default_sizes():
    data = load_data("generated", seed=0)
    assert len(data.train_labels) == 5000 and len(data.test_labels) == 1000


def test_no_class_looks_the_same_turned_or_mirrored(sample):
    """Averaged over a class, the object map must change under a 90° or 180° turn, and
    under a vertical mirror (a horizontal-flip augmentation followed by a 180° turn).

    The cluttered backgrounds (texture, distractors at random angles and places) add a
    nearly even floor to every mean map that says nothing about the shape; it is taken
    off before comparing, so the change is measured relative to the object's own part."""
    images, labels = sample
    maps = object_maps(images)
    for label, name in enumerate(CLASSES):
        mean_map = maps[labels == label].mean(dim=0)
        mean_map = mean_map - mean_map.min()
        for changed in (mean_map.rot90(1), mean_map.rot90(2), mean_map.rot90(3), mean_map.flip(0)):
            relative_change = (mean_map - changed).abs().mean() / mean_map.mean()
            assert relative_change > 0.15, name


def test_classes_are_separable_by_their_mean_shapes(sample):
    images, labels = sample
    maps = object_maps(images)
    class_means = torch.stack([maps[labels == c].mean(dim=0) for c in range(len(CLASSES))])
    test_images, test_labels = generate_objects(500, seed=4)
    nearest = torch.cdist(object_maps(test_images).flatten(1), class_means.flatten(1)).argmin(dim=1)
    accuracy = (nearest == test_labels).float().mean().item()
    # Chance is 0.1. Objects move, scale and stretch a lot and sit on clutter, on purpose,
    # so this crude template rule is weak; a network should do far better.
    assert accuracy > 0.2
