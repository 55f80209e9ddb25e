"""Predictions from one immutable set of weights (a snapshot), with c-EB attention maps.

The learner replica publishes a :class:`Snapshot` (a deep copy of the model and its version)
at most every ``publish_every_s`` while it trains; predictor replicas build theirs from
weights pulled from the learner. A snapshot is never modified after it is made, so any number
of threads can predict from it while training goes on: every prediction of one reply comes
from exactly one version (copy-on-version, no reader lock).
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from asp_service.learning.attention import contrastive_excitation_backprop
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.validation import Limits, decode_inputs, invalid


@dataclass(frozen=True)
class Snapshot:
    model: nn.Module
    version: int

    @classmethod
    def of(cls, model: nn.Module, version: int) -> "Snapshot":
        frozen = copy.deepcopy(model).eval()
        frozen.requires_grad_(False)
        return cls(frozen, int(version))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return torch.softmax(self.model(x.to(self.device)), dim=1).cpu()

    def attend(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """c-EB marginal winning probability over the input, ``x``'s shape, on the CPU."""
        maps = contrastive_excitation_backprop(self.model, x.to(self.device), target.to(self.device))
        return maps[0].reshape(x.shape).cpu()


def attention_png(values: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of one map (max-normalised; all-zero maps stay black)."""
    from PIL import Image

    image = values.reshape(values.shape[-2], values.shape[-1]).astype(np.float64)
    peak = image.max()
    pixels = np.zeros(image.shape, np.uint8) if peak <= 0 else np.round(255 * image / peak).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def predict(snapshot: Snapshot, request: pb.PredictRequest, limits: Limits) -> pb.PredictReply:
    """Answer a PredictRequest from one snapshot; raises InvalidRequest before any work."""
    x_np = decode_inputs(request.inputs, limits)
    n = x_np.shape[0]
    top_k = request.top_k or 1
    if top_k > limits.num_classes:
        raise invalid(f"top_k: {top_k} is more than the {limits.num_classes} classes")
    att = request.attention
    wanted = np.zeros(0, np.int64)
    if att.target == pb.AttentionRequest.TARGET_LABELS:
        wanted = np.asarray(att.labels, np.int64)
        if len(wanted) not in (1, n):
            raise invalid(f"attention.labels: give one label for all inputs or one per input ({n}), not {len(wanted)}")
        if ((wanted < 0) | (wanted >= limits.num_classes)).any():
            raise invalid(f"attention.labels: labels must lie in [0, {limits.num_classes})")
    elif att.target not in pb.AttentionRequest.Target.values():
        raise invalid(f"attention.target: unknown target {att.target}")
    elif att.target == pb.AttentionRequest.TARGET_RUNNER_UP and limits.num_classes < 2:
        raise invalid("attention.target: no runner-up with fewer than two classes")

    x = torch.from_numpy(x_np)
    probs = snapshot.probabilities(x)
    ranked = torch.argsort(probs, dim=1, descending=True)
    reply = pb.PredictReply(model_version=snapshot.version)
    targets = None
    if att.target == pb.AttentionRequest.TARGET_PREDICTED:
        targets = ranked[:, 0]
    elif att.target == pb.AttentionRequest.TARGET_RUNNER_UP:
        targets = ranked[:, 1]
    elif att.target == pb.AttentionRequest.TARGET_LABELS:
        targets = torch.from_numpy(np.broadcast_to(wanted, (n,)).copy())
    maps = snapshot.attend(x, targets).numpy() if targets is not None else None
    probs_np = probs.numpy()
    for i in range(n):
        top = ranked[i, :top_k].tolist()
        prediction = reply.predictions.add(
            probabilities=probs_np[i].tolist(),
            top_labels=top,
            top_probabilities=probs_np[i, top].tolist(),
        )
        if maps is not None:
            prediction.attention.label = int(targets[i])
            prediction.attention.shape.extend(limits.input_shape)
            prediction.attention.values.extend(maps[i].reshape(-1).tolist())
            if att.png:
                prediction.attention.png = attention_png(maps[i])
    return reply
