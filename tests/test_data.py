"""Behaviour of the data package: IDX reading, loaders, scenarios and streams.

Everything here is offline: the embedded subset or synthetic IDX files in a temporary folder.
Nothing reads the shared data folder.
"""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import torch

from asp_service.data import (CONSECUTIVE_PAIRS, INTERLEAVED_PAIRS, iterate, iterate_task,
                              load_dataset, make_scenario, permuted_scenario, read_idx,
                              resolve_data_dir, split_scenario, to_float)
from asp_service.data.idx import read_idx_bytes
from asp_service.data.sources import _load_folder


@pytest.fixture(autouse=True)
def _no_shared_data(monkeypatch):
    """Tests never see a data directory unless they make one."""
    monkeypatch.delenv("ASP_DATA_DIR", raising=False)


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_folder(root, folder="MNIST", n_train=40, n_test=20, gz=False, seed=0):
    """A torchvision-layout folder of random 28x28 images with labels 0..9."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        blob = _idx_bytes(arr)
        if gz:
            (raw / (name + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (raw / name).write_bytes(blob)
    return arrays


# ------------------------------------------------------------------------------ IDX
def test_idx_round_trip_plain_and_gzip(tmp_path):
    """When an IDX file is written plain or gzipped, reading it gives the same array back."""
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(arr))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx_bytes(arr)))
    for name in ("a", "a.gz"):
        out = read_idx(tmp_path / name)
        assert out.shape == (2, 3, 4) and out.dtype == np.uint8
        np.testing.assert_array_equal(out, arr)
        out[0, 0, 0] = 99  # caller owns a writable copy


@pytest.mark.parametrize("blob", [b"", b"\x01\x00\x08\x01", bytes([0, 0, 0x42, 1, 0, 0, 0, 0]),
                                  bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2])])
def test_idx_rejects_malformed(blob):
    """When the header is wrong or the payload is short, reading raises ValueError."""
    with pytest.raises(ValueError):
        read_idx_bytes(blob)


# ------------------------------------------------------------------------------ sources
def test_embedded_loads_offline_balanced_uint8():
    """The shipped subset loads with no data directory: 6000 + 1000 images, 10 balanced classes."""
    ds = load_dataset("embedded")
    assert ds.train_x.shape == (6000, 28, 28) and ds.test_x.shape == (1000, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.bincount().tolist() == [600] * 10
    assert ds.test_y.bincount().tolist() == [100] * 10
    assert ds.n_classes == 10
    assert load_dataset("embedded") is ds  # cached per process


@pytest.mark.parametrize("gz", [False, True])
def test_folder_loader_reads_raw_without_writing(tmp_path, gz):
    """When raw IDX files exist, they are read and nothing is written to the data folder."""
    arrays = _write_folder(tmp_path, folder="FashionMNIST", gz=gz)
    before = sorted(p for p in tmp_path.rglob("*"))
    ds = _load_folder("fashion", tmp_path.resolve(), False)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    np.testing.assert_array_equal(ds.train_x.numpy(), arrays["train-images-idx3-ubyte"])
    assert ds.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_data_dir_from_environment(tmp_path, monkeypatch):
    """When no data_dir is given, ASP_DATA_DIR is used; with neither, ValueError."""
    with pytest.raises(ValueError):
        resolve_data_dir(None)
    _write_folder(tmp_path, folder="MNIST", n_train=30)
    monkeypatch.setenv("ASP_DATA_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path.resolve()
    assert load_dataset("mnist").train_x.shape == (30, 28, 28)


def test_missing_files_without_download_raise(tmp_path):
    """When files are missing and download is off, FileNotFoundError and no files appear."""
    with pytest.raises(FileNotFoundError):
        load_dataset("mnist", data_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_rejected():
    with pytest.raises(ValueError):
        load_dataset("cifar")


# ------------------------------------------------------------------------------ permuted
def test_permuted_task1_identity_and_fixed_permutations():
    """Task 1 is the original data; later tasks are permutations fixed by the seed."""
    ds = load_dataset("embedded")
    a = permuted_scenario(dataset="embedded", n_tasks=3, seed=7)
    b = permuted_scenario(dataset="embedded", n_tasks=3, seed=7)
    c = permuted_scenario(dataset="embedded", n_tasks=3, seed=8)
    assert a.name == "permuted-embedded" and a.n_classes == 10 and len(a) == 3
    assert torch.equal(a.tasks[0].train_x, ds.train_x) and torch.equal(a.tasks[0].test_x, ds.test_x)
    perms = a.info["permutations"]
    assert torch.equal(perms[0], torch.arange(784))
    for t in (1, 2):
        assert torch.equal(a.tasks[t].train_x, b.tasks[t].train_x)
        assert not torch.equal(a.tasks[t].train_x, c.tasks[t].train_x)
        assert sorted(perms[t].tolist()) == list(range(784))
        assert not torch.equal(perms[t], torch.arange(784))
        # the permutation applies to train and test alike, labels unchanged
        flat = ds.train_x.reshape(len(ds.train_x), -1)[:, perms[t]].reshape(-1, 28, 28)
        assert torch.equal(a.tasks[t].train_x, flat)
        assert torch.equal(a.tasks[t].test_x,
                           ds.test_x.reshape(len(ds.test_x), -1)[:, perms[t]].reshape(-1, 28, 28))
        assert torch.equal(a.tasks[t].train_y, ds.train_y)
        assert a.tasks[t].classes is None
    assert not torch.equal(perms[1], perms[2])


def test_permuted_subsample_is_seeded():
    a = permuted_scenario(dataset="embedded", n_tasks=2, train_per_task=300, test_per_task=50,
                          seed=1)
    b = permuted_scenario(dataset="embedded", n_tasks=2, train_per_task=300, test_per_task=50,
                          seed=1)
    assert len(a.tasks[1].train_y) == 300 and len(a.tasks[1].test_y) == 50
    assert torch.equal(a.tasks[1].train_x, b.tasks[1].train_x)
    assert torch.equal(a.tasks[0].train_y, a.tasks[1].train_y)  # same images in every task


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_scenario_validation(bad):
    with pytest.raises(ValueError):
        permuted_scenario(dataset="embedded", n_tasks=bad)
    with pytest.raises(ValueError):
        split_scenario(dataset="embedded", train_per_task=bad)


# ------------------------------------------------------------------------------ split
def test_split_task_incremental_exposes_classes():
    """Task-incremental: original labels, 10 outputs, each task's mask is its pair."""
    s = split_scenario(dataset="embedded", mode="task")
    ds = load_dataset("embedded")
    assert s.n_classes == 10 and len(s) == 5
    for task, pair in zip(s.tasks, CONSECUTIVE_PAIRS):
        assert task.classes == list(pair)
        assert set(task.train_y.unique().tolist()) == set(pair)
        assert set(task.test_y.unique().tolist()) == set(pair)
        assert len(task.train_y) == int(torch.isin(ds.train_y, torch.tensor(pair)).sum())


def test_split_domain_maps_labels_to_position_in_pair():
    """Domain-incremental: labels become 0/1 within the pair, 2 outputs, no mask."""
    s = split_scenario(dataset="embedded", mode="domain", pairs="interleaved")
    ds = load_dataset("embedded")
    assert s.n_classes == 2
    for task, (a, b) in zip(s.tasks, INTERLEAVED_PAIRS):
        assert task.classes is None
        keep = torch.isin(ds.test_y, torch.tensor([a, b]))
        expected = (ds.test_y[keep] == b).long()
        assert torch.equal(task.test_y, expected)
        assert torch.equal(task.test_x, ds.test_x[keep])


def test_split_class_incremental_keeps_labels_no_mask():
    s = make_scenario("split-class", dataset="embedded", n_tasks=3)
    assert s.n_classes == 10 and len(s) == 3 and s.name == "split-class-embedded"
    assert [t.classes for t in s.tasks] == [None, None, None]
    assert [sorted(t.train_y.unique().tolist()) for t in s.tasks] == [[0, 1], [2, 3], [4, 5]]


def test_split_validation():
    with pytest.raises(ValueError):
        split_scenario(dataset="embedded", mode="bogus")
    with pytest.raises(ValueError):
        split_scenario(dataset="embedded", n_tasks=6)
    with pytest.raises(ValueError):
        split_scenario(dataset="embedded", pairs=[(0, 1), (1, 2)])
    with pytest.raises(ValueError):
        make_scenario("rotated", dataset="embedded")


# ------------------------------------------------------------------------------ stream
def test_stream_task_free_hides_identity_and_covers_each_task_once():
    """A task-free stream yields float batches without task ids, one pass over each task."""
    s = split_scenario(dataset="embedded", mode="task", n_tasks=2, train_per_task=230)
    batches = list(iterate(s, 100, task_free=True, shuffle_seed=3))
    assert [len(b.y) for b in batches] == [100, 100, 30, 100, 100, 30]
    assert all(b.task_id is None for b in batches)
    x, y, task_id = batches[0]  # unpacks as the documented triple
    assert task_id is None and x is batches[0].x
    b0 = batches[0]
    assert b0.x.dtype == torch.float32 and b0.x.shape == (100, 1, 28, 28)
    assert float(b0.x.min()) >= 0.0 and float(b0.x.max()) <= 1.0
    # each task's samples exactly once (compare sorted labels and pixel sums)
    for t, chunk in enumerate((batches[:3], batches[3:])):
        task = s.tasks[t]
        ys = torch.cat([b.y for b in chunk])
        assert sorted(ys.tolist()) == sorted(task.train_y.tolist())
        sums = torch.cat([b.x.sum((1, 2, 3)) for b in chunk]).sort().values
        ref = to_float(task.train_x).sum((1, 2, 3)).sort().values
        assert torch.allclose(sums, ref)


def test_stream_task_aware_reports_ids_and_masks_and_is_seeded():
    s = split_scenario(dataset="embedded", mode="task", n_tasks=2, train_per_task=200)
    a = list(iterate(s, 50, task_free=False, shuffle_seed=1))
    b = list(iterate(s, 50, task_free=False, shuffle_seed=1))
    c = list(iterate(s, 50, task_free=False, shuffle_seed=2))
    assert [x.task_id for x in a] == [0] * 4 + [1] * 4
    assert s.tasks[a[0].task_id].classes == [0, 1] and s.tasks[a[-1].task_id].classes == [2, 3]
    assert all(torch.equal(p.y, q.y) for p, q in zip(a, b))
    assert not all(torch.equal(p.y, q.y) for p, q in zip(a, c))


def test_stream_unshuffled_keeps_order_and_validates():
    s = permuted_scenario(dataset="embedded", n_tasks=1, train_per_task=120)
    batches = list(iterate_task(s.tasks[0], 50, shuffle_seed=None))
    assert torch.equal(torch.cat([b.y for b in batches]), s.tasks[0].train_y)
    assert torch.equal(batches[0].x[:, 0], s.tasks[0].train_x[:50].float() / 255)
    with pytest.raises(ValueError):
        list(iterate(s, 0))


def test_stream_does_not_touch_task_data():
    """Iterating and modifying the yielded batches leaves the scenario's tensors intact."""
    s = permuted_scenario(dataset="embedded", n_tasks=1, train_per_task=100)
    before = s.tasks[0].train_x.clone(), s.tasks[0].train_y.clone()
    for b in iterate(s, 100, shuffle_seed=None):
        b.x.zero_()
        b.y.zero_()
    assert torch.equal(s.tasks[0].train_x, before[0]) and torch.equal(s.tasks[0].train_y, before[1])


def test_no_shared_folder_needed():
    """The test environment has no data dir: the embedded set is all the tests use."""
    assert "ASP_DATA_DIR" not in os.environ


@pytest.mark.parametrize("module", ["asp_service.data", "asp_service.data.idx",
                                    "asp_service.data.sources", "asp_service.data.scenarios",
                                    "asp_service.data.stream"])
def test_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
