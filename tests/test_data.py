"""Loading CIFAR-10, Fashion-MNIST and image folders from files written in their real formats."""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import CIFAR10

from rotnet.data import CIFAR_MEAN, CIFAR_STD, DATASETS, load_data
from rotnet.errors import RotnetError

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


# --- CIFAR-10 -----------------------------------------------------------------------

class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 strings, as the real CIFAR-10 files (pickled by Python 2) hold
    them; torchvision reads them back as str through pickle's encoding="latin1"."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes_as_python2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_as_python2_str


def write_python2_pickle(path, obj):
    with open(path, "wb") as file:
        Python2Pickler(file, protocol=2).dump(obj)


def md5_of(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def register_checksums(monkeypatch, folder):
    """Make torchvision expect our files' md5s: its own checksum code still runs on them."""
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5_of(folder / n)] for n in CIFAR_BATCHES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5_of(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                          "md5": md5_of(folder / "batches.meta")})


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """A tiny CIFAR-10 in its on-disk format: 5 train batches of 2 images, a test batch of 3.

    Returns the root and the images (N×3×32×32) and labels each split should load as.
    """
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    expected = {"train": ([], []), "test": ([], [])}
    for number, name in enumerate(CIFAR_BATCHES):
        count = 3 if name == "test_batch" else 2
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        labels = [(2 * number + i) % 10 for i in range(count)]
        # Each row is the R plane, then G, then B, each row-major.
        write_python2_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels,
                                             b"data": images.reshape(count, 3072),
                                             b"filenames": [b"x.png"] * count})
        split = "test" if name == "test_batch" else "train"
        expected[split][0].append(images)
        expected[split][1].extend(labels)
    write_python2_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR_NAMES],
                                                   b"num_cases_per_batch": 2, b"num_vis": 3072})
    register_checksums(monkeypatch, folder)
    return tmp_path, {split: (torch.from_numpy(np.concatenate(images)), torch.tensor(labels))
                      for split, (images, labels) in expected.items()}


def test_cifar_pixels_land_in_their_channel_and_place(cifar_root):
    root, expected = cifar_root
    data = load_data("cifar10", str(root), download=False)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.train_images.shape == (10, 3, 32, 32) and data.test_images.shape == (3, 3, 32, 32)
    assert torch.equal(data.train_images, expected["train"][0])
    assert torch.equal(data.train_labels, expected["train"][1])
    assert torch.equal(data.test_images, expected["test"][0])
    assert torch.equal(data.test_labels, expected["test"][1])
    # Spot checks against the raw rows: byte 1 is R at (row 0, col 1); byte 1024 + 32 is G at (1, 0).
    raw = pickle.load(open(root / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")["data"]
    assert int(data.train_images[0, 0, 0, 1]) == raw[0, 1]
    assert int(data.train_images[1, 1, 1, 0]) == raw[1, 1024 + 32]
    assert int(data.train_images[1, 2, 31, 31]) == raw[1, 3071]
    assert data.classes == tuple(CIFAR_NAMES)
    assert data.mean == CIFAR_MEAN and data.std == CIFAR_STD


def test_cifar_subset_is_balanced_and_deterministic(cifar_root):
    root, _ = cifar_root
    first = load_data("cifar10", str(root), seed=1, train_size=5, test_size=2, download=False)
    again = load_data("cifar10", str(root), seed=1, train_size=5, test_size=2, download=False)
    assert len(first.train_labels) == 5 and len(first.test_labels) == 2
    assert len(set(first.train_labels.tolist())) == 5  # every train image has its own class here
    assert torch.equal(first.train_images, again.train_images)


def test_cifar_missing_folder_without_download(tmp_path):
    with pytest.raises(RotnetError, match="CIFAR-10 not found under .*cifar-10-batches-py"):
        load_data("cifar10", str(tmp_path), download=False)


def test_cifar_truncated_file_fails_its_checksum(cifar_root):
    root, _ = cifar_root
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RotnetError, match="corrupt CIFAR-10 file .*data_batch_3 .*md5"):
        load_data("cifar10", str(root), download=False)


def test_cifar_missing_file_is_named(cifar_root):
    root, _ = cifar_root
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(RotnetError, match="test_batch is missing"):
        load_data("cifar10", str(root), download=False)


def test_cifar_file_that_does_not_unpickle(cifar_root, monkeypatch):
    root, _ = cifar_root
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(b"this is not a pickle")
    register_checksums(monkeypatch, folder)  # the checksum passes; unpickling must still be caught
    with pytest.raises(RotnetError, match="corrupt CIFAR-10 data"):
        load_data("cifar10", str(root), download=False)


# --- Fashion-MNIST ------------------------------------------------------------------

def write_idx(path, magic, array):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_fashion(folder, train_count=20, test_count=4):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    splits = {}
    for split, prefix, count in (("train", "train", train_count), ("test", "t10k", test_count)):
        images = rng.integers(1, 256, (count, 28, 28), dtype=np.uint8)  # no zeros: the border shows
        labels = np.arange(count) % 4
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051, images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049, labels)
        splits[split] = images, labels
    return splits


def test_fashion_mnist_is_padded_to_32_with_one_channel(tmp_path):
    expected = write_fashion(tmp_path / "FashionMNIST" / "raw")
    data = load_data("fashion-mnist", str(tmp_path))
    assert data.train_images.shape == (20, 1, 32, 32) and data.test_images.shape == (4, 1, 32, 32)
    assert data.channels == 1 and data.num_classes == 10 and data.classes[9] == "Ankle boot"
    inner = data.train_images[:, 0, 2:30, 2:30]
    assert torch.equal(inner, torch.from_numpy(expected["train"][0]))
    border = data.train_images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.max()) == 0
    assert data.test_labels.tolist() == expected["test"][1].tolist()
    assert len(data.mean) == len(data.std) == 1
    assert data.mean[0] == pytest.approx(data.train_images.double().mean().item() / 255)


def test_balanced_subset_keeps_original_order(tmp_path):
    write_fashion(tmp_path)
    data = load_data("fashion-mnist", str(tmp_path), seed=3, train_size=8)
    assert torch.bincount(data.train_labels).tolist() == [2, 2, 2, 2]
    full = load_data("fashion-mnist", str(tmp_path))
    positions = [next(i for i, image in enumerate(full.train_images) if torch.equal(image, chosen))
                 for chosen in data.train_images]
    assert positions == sorted(positions)
    with pytest.raises(RotnetError, match="only 20"):
        load_data("fashion-mnist", str(tmp_path), train_size=21)


def test_fashion_mnist_bad_magic_number(tmp_path):
    write_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2051, np.zeros(4))
    with pytest.raises(RotnetError, match="t10k-labels-idx1-ubyte.gz has IDX magic number 2051"):
        load_data("fashion-mnist", str(tmp_path))


def test_fashion_mnist_wrong_size_and_missing_files(tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as file:
        file.write(struct.pack(">IIII", 2051, 20, 28, 28) + bytes(100))
    with pytest.raises(RotnetError, match="train-images-idx3-ubyte.gz holds 100 bytes"):
        load_data("fashion-mnist", str(tmp_path))
    with pytest.raises(RotnetError, match="Fashion-MNIST files .* not found"):
        load_data("fashion-mnist", str(tmp_path / "nowhere"))


# --- Image folders ------------------------------------------------------------------

def write_class_folders(root, per_class=5):
    """Solid-colour PNGs whose red value says which image it is."""
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            colour = (10 * (label * per_class + i), 100, 200)
            Image.new("RGB", (40, 30), colour).save(root / name / f"{i}.png")


def test_image_folder_split_is_deterministic_by_seed(tmp_path):
    write_class_folders(tmp_path)
    data = load_data("imagefolder", str(tmp_path), seed=0)
    assert data.classes == ("cat", "dog")
    assert data.train_images.shape == (8, 3, 32, 32) and data.test_images.shape == (2, 3, 32, 32)
    assert data.test_labels.tolist() == [0, 1]  # one held out per class
    # The red value identifies the image: its class must match its label.
    assert ((data.train_images[:, 0, 0, 0] // 50) == data.train_labels).all()
    again = load_data("imagefolder", str(tmp_path), seed=0)
    assert torch.equal(data.test_images, again.test_images)
    held_out = {tuple(load_data("imagefolder", str(tmp_path), seed=s).test_images[:, 0, 0, 0].tolist())
                for s in range(6)}
    assert len(held_out) > 1


def test_image_folder_with_train_and_test_and_resizing(tmp_path):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            # Wide image, left half red, right half blue: the centre crop keeps both halves.
            image = Image.new("RGB", (64, 48), (0, 0, 255))
            image.paste((255, 0, 0), (0, 0, 32, 48))
            image.save(tmp_path / split / name / "wide.png")
        Image.new("L", (20, 20), 77).save(tmp_path / split / "b" / "gray.png")
    data = load_data("imagefolder", str(tmp_path))
    assert len(data.train_labels) == 3 and len(data.test_labels) == 3
    assert data.train_labels.tolist() == [0, 1, 1]
    wide = data.train_images[0]
    assert wide[:, 16, 2].tolist() == [255, 0, 0] and wide[:, 16, 29].tolist() == [0, 0, 255]
    assert torch.equal(data.train_images[2], wide)  # b/gray.png sorts before b/wide.png
    assert (data.train_images[1] == 77).all()  # grayscale becomes RGB, small images grow to 32


def test_image_folder_problems(tmp_path):
    with pytest.raises(RotnetError, match="does not exist"):
        load_data("imagefolder", str(tmp_path / "missing"))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(RotnetError, match="no images found"):
        load_data("imagefolder", str(tmp_path))
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(RotnetError, match="cannot read image .*broken.png"):
        load_data("imagefolder", str(tmp_path))


# --- Choosing a data set ------------------------------------------------------------

def test_unknown_name_lists_the_choices():
    with pytest.raises(RotnetError, match="unknown data set 'mnist'.*" + ", ".join(DATASETS)):
        load_data("mnist")


@pytest.mark.parametrize("sizes", [{"train_size": 0}, {"test_size": -1}])
def test_sizes_must_be_positive(sizes):
    with pytest.raises(RotnetError, match="must be at least 1"):
        load_data("generated", **sizes)


def test_seed_must_be_non_negative():
    with pytest.raises(RotnetError, match="seed must be non-negative"):
        load_data("generated", seed=-1)


def test_the_generated_set_is_kept_once_drawn_and_redrawn_when_damaged(tmp_path):
    from rotnet.data import generated_images
    from rotnet.generated import generate_objects

    drawn = generate_objects(40, 3)
    first = generated_images(tmp_path, 40, 3)
    (kept,) = (tmp_path / "generated").iterdir()
    assert all(torch.equal(a, b) for a, b in zip(first, drawn))
    kept.write_bytes(b"not an npz")  # damaged: drawn again, and the file rewritten
    again = generated_images(tmp_path, 40, 3)
    assert all(torch.equal(a, b) for a, b in zip(again, drawn))
    assert kept.read_bytes()[:2] == b"PK"
    other = generated_images(tmp_path, 40, 4)  # another seed: its own file
    assert not torch.equal(other[0], drawn[0]) and len(list((tmp_path / "generated").iterdir())) == 2


def test_the_generated_set_is_drawn_where_its_root_cannot_be_written(tmp_path):
    from rotnet.data import generated_images
    from rotnet.generated import generate_objects

    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the folder would go: nothing can be kept
    images, labels = generated_images(blocker, 20, 1)
    assert torch.equal(images, generate_objects(20, 1)[0])
