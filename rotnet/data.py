"""Image data sets as uint8 tensors: CIFAR-10, Fashion-MNIST, an ImageFolder, a generated set.

Every loader returns an `ImageData`: the whole train and test splits as uint8
N×C×H×W tensors (so the training loop can put them on the device once and do all
augmentation batched there), int64 labels, and the per-channel mean/std used to
normalise them.

Files that are missing or damaged raise `RotnetError` with one line naming the path,
since that is bad input a user can fix, not a bug.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rotnet.config import DATASETS
from rotnet import generated
from rotnet.errors import RotnetError
from rotnet.files import atomic_write
from rotnet.generated import CLASSES as GENERATED_CLASSES
from rotnet.generated import generate_objects


# The paper's normalisation for CIFAR-10, in [0, 1] units.
CIFAR_MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
CIFAR_STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

GENERATED_TRAIN_SIZE = 5000
GENERATED_TEST_SIZE = 1000
GENERATED_TEST_SEED_OFFSET = 1_000_003  # the test split's own seed, so the splits never share an image

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049

IMAGE_SIZE = 32  # ImageFolder images are brought to CIFAR's size, so the NIN's pooling fits
FOLDER_TEST_FRACTION = 0.1  # held out per class when a folder has no train/test split


@dataclass(frozen=True)
class ImageData:
    name: str
    train_images: torch.Tensor  # uint8, N×C×H×W
    train_labels: torch.Tensor  # int64, N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]


def load_data(name: str, root: str = "data", *, seed: int = 0, train_size: int | None = None,
              test_size: int | None = None, download: bool = True) -> ImageData:
    """The data set `name`, optionally cut to `train_size`/`test_size` images.

    The cut is deterministic by `seed` and spread evenly over the classes.
    `root` is where the files are; only CIFAR-10 downloads. The generated set is drawn once
    and kept under `root/generated/` (`generated_images`), so the stages that follow read it.
    """
    if name not in DATASETS:
        raise RotnetError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    for option, size in (("train_size", train_size), ("test_size", test_size)):
        if size is not None and size < 1:
            raise RotnetError(f"{option} must be at least 1, got {size}")
    if seed < 0:  # numpy's generators take only non-negative seeds
        raise RotnetError(f"seed must be non-negative, got {seed}")

    if name == "generated":
        # Drawn at the requested size, so there is nothing to cut afterwards.
        train = generated_images(Path(root), train_size or GENERATED_TRAIN_SIZE, seed)
        test = generated_images(Path(root), test_size or GENERATED_TEST_SIZE,
                                seed + GENERATED_TEST_SEED_OFFSET)
        return _image_data(name, train, test, GENERATED_CLASSES)
    if name == "cifar10":
        train, test, classes = _load_cifar10(Path(root), download)
    elif name == "fashion-mnist":
        train, test, classes = _load_fashion_mnist(Path(root))
    else:
        train, test, classes = _load_image_folder(Path(root), seed)

    for split, (_, labels) in (("training", train), ("test", test)):
        if len(labels) == 0:  # a mean over no images, a division by zero after an epoch
            raise RotnetError(f"the {name} data under {root} has no {split} images")
    train = _balanced_subset(*train, train_size, np.random.default_rng([seed, 0]), f"{name} train")
    test = _balanced_subset(*test, test_size, np.random.default_rng([seed, 1]), f"{name} test")
    if name == "cifar10":
        return ImageData(name, *train, *test, classes, CIFAR_MEAN, CIFAR_STD)
    return _image_data(name, train, test, classes)


@functools.lru_cache(maxsize=1)
def _generator_digest() -> str:
    """Of the generator's source: a kept set from other code is never read back."""
    return hashlib.sha256(Path(generated.__file__).read_bytes()).hexdigest()[:16]


def generated_images(root: Path, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`generate_objects(n, seed)`, kept in `root/generated/` as .npz (no pickle): drawing
    1800 images takes ~0.9 s, reading them back ~10 ms, and every stage of the quick
    profile needs them. A file that cannot be read or written is drawn afresh."""
    path = root / "generated" / f"n{n}-seed{seed}-{_generator_digest()}.npz"
    try:
        with np.load(path, allow_pickle=False) as kept:
            images, labels = torch.from_numpy(kept["images"]), torch.from_numpy(kept["labels"])
        if images.dtype == torch.uint8 and labels.dtype == torch.int64 and \
                images.shape[0] == labels.shape[0] == n:
            return images, labels
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        pass  # missing or damaged: draw it
    images, labels = generate_objects(n, seed)
    try:
        atomic_write(path, lambda tmp: _write_npz(tmp, images=images.numpy(), labels=labels.numpy()))
    except OSError:
        pass  # a read-only root: draw it every time
    return images, labels


def _write_npz(path, **arrays) -> None:
    with open(path, "wb") as out:  # a file, not a name: np.savez would append ".npz"
        np.savez(out, **arrays)


def _image_data(name, train, test, classes) -> ImageData:
    """An ImageData normalised by its train split's per-channel mean and std."""
    images = train[0]
    mean, std = [], []
    for channel in range(images.shape[1]):
        values = images[:, channel].double() / 255.0
        mean.append(values.mean().item())
        std.append(max(values.std().item(), 1e-3))  # a flat channel must not divide by zero
    return ImageData(name, *train, *test, tuple(classes), tuple(mean), tuple(std))


def _balanced_subset(images, labels, size, rng, what):
    """The first `size` images of a seeded shuffle taken class by class in turn, in original order."""
    if size is None:
        return images, labels
    if size > len(labels):
        raise RotnetError(f"asked for {size} {what} images but there are only {len(labels)}")
    order = rng.permutation(len(labels))
    shuffled = labels.numpy()[order]
    # Rank of each image among the shuffled images of its class; sorting by rank
    # first interleaves the classes, so any prefix is as balanced as it can be.
    by_class = np.argsort(shuffled, kind="stable")
    class_starts = np.searchsorted(shuffled[by_class], shuffled[by_class])
    rank = np.empty(len(labels), dtype=np.int64)
    rank[by_class] = np.arange(len(labels)) - class_starts
    chosen = np.sort(order[np.lexsort((shuffled, rank))[:size]])
    index = torch.from_numpy(chosen)
    return images[index], labels[index]


def _load_cifar10(root: Path, download: bool):
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    if not download and not folder.is_dir():
        raise RotnetError(f"CIFAR-10 not found under {folder}; run with download enabled")
    try:
        # torchvision checks every file's md5 before it unpickles anything.
        splits = [CIFAR10(str(root), train=train, download=download and train) for train in (True, False)]
    except RuntimeError:
        raise RotnetError(_cifar_problem(folder, download)) from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError) as error:
        raise RotnetError(f"corrupt CIFAR-10 data under {folder}: {error}") from None
    except OSError as error:  # no network, disk full...: the download failed
        raise RotnetError(f"could not download CIFAR-10 into {root}: {error}") from None

    def as_tensors(split):
        images = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))
        return images, torch.tensor(split.targets, dtype=torch.int64)

    return as_tensors(splits[0]), as_tensors(splits[1]), tuple(splits[0].classes)


def _cifar_problem(folder: Path, download: bool) -> str:
    """One line saying which CIFAR-10 file is missing or fails its checksum."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    expected = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    remedy = "delete it and run with download enabled" if not download else "delete it and download again"
    for filename, md5 in expected:
        path = folder / filename
        if not path.is_file():
            return f"CIFAR-10 file {path} is missing; run with download enabled"
        if not check_integrity(str(path), md5):
            return f"corrupt CIFAR-10 file {path} (md5 checksum mismatch); {remedy}"
    return f"CIFAR-10 under {folder} could not be verified (the downloaded archive failed its checksum?)"


def _load_fashion_mnist(root: Path):
    candidates = (root, root / "FashionMNIST" / "raw", root / "fashion-mnist")
    all_files = [name for pair in FASHION_FILES.values() for name in pair]
    folder = next((c for c in candidates if all((c / f).is_file() for f in all_files)), None)
    if folder is None:
        raise RotnetError(f"Fashion-MNIST files ({', '.join(all_files)}) not found in "
                          f"{' or '.join(str(c) for c in candidates)}")
    splits = []
    for image_file, label_file in FASHION_FILES.values():
        images = _read_idx(folder / image_file, IDX_IMAGES_MAGIC)
        labels = _read_idx(folder / label_file, IDX_LABELS_MAGIC)
        if len(images) != len(labels):
            raise RotnetError(f"{folder / image_file} has {len(images)} images but "
                              f"{folder / label_file} has {len(labels)} labels")
        if labels.size and labels.max() >= len(FASHION_CLASSES):
            raise RotnetError(f"{folder / label_file} has a label {labels.max()} outside 0..9")
        # 28×28 → 32×32 with a zero border, one channel: the NIN's pooling then sees CIFAR's sizes.
        padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None]
        splits.append((torch.from_numpy(padded), torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1], FASHION_CLASSES


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped IDX file of unsigned bytes: images (magic 2051, n×rows×cols) or labels (2049, n)."""
    try:
        with gzip.open(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:
        raise RotnetError(f"cannot read {path}: {error}") from None
    ndim = 3 if magic == IDX_IMAGES_MAGIC else 1
    header_bytes = 4 * (1 + ndim)
    if len(raw) < header_bytes:
        raise RotnetError(f"{path} is too short to be an IDX file")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    if header[0] != magic:
        raise RotnetError(f"{path} has IDX magic number {header[0]}, expected {magic}")
    shape = tuple(int(d) for d in header[1:])
    if len(raw) - header_bytes != int(np.prod(shape)):
        raise RotnetError(f"{path} holds {len(raw) - header_bytes} bytes of data, expected {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape).copy()


def _load_image_folder(root: Path, seed: int):
    if not root.is_dir():
        raise RotnetError(f"image folder {root} does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_images, train_labels, classes = _read_class_folders(root / "train")
        test_images, test_labels, test_classes = _read_class_folders(root / "test")
        if test_classes != classes:
            raise RotnetError(f"{root / 'test'} has classes {test_classes}, but {root / 'train'} has {classes}")
        return (train_images, train_labels), (test_images, test_labels), classes

    images, labels, classes = _read_class_folders(root)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), dtype=bool)
    for label in range(len(classes)):
        members = rng.permutation(np.flatnonzero(labels.numpy() == label))
        # At least one test image per class, but a class of one image keeps it for training.
        held_out = max(1, round(len(members) * FOLDER_TEST_FRACTION)) if len(members) > 1 else 0
        is_test[members[:held_out]] = True
    if not is_test.any():  # an empty test split would divide by zero after the first epoch
        raise RotnetError(f"image folder {root} leaves no test images: every class has one image; "
                          "add images or give it train/ and test/ folders")
    test = torch.from_numpy(is_test)
    return (images[~test], labels[~test]), (images[test], labels[test]), classes


def _read_class_folders(folder: Path):
    """Every image under folder/<class>/, as RGB uint8 N×3×32×32, and its class index."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS
    from torchvision.transforms import functional as F

    classes = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir()))
    files = [(path, label) for label, name in enumerate(classes)
             for path in sorted((folder / name).rglob("*"))
             if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS]
    if not files:
        raise RotnetError(f"no images found in class folders under {folder} "
                          f"(expected {folder}/<class>/<image>.png etc.)")
    empty = sorted(set(classes) - {classes[label] for _, label in files})
    if empty:  # a class no image teaches, whose test accuracy would be 0/0
        raise RotnetError(f"class folder {folder / empty[0]} has no images; add some or remove it")
    images = torch.empty((len(files), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except Image.DecompressionBombError:
            raise RotnetError(f"image {path} is too large to decode safely (over "
                              f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels)") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            raise RotnetError(f"cannot read image {path}: {error}") from None
        # Shorter side to 32, then the central 32×32: no distortion of the aspect ratio.
        image = F.center_crop(F.resize(image, IMAGE_SIZE), [IMAGE_SIZE, IMAGE_SIZE])
        images[i] = F.pil_to_tensor(image)
    labels = torch.tensor([label for _, label in files], dtype=torch.int64)
    return images, labels, classes


def validation_split(data: ImageData, fraction: float = 0.1, seed: int = 0) -> ImageData:
    """A class-stratified validation split carved out of the TRAINING set, for tuning.

    Returns an ImageData whose train split is the rest of the training set and whose
    "test" split is the held-out validation part, so the test set is never looked at.
    Each class holds out round(n × fraction) images (at least one, unless it has only
    one image); the choice is deterministic by `seed`. Normalisation is kept as is.
    """
    if not 0 < fraction < 1:
        raise RotnetError(f"the validation fraction must be between 0 and 1 (got {fraction})")
    if seed < 0:
        raise RotnetError(f"seed must be non-negative, got {seed}")
    labels = data.train_labels.numpy()
    rng = np.random.default_rng([seed, 2])
    is_val = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out = max(1, round(len(members) * fraction)) if len(members) > 1 else 0
        is_val[members[:held_out]] = True
    if is_val.all() or not is_val.any():
        raise RotnetError(f"cannot carve a {fraction:.0%} validation split out of "
                          f"{len(labels)} training images")
    val = torch.from_numpy(is_val)
    return ImageData(f"{data.name}-val", data.train_images[~val], data.train_labels[~val],
                     data.train_images[val], data.train_labels[val], data.classes, data.mean,
                     data.std)


def tensors_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes, in order: what identifies a data set's images."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_set_digest(data: ImageData) -> str:
    """Two runs are compared image by image only when this digest of the test images and
    labels they were scored on is equal."""
    return tensors_digest(data.test_images, data.test_labels)


def image_files(folder: Path) -> list[Path]:
    """The image files under `folder` (any depth), by path."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return [path for path in sorted(Path(folder).rglob("*"))
            if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS]


def read_images(paths: list[Path], channels: int = 3) -> torch.Tensor:
    """Image files as uint8 N×C×32×32 (C = 3: RGB, 1: grey), each brought to size as an
    image folder's are: the shorter side scaled to 32, then the central 32×32."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as F

    images = torch.empty((len(paths), channels, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image = image.convert("RGB" if channels == 3 else "L")
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError,
                SyntaxError) as error:
            raise RotnetError(f"cannot read image {path}: {error}") from None
        image = F.center_crop(F.resize(image, IMAGE_SIZE), [IMAGE_SIZE, IMAGE_SIZE])
        images[i] = F.pil_to_tensor(image)
    return images
