"""Data of the auxiliary-logit experiment: scikit-learn's bundled 8x8 digits, MNIST IDX files, noise inputs.

Pixels are scaled to [-1, 1] (digits: x/8 - 1; MNIST: x/127.5 - 1) so uniform noise on [-1, 1] lives in the
same box as the images.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Dataset:
    """Float32 inputs in [-1, 1] (rows are flattened images) and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return 10


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (the MNIST format; ``.gz`` is decompressed). Malformed files raise ``UserError``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
        if p.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read IDX file {p}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{p}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES or ndim == 0:
        raise UserError(f"{p}: not an IDX file (type code 0x{code:02x}, {ndim} dimensions)")
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{p}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[code])
    need = int(np.prod(shape)) * dtype.itemsize
    body = raw[4 + 4 * ndim :]
    if len(body) != need:
        raise UserError(f"{p}: IDX header says shape {shape} ({need} bytes of data) but the file has {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise UserError(f"--mnist-dir {directory}: missing {stem} (or {stem}.gz); expected the 4 standard MNIST IDX files")


def load_mnist(directory: str | Path, max_train: int | None = None) -> Dataset:
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"--mnist-dir {d}: not a directory")
    arrays = {k: read_idx(_find(d, stem)) for k, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise UserError(f"--mnist-dir {d}: {split} images {x.shape} and labels {y.shape} do not match")
        if y.size and (y.min() < 0 or y.max() > 9):
            raise UserError(f"--mnist-dir {d}: {split} labels outside 0..9")

    def prep(x: np.ndarray) -> np.ndarray:
        return (x.reshape(x.shape[0], -1).astype(np.float32) / 127.5 - 1.0).astype(np.float32)

    xtr, ytr = prep(arrays["train_x"]), arrays["train_y"].astype(np.int64)
    if max_train is not None:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    return Dataset("mnist", xtr, ytr, prep(arrays["test_x"]), arrays["test_y"].astype(np.int64))


def load_digits(test_fraction: float = 0.3, split_seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), stratified train/test split."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    x, y = sk_load(return_X_y=True)
    x = (x / 8.0 - 1.0).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y.astype(np.int64), test_size=test_fraction, random_state=split_seed,
                                          stratify=y)
    return Dataset("digits", xtr, ytr, xte, yte)


def make_noise(kind: str, n: int, n_features: int, seed: int, images: np.ndarray | None = None) -> np.ndarray:
    """Student inputs: ``uniform`` on [-1, 1], ``gaussian`` N(0, 1), or ``images`` (real training images,
    sampled with replacement; their labels are never used)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(-1.0, 1.0, size=(n, n_features)).astype(np.float32)
    if kind == "gaussian":
        return rng.standard_normal(size=(n, n_features)).astype(np.float32)
    if kind == "images":
        if images is None or len(images) == 0:
            raise UserError("student.noise = 'images' needs training images")
        return images[rng.integers(0, len(images), size=n)].astype(np.float32)
    raise UserError(f"unknown noise kind {kind!r}: expected uniform, gaussian or images")
