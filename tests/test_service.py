"""Training, prediction, status and control over real gRPC against the session's service."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest

from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

pytestmark = pytest.mark.serve


def test_stub_registration_routes_real_rpcs(service):
    """When a generated stub calls the service (registered-method path included), Serve answers it."""
    with grpc.insecure_channel(service.target) as channel:
        reply = pb_grpc.LearnerStub(channel).Health(pb.HealthRequest(), metadata=[("application", "asp")], timeout=30)
    assert reply.status == pb.HealthReply.STATUS_SERVING


def test_train_stream_acknowledges_every_message_in_order(client, batches):
    """When a client streams N messages, it gets N acks in order, and every sample is applied or held out."""
    before = client.status().samples_seen
    acks = list(client.train(batches(5, size=100)))
    assert [a.sequence_number for a in acks] == [1, 2, 3, 4, 5]
    assert all(a.samples_applied + a.held_out == 100 and not a.duplicate for a in acks)
    assert [a.last_sequence_number for a in acks] == [1, 2, 3, 4, 5]
    versions = [a.model_version for a in acks]
    assert versions == sorted(versions) and versions[-1] > versions[0]
    applied = sum(a.samples_applied for a in acks)
    assert acks[-1].samples_seen - before >= applied  # other streams may not run concurrently here
    assert client.status().samples_seen == before + applied


def test_resent_message_is_acknowledged_as_duplicate_and_skipped(client, batches):
    """When a message's sequence number was already applied, it is skipped: nothing is learned twice."""
    x, y = next(batches(1))
    first = client.train_batch(x, y)
    status = client.status()
    resend = pb.TrainRequest(stream_id=client.stream_id, sequence_number=first.sequence_number,
                             inputs=pb.Tensor(shape=[len(y), 28, 28], dtype=pb.DTYPE_UINT8, data=x.tobytes()),
                             labels=y.tolist())
    ack = client._stub.TrainBatch(resend, metadata=client.metadata)
    assert ack.duplicate and ack.samples_applied == 0
    assert client.status().samples_seen == status.samples_seen


def test_resume_continues_a_known_stream(service, client, batches):
    """When a new client process resumes a stream id, numbering continues after the last applied message."""
    from clients import LearnerClient

    list(client.train(batches(3)))
    with LearnerClient(service.target, stream_id=client.stream_id) as again:
        acks = list(again.train(batches(2, offset=300), resume=True))
    assert [a.sequence_number for a in acks] == [4, 5]
    assert not any(a.duplicate for a in acks)


def test_predict_returns_probabilities_top_k_and_one_version(client, digits):
    """When asked for top-3, each prediction carries a distribution and its three most probable labels."""
    reply = client.predict(digits[2][:8], top_k=3)
    assert len(reply.predictions) == 8 and reply.model_version == client.status().model_version
    for p in reply.predictions:
        probs = np.array(p.probabilities)
        assert probs.shape == (10,) and abs(probs.sum() - 1) < 1e-4
        assert np.allclose(probs[list(p.top_labels)], p.top_probabilities)
        assert np.allclose(p.top_probabilities, np.sort(probs)[::-1][:3])


@pytest.mark.parametrize("target", ["predicted", "runner_up", 7])
def test_predict_with_attention_gives_a_map_over_the_input(client, digits, target):
    """When attention is requested, each prediction has a c-EB map for the asked label, as floats and PNG."""
    from PIL import Image

    reply = client.predict(digits[2][:3], top_k=2, attention=target, png=True)
    for p in reply.predictions:
        expected = {"predicted": p.top_labels[0], "runner_up": p.top_labels[1]}.get(target, target)
        assert p.attention.label == expected
        assert list(p.attention.shape) == [1, 28, 28]
        values = np.array(p.attention.values)
        assert values.shape == (784,) and (values >= 0).all()
        assert abs(values.sum() - 1) < 1e-3 or values.sum() == 0
        image = Image.open(io.BytesIO(p.attention.png))
        assert image.size == (28, 28) and image.mode == "L"


def test_predict_without_attention_sends_no_map(client, digits):
    reply = client.predict(digits[2][:2])
    assert not reply.predictions[0].HasField("attention")


def test_status_reports_learner_state(client, batches):
    """Status carries counters, strategy and hyperparameters, drift, importance and the regimes."""
    list(client.train(batches(3)))
    status = client.status()
    assert status.strategy == "asp" and json.loads(status.hyperparameters["lam"]) == 2.0  # ServiceConfig.hparams
    assert status.samples_seen > 0 and status.batches_seen > 0 and status.model_version > 0
    assert status.drift.detector and "threshold" in status.drift.values
    assert {layer.layer for layer in status.importance} and all(0 <= i.nonzero_frac <= 1 for i in status.importance)
    assert status.regimes and status.regimes[0].probe_size > 0
    assert 0 <= status.prequential_accuracy <= 1
    assert list(status.input_shape) == [1, 28, 28] and status.num_classes == 10
    assert any(s.stream_id == client.stream_id for s in status.streams)


def test_reanchor_takes_an_anchor(client):
    before = client.status().anchors_taken
    assert client.reanchor().anchors_taken == before + 1
    assert client.status().seconds_since_anchor >= 0


def test_task_hint_change_starts_a_regime(client, batches):
    """When the task hint changes, a new regime named after it starts (and gets a probe)."""
    hint = f"hint-{client.stream_id}"
    list(client.train((x, y, hint) for x, y in batches(2)))
    names = [r.name for r in client.status().regimes]
    assert names[-1] == hint
