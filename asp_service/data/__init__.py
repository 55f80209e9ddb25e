"""Data for continual-learning benchmarks: MNIST / Fashion-MNIST loaders, scenarios, streams.

- :mod:`.sources`: in-memory uint8 data sets (``"mnist"``, ``"fashion"``, ``"embedded"``).
- :mod:`.scenarios`: Permuted and Split scenarios (task-, domain-, class-incremental).
- :mod:`.stream`: one-pass mini-batch streams, task-aware or task-free.

Example
-------
>>> from asp_service.data import make_scenario, iterate
>>> s = make_scenario("permuted", dataset="embedded", n_tasks=2, train_per_task=200)
>>> sum(len(b.y) for b in iterate(s, 100))
400
"""

from .idx import read_idx
from .scenarios import (CONSECUTIVE_PAIRS, INTERLEAVED_PAIRS, SCENARIOS, SPLIT_MODES, Scenario,
                        Task, make_scenario, permuted_scenario, split_scenario)
from .sources import DATASETS, EMBEDDED_PATH, ImageDataset, load_dataset, resolve_data_dir
from .stream import Batch, iterate, iterate_task, to_float

__all__ = [
    "read_idx", "ImageDataset", "load_dataset", "resolve_data_dir", "DATASETS", "EMBEDDED_PATH",
    "Task", "Scenario", "permuted_scenario", "split_scenario", "make_scenario", "SCENARIOS",
    "SPLIT_MODES", "CONSECUTIVE_PAIRS", "INTERLEAVED_PAIRS",
    "Batch", "iterate", "iterate_task", "to_float",
]
