"""Streaming a continual-learning scenario (from ``asp_service.data``) through the service.

:func:`run_scenario` trains task after task through the Train stream and, after each task,
measures accuracy on every task's test set through Predict: the accuracy matrix ``R[i, j]``
(accuracy on task j after training on task i) of ALGORITHM.md, obtained over gRPC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from clients.learner_client import LearnerClient
from asp_service.serving.protos import learner_pb2 as pb


def load_scenario(name: str, *, dataset: str = "embedded", tasks: int = 5, train_per_task: int | None = None,
                  test_per_task: int | None = None, data_dir: str | None = None, seed: int = 0):
    """A scenario of ``asp_service.data`` by CLI name (``permuted-mnist`` means ``permuted``)."""
    from asp_service.data import make_scenario

    return make_scenario(name.removesuffix("-mnist"), dataset=dataset, n_tasks=tasks,
                         train_per_task=train_per_task, test_per_task=test_per_task, data_dir=data_dir, seed=seed)


def task_batches(task, batch_size: int, *, seed: int = 0, hint: str = "") -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
    """One shuffled pass over a task: uint8 ``(x, y, task_hint)`` messages of ``batch_size`` samples."""
    order = np.random.default_rng(seed).permutation(len(task.train_y))
    x, y = task.train_x.numpy()[order], task.train_y.numpy()[order]
    for i in range(0, len(y), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size], hint


def scenario_batches(scenario, batch_size: int, *, seed: int = 0, task_hints: bool = True):
    for index, task in enumerate(scenario.tasks):
        yield from task_batches(task, batch_size, seed=seed + index, hint=task.name if task_hints else "")


@dataclass
class ScenarioResult:
    R: np.ndarray                      # R[i, j]: accuracy on task j after training on task i
    train_seconds: float = 0.0         # time spent streaming (acks included), evaluation excluded
    samples: int = 0                   # samples sent (trained on or held out)
    acks: list[pb.TrainAck] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.samples / self.train_seconds if self.train_seconds else 0.0


def run_scenario(client: LearnerClient, scenario, *, batch_size: int = 500, task_hints: bool = True, seed: int = 0,
                 on_ack: Callable[[pb.TrainAck], None] | None = None) -> ScenarioResult:
    """Train on each task in turn over gRPC; fill R through Predict after each task."""
    T = len(scenario.tasks)
    result = ScenarioResult(np.zeros((T, T)))
    for i, task in enumerate(scenario.tasks):
        started = time.perf_counter()
        for ack in client.train(task_batches(task, batch_size, seed=seed + i, hint=task.name if task_hints else "")):
            result.acks.append(ack)
            result.samples += ack.samples_applied + ack.held_out + ack.samples_skipped
            if on_ack is not None:
                on_ack(ack)
        result.train_seconds += time.perf_counter() - started
        for j, other in enumerate(scenario.tasks):
            result.R[i, j] = client.accuracy(other.test_x.numpy(), other.test_y.numpy())
    return result


def format_matrix(R: np.ndarray, names: list[str]) -> str:
    width = max(8, *(len(n) for n in names)) + 1
    lines = ["after \\ on".ljust(width) + "".join(n.rjust(width) for n in names)]
    for i, name in enumerate(names):
        lines.append(name.ljust(width) + "".join(f"{100 * R[i, j]:{width}.1f}" for j in range(len(names))))
    return "\n".join(lines)
