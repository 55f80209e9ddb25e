"""TLS in front of the service: deploy/tls/nginx.conf terminating TLS for Serve's plaintext gRPC proxy.

Runs nginx (Debian's ``nginx-light`` is enough) with the repository's config, its ports
pointed at the session's service, and a certificate from ``deploy/tls/make-cert.sh``; skipped
when nginx or openssl is missing.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from asp_service.serving.protos import learner_pb2 as pb

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[1]
APP = (("application", "asp"),)


@pytest.fixture(scope="module")
def tls_target(service, tmp_path_factory):
    if not shutil.which("nginx") or not shutil.which("openssl"):
        pytest.skip("nginx or openssl not installed (apt-get install nginx-light openssl)")
    from asp_service.serving.server import free_port

    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["bash", str(ROOT / "deploy/tls/make-cert.sh"), str(folder)], check=True, capture_output=True)
    (folder / "tmp").mkdir()
    port = free_port()
    conf = (ROOT / "deploy/tls/nginx.conf").read_text()
    assert "127.0.0.1:9000" in conf and "0.0.0.0:9443" in conf
    conf = conf.replace("127.0.0.1:9000", service.target).replace("0.0.0.0:9443", f"127.0.0.1:{port}")
    (folder / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if nginx.poll() is not None or time.monotonic() > deadline:
                nginx.kill()
                pytest.fail(f"nginx did not start: {nginx.stdout.read().decode()} "
                            f"{(folder / 'error.log').read_text() if (folder / 'error.log').exists() else ''}")
            time.sleep(0.2)
    yield f"localhost:{port}", (folder / "server.crt").read_bytes(), folder
    nginx.send_signal(signal.SIGQUIT)  # graceful stop of the nginx this fixture started
    try:
        nginx.wait(timeout=10)
    except subprocess.TimeoutExpired:
        nginx.kill()


def test_health_predict_and_train_over_tls(tls_target, digits):
    """When a client connects with TLS to nginx, Health, Predict and a Train stream work end to end."""
    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    target, root_cert, _ = tls_target
    with grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root_cert)) as channel:
        stub = pb_grpc.LearnerStub(channel)
        assert stub.Health(pb.HealthRequest(), metadata=APP, timeout=30).status == pb.HealthReply.STATUS_SERVING
        x = digits[2][:3]
        reply = stub.Predict(pb.PredictRequest(inputs=pb.Tensor(shape=[3, 28, 28], dtype=pb.DTYPE_UINT8,
                                                                  data=x.tobytes()), top_k=2),
                             metadata=APP, timeout=30)
        assert [len(p.top_labels) for p in reply.predictions] == [2, 2, 2]
        stream = "tls-" + str(time.monotonic_ns())
        messages = [pb.TrainRequest(stream_id=stream, sequence_number=i + 1, labels=digits[1][i * 50:(i + 1) * 50].tolist(),
                                    inputs=pb.Tensor(shape=[50, 784], dtype=pb.DTYPE_UINT8,
                                                     data=np.ascontiguousarray(digits[0][i * 50:(i + 1) * 50]).tobytes()))
                    for i in range(3)]
        acks = list(stub.Train(iter(messages), metadata=APP, timeout=60))
        assert [a.sequence_number for a in acks] == [1, 2, 3]
        with pytest.raises(grpc.RpcError) as refused:  # refusals keep their code through nginx
            stub.Predict(pb.PredictRequest(inputs=pb.Tensor(shape=[1, 5], dtype=pb.DTYPE_UINT8, data=bytes(5))),
                         metadata=APP, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_plaintext_and_untrusted_clients_are_refused(tls_target):
    """When a client speaks plaintext to the TLS port, or does not trust the certificate, no call succeeds."""
    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    target, _, _ = tls_target
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as plaintext:
            pb_grpc.LearnerStub(channel).Health(pb.HealthRequest(), metadata=APP, timeout=10)
    assert plaintext.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    with grpc.secure_channel(target, grpc.ssl_channel_credentials()) as channel:  # system roots only
        with pytest.raises(grpc.RpcError) as untrusted:
            pb_grpc.LearnerStub(channel).Health(pb.HealthRequest(), metadata=APP, timeout=10)
    assert untrusted.value.code() == grpc.StatusCode.UNAVAILABLE


def test_python_client_and_cli_over_tls(tls_target, digits, capsys):
    """The shipped client speaks TLS: LearnerClient(root_certificates=...) streams and predicts
    through nginx, and ``asp-client --ca-cert`` does the same from the command line; without the
    CA it does not connect."""
    from clients.cli import main
    from clients.learner_client import LearnerClient

    target, root_cert, folder = tls_target
    with LearnerClient(target, root_certificates=root_cert, read_retry_s=0) as client:
        assert client.tls
        client.wait_ready(timeout_s=30)
        batches = [(digits[0][i * 50:(i + 1) * 50], digits[1][i * 50:(i + 1) * 50]) for i in range(3)]
        acks = list(client.train(iter(batches)))
        assert sum(a.samples_applied + a.held_out + a.samples_skipped for a in acks) == 150
        assert client.predict(digits[2][:2]).predictions[0].top_labels
    assert main(["--target", target, "--ca-cert", str(folder / "server.crt"), "status"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"]
    with LearnerClient(target, tls=True, read_retry_s=0) as untrusted:  # system roots only
        with pytest.raises(grpc.RpcError):
            untrusted.status()
