"""Image data sets the scenarios are built from, held in memory as uint8 tensors.

Three sources:

- ``"mnist"`` and ``"fashion"``: the full MNIST / Fashion-MNIST (60,000 train + 10,000 test,
  28x28) read from a torchvision-layout folder ``<data_dir>/MNIST/raw`` or
  ``<data_dir>/FashionMNIST/raw`` (plain or ``.gz`` IDX files). ``data_dir`` comes from the
  argument, else the ``ASP_DATA_DIR`` environment variable. Nothing is ever written to
  ``data_dir`` unless ``download=True`` is asked for, in which case torchvision downloads the
  files there.
- ``"embedded"``: a 6,000 + 1,000 balanced subset of MNIST shipped inside the package
  (``asp_service/data/embedded/mnist_small.npz``), so that tests and the demo run offline.

Images stay uint8 (N, 28, 28) and labels int64 (N,); conversion to float happens per batch in
:mod:`asp_service.data.stream`. Loads are cached per process.

Example
-------
>>> ds = load_dataset("embedded")
>>> ds.train_x.shape, ds.train_x.dtype, ds.test_y.dtype
(torch.Size([6000, 28, 28]), torch.uint8, torch.int64)
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .idx import read_idx

__all__ = ["ImageDataset", "load_dataset", "resolve_data_dir", "DATASETS", "EMBEDDED_PATH"]

#: Names accepted by :func:`load_dataset`.
DATASETS = ("mnist", "fashion", "embedded")

#: Path of the shipped offline subset of MNIST.
EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "mnist_small.npz"

_FOLDERS = {"mnist": "MNIST", "fashion": "FashionMNIST"}
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ImageDataset:
    """A train/test split of 28x28 grey images with integer labels.

    Attributes
    ----------
    name : str
        Source name (``"mnist"``, ``"fashion"`` or ``"embedded"``).
    train_x, test_x : torch.Tensor
        uint8 images of shape (N, 28, 28). Treat as read-only: they are shared via the cache.
    train_y, test_y : torch.Tensor
        int64 labels of shape (N,).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def n_classes(self) -> int:
        """Number of distinct labels (10 for all shipped sources)."""
        return int(torch.cat([self.train_y, self.test_y]).max().item()) + 1


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data folder: the argument if given, else ``$ASP_DATA_DIR``.

    Raises
    ------
    ValueError
        If neither is set.
    """
    if data_dir is None:
        data_dir = os.environ.get("ASP_DATA_DIR") or None
    if data_dir is None:
        raise ValueError(
            "no data directory: pass data_dir (--data-dir) or set ASP_DATA_DIR, "
            "or use dataset='embedded'")
    return Path(data_dir).expanduser().resolve()


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _download(name: str, root: Path) -> None:
    """Fetch the raw files with torchvision (only ever called when the user asked to)."""
    import torchvision  # imported lazily: only needed to download

    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    for train in (True, False):
        cls(root=str(root), train=train, download=True)


@functools.lru_cache(maxsize=8)
def _load_folder(name: str, root: Path, download: bool) -> ImageDataset:
    raw = root / _FOLDERS[name] / "raw"
    paths = {k: _find(raw, stem) for k, stem in _FILES.items()}
    if any(p is None for p in paths.values()):
        if not download:
            missing = [_FILES[k] for k, p in paths.items() if p is None]
            raise FileNotFoundError(
                f"{name}: missing {missing} under {raw}; pass download=True (--download) "
                "to fetch them with torchvision")
        _download(name, root)
        paths = {k: _find(raw, stem) for k, stem in _FILES.items()}
        if any(p is None for p in paths.values()):
            raise FileNotFoundError(f"{name}: download finished but files are missing in {raw}")
    arrays = {k: read_idx(p) for k, p in paths.items()}
    return ImageDataset(
        name=name,
        train_x=torch.from_numpy(arrays["train_x"]),
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"]),
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
    )


@functools.lru_cache(maxsize=1)
def _load_embedded() -> ImageDataset:
    if not EMBEDDED_PATH.is_file():
        raise FileNotFoundError(
            f"embedded data set missing at {EMBEDDED_PATH}; rebuild with "
            "`python -m benchmarks.make_embedded --data-dir <MNIST root>`")
    with np.load(EMBEDDED_PATH) as z:
        return ImageDataset(
            name="embedded",
            train_x=torch.from_numpy(np.ascontiguousarray(z["train_x"], dtype=np.uint8)),
            train_y=torch.from_numpy(z["train_y"].astype(np.int64)),
            test_x=torch.from_numpy(np.ascontiguousarray(z["test_x"], dtype=np.uint8)),
            test_y=torch.from_numpy(z["test_y"].astype(np.int64)),
        )


def load_dataset(name: str = "embedded", *, data_dir: str | os.PathLike | None = None,
                 download: bool = False) -> ImageDataset:
    """Load a data set into memory (cached per process).

    Parameters
    ----------
    name : {"mnist", "fashion", "embedded"}
        Which data set. ``"embedded"`` ignores ``data_dir`` and ``download``.
    data_dir : path, optional
        torchvision-layout root (containing ``MNIST/raw`` or ``FashionMNIST/raw``). Defaults to
        ``$ASP_DATA_DIR``.
    download : bool
        Let torchvision download missing files into ``data_dir``. Off by default: nothing is
        written unless asked.

    Raises
    ------
    ValueError
        Unknown name, or no data directory for a non-embedded set.
    FileNotFoundError
        Files missing and ``download`` is False.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
    if name == "embedded":
        return _load_embedded()
    return _load_folder(name, resolve_data_dir(data_dir), bool(download))
