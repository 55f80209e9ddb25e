"""Build ``asp_service/data/embedded/mnist_small.npz``, the offline MNIST subset the package ships.

The subset is class-balanced and deterministic: for each digit, ``--train-per-class`` images
(default 600) drawn without replacement from MNIST's 60,000 training images and
``--test-per-class`` (default 100) from its 10,000 test images, with ``numpy.random.default_rng``
seeded by ``--seed`` (default 0). The chosen indices are kept in MNIST's original order, and
stored next to the images (``train_idx``, ``test_idx``) so the subset can be traced back.

Usage::

    python -m benchmarks.make_embedded --data-dir /work/shared/data

MNIST (LeCun, Cortes and Burges) is licensed CC BY-SA 3.0; see the README next to the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from asp_service.data.sources import EMBEDDED_PATH, load_dataset


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices with exactly ``per_class`` samples of each label."""
    chosen = []
    for c in np.unique(labels):
        pool = np.flatnonzero(labels == c)
        if len(pool) < per_class:
            raise ValueError(f"class {c} has only {len(pool)} samples, need {per_class}")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="torchvision-layout root (or ASP_DATA_DIR)")
    p.add_argument("--train-per-class", type=int, default=600)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=EMBEDDED_PATH)
    a = p.parse_args(argv)

    ds = load_dataset("mnist", data_dir=a.data_dir)
    rng = np.random.default_rng(a.seed)
    tr = balanced_indices(ds.train_y.numpy(), a.train_per_class, rng)
    te = balanced_indices(ds.test_y.numpy(), a.test_per_class, rng)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        a.out,
        train_x=ds.train_x.numpy()[tr], train_y=ds.train_y.numpy()[tr].astype(np.uint8),
        test_x=ds.test_x.numpy()[te], test_y=ds.test_y.numpy()[te].astype(np.uint8),
        train_idx=tr.astype(np.int32), test_idx=te.astype(np.int32),
    )
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB): "
          f"{len(tr)} train + {len(te)} test images")


if __name__ == "__main__":
    main()
