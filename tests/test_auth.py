"""Bearer tokens per role: writers train and control, readers predict and read status, Health is open.

The unit tests check :class:`~asp_service.serving.auth.TokenAuth` alone; the others run a
second app (``asp-auth``, started with token files) on the session's real Serve instance and
call it through real gRPC.
"""

from __future__ import annotations

import hmac
import os
import secrets
import uuid
from pathlib import Path

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asp_service.serving.auth import READER_RPCS, WRITER_RPCS, TokenAuth
from asp_service.serving.protos import learner_pb2 as pb
from asp_service.serving.validation import InvalidRequest

from conftest import SERVICE_ARGS
from fuzz_support import fuzz_settings

WRITER = "writer-" + secrets.token_hex(16)
READER = "reader-" + secrets.token_hex(16)
WRONG = "wrong-" + secrets.token_hex(16)
RPCS = sorted(WRITER_RPCS | READER_RPCS | {"Health"})


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def allowed(rpc: str, credential: str | None) -> bool:
    if rpc == "Health" or credential == WRITER:
        return True
    return credential == READER and rpc in READER_RPCS


# ---------------------------------------------------------------------- TokenAuth alone
@pytest.mark.parametrize("rpc", RPCS)
def test_each_role_reaches_exactly_its_rpcs(rpc):
    """When tokens are set, a writer token opens every RPC, a reader token Predict and GetStatus,
    and no token, a wrong one or a malformed header only Health."""
    auth = TokenAuth(writers=[WRITER], readers=[READER])
    for credential, metadata in [(WRITER, bearer(WRITER)), (READER, bearer(READER)), (WRONG, bearer(WRONG)),
                                 (None, []), (None, [("authorization", WRITER)]),
                                 (None, [("authorization", f"Basic {WRITER}")]), (None, [("authorization", "Bearer ")]),
                                 (None, bearer(WRITER) + bearer(WRITER)), (None, [("x-token", WRITER)]),
                                 (WRITER, [("authorization", f"bearer   {WRITER}  ")])]:
        if allowed(rpc, credential):
            auth.check(rpc, metadata)
        else:
            with pytest.raises(InvalidRequest) as refused:
                auth.check(rpc, metadata)
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert WRITER not in str(refused.value) and READER not in str(refused.value)


@st.composite
def near_misses(draw) -> str:
    """A real token changed a little: one character, a prefix, a suffix, case, whitespace inside
    (surrounding whitespace is trimmed, as HTTP does with header values)."""
    token = draw(st.sampled_from([WRITER, READER]))
    how = draw(st.sampled_from(["char", "prefix", "suffix", "case", "space", "random"]))
    if how == "char":
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + draw(st.characters(exclude_characters=token[i])) + token[i + 1:]
    if how == "prefix":
        return token[:draw(st.integers(0, len(token) - 1))]
    if how == "suffix":
        return token + draw(st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=4))
    if how == "case":
        return token.upper()
    if how == "space":
        i = draw(st.integers(1, len(token) - 1))
        return token[:i] + " " + token[i:]
    return draw(st.text(max_size=80))


@fuzz_settings(300)
@given(token=near_misses(), scheme=st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "", "Basic ", "Token "]),
       rpc=st.sampled_from(RPCS), extra=st.lists(st.tuples(st.sampled_from(["application", "x-token", "authorization-x"]),
                                                          st.text(max_size=20)), max_size=2))
def test_fuzzed_credentials_never_pass(token, scheme, rpc, extra):
    """When the presented credential is anything but a configured token, only Health passes."""
    auth = TokenAuth(writers=[WRITER], readers=[READER])
    metadata = [("authorization", scheme + token), *extra]
    if rpc == "Health":
        auth.check(rpc, metadata)
        return
    with pytest.raises(InvalidRequest) as refused:
        auth.check(rpc, metadata)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_without_tokens_everything_is_open_and_reads_can_stay_open():
    TokenAuth().check("Train", [])
    writers_only = TokenAuth(writers=[WRITER])
    writers_only.check("Predict", [])
    with pytest.raises(InvalidRequest):
        writers_only.check("Reanchor", [])


def test_bad_configurations_are_refused_without_echoing_the_token():
    """When only reads are protected, or a token is short or has spaces, the service does not start."""
    with pytest.raises(ValueError, match="writer token"):
        TokenAuth(readers=[READER])
    for bad in ["short", "has a space in it 0123456789", "tab\tinside-0123456789"]:
        with pytest.raises(ValueError) as raised:
            TokenAuth(writers=[bad])
        assert bad not in str(raised.value)
    assert WRITER not in repr(TokenAuth(writers=[WRITER]))


def test_every_configured_token_is_compared_in_constant_time(monkeypatch):
    """When a token is checked, hmac.compare_digest runs once per configured token whatever matches."""
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    auth = TokenAuth(writers=[WRITER, WRITER + "2"], readers=[READER])
    for metadata in (bearer(WRITER), bearer(READER), bearer(WRONG)):
        calls.clear()
        auth.role_of(metadata)
        assert len(calls) == 3


def test_tokens_from_files_and_environment(tmp_path):
    writer_file = tmp_path / "writers"
    writer_file.write_text(f"# rotation: old and new\n{WRITER}\n\n{WRITER}-next\n")
    auth = TokenAuth.from_sources(writer_token_file=str(writer_file), environ={"ASP_READER_TOKENS": f" {READER} ,"})
    assert auth.role_of(bearer(WRITER + "-next")) == "writer"
    assert auth.role_of(bearer(READER)) == "reader"
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no token"):
        TokenAuth.from_sources(writer_token_file=str(tmp_path / "empty"), environ={})
    with pytest.raises(FileNotFoundError):
        TokenAuth.from_sources(writer_token_file=str(tmp_path / "missing"), environ={})


def test_cli_options():
    from asp_service.cli import build_parser
    from clients.cli import _token, build_parser as client_parser

    args = build_parser().parse_args(["serve", "--writer-token-file", "w", "--reader-token-file", "r"])
    assert (args.writer_token_file, args.reader_token_file) == ("w", "r")
    assert _token(client_parser().parse_args(["--token", WRITER, "status"])) == WRITER


# ---------------------------------------------------------------------- a real app with tokens
@pytest.fixture(scope="module")
def auth_app(service, tmp_path_factory):
    """A second app, ``asp-auth``, on the session's Serve instance, with writer and reader token files."""
    from ray import serve

    from asp_service.serving.config import ServiceConfig
    from asp_service.serving.server import deploy
    from clients import LearnerClient

    folder = tmp_path_factory.mktemp("tokens")
    (folder / "writers").write_text(WRITER + "\n")
    (folder / "readers").write_text(READER + "\n")
    config = ServiceConfig(**{**SERVICE_ARGS, "num_cpus": 0}, checkpoint_dir=str(folder / "ckpt"),
                           writer_token_file=str(folder / "writers"), reader_token_file=str(folder / "readers"))
    deploy(config, app_name="asp-auth")
    with LearnerClient(service.target, application="asp-auth") as probe:
        probe.wait_ready()
    yield service
    serve.delete("asp-auth")


def call(stub, rpc: str, metadata, digits):
    x = digits[0][:8]
    inputs = pb.Tensor(shape=[8, 28, 28], dtype=pb.DTYPE_UINT8, data=x.tobytes())
    train = pb.TrainRequest(stream_id="auth-" + uuid.uuid4().hex[:6], sequence_number=1, inputs=inputs,
                            labels=digits[1][:8].tolist())
    requests = {"Train": iter([train]), "TrainBatch": train, "Predict": pb.PredictRequest(inputs=inputs),
                "GetStatus": pb.StatusRequest(), "Checkpoint": pb.CheckpointRequest(),
                "Reanchor": pb.ReanchorRequest(), "Health": pb.HealthRequest()}
    method = getattr(stub, rpc)
    reply = method(requests[rpc], metadata=metadata, timeout=60)
    return list(reply) if rpc == "Train" else reply


def state(stub) -> tuple:
    s = stub.GetStatus(pb.StatusRequest(), metadata=(("application", "asp-auth"), *bearer(WRITER)), timeout=60)
    return (s.samples_seen, s.batches_seen, s.model_version, s.anchors_taken, s.last_checkpoint,
            tuple((p.stream_id, p.last_sequence_number) for p in s.streams))


@pytest.mark.serve
def test_real_app_answers_unauthenticated_and_changes_nothing(auth_app, digits):
    """When a call to the app with tokens has no token, a wrong one or a reader token for a write, it is
    answered UNAUTHENTICATED and the learner's state is unchanged; the right token gets an answer."""
    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    app = ("application", "asp-auth")
    with grpc.insecure_channel(auth_app.target) as channel:
        stub = pb_grpc.LearnerStub(channel)
        tried = {"refused": 0, "allowed": 0}
        for credential in (None, WRONG, READER, WRITER):
            metadata = (app,) if credential is None else (app, *bearer(credential))
            for rpc in RPCS:
                before = state(stub)
                if allowed(rpc, credential):
                    call(stub, rpc, metadata, digits)
                    tried["allowed"] += 1
                    continue
                with pytest.raises(grpc.RpcError) as refused:
                    call(stub, rpc, metadata, digits)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, (rpc, credential)
                assert all(t not in (refused.value.details() or "") for t in (WRITER, READER, WRONG))
                assert state(stub) == before, (rpc, credential)
                tried["refused"] += 1
        assert tried == {"refused": 16, "allowed": 12}
        health = stub.Health(pb.HealthRequest(), metadata=(app,), timeout=30)
        assert health.status == pb.HealthReply.STATUS_SERVING


@pytest.mark.serve
@fuzz_settings(25)
@given(token=near_misses().filter(lambda t: t.isascii() and t.isprintable()),  # gRPC metadata is ASCII
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", ""]), rpc=st.sampled_from(sorted(WRITER_RPCS | READER_RPCS)))
def test_fuzzed_credentials_are_unauthenticated_on_the_real_app(auth_app, digits, token, scheme, rpc):
    """When generated near-miss credentials reach the real app, every call is UNAUTHENTICATED and
    changes nothing."""
    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    with grpc.insecure_channel(auth_app.target) as channel:
        stub = pb_grpc.LearnerStub(channel)
        before = state(stub)
        metadata = (("application", "asp-auth"), ("authorization", scheme + token))
        with pytest.raises(grpc.RpcError) as refused:
            call(stub, rpc, metadata, digits)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert state(stub) == before


@pytest.mark.serve
def test_client_and_cli_send_the_token(auth_app, digits, monkeypatch, capsys):
    """When the client gets a token (argument, $ASP_TOKEN, --token), its calls pass; without one they fail."""
    from clients import LearnerClient
    from clients.cli import main

    x, y = digits[0][:200], digits[1][:200]
    with LearnerClient(auth_app.target, application="asp-auth", token=WRITER) as writer:
        acks = list(writer.train([(x[:100], y[:100]), (x[100:], y[100:])]))
        assert [a.sequence_number for a in acks] == [1, 2]
    monkeypatch.setenv("ASP_TOKEN", READER)
    with LearnerClient(auth_app.target, application="asp-auth") as reader:
        assert len(reader.predict(x[:3]).predictions) == 3
        with pytest.raises(grpc.RpcError) as refused:
            reader.reanchor()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    monkeypatch.delenv("ASP_TOKEN")
    assert main(["--target", auth_app.target, "--application", "asp-auth", "status"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["--target", auth_app.target, "--application", "asp-auth", "--token", READER, "status"]) == 0
    assert '"samples_seen"' in capsys.readouterr().out


@pytest.mark.serve
def test_tokens_never_reach_the_logs(auth_app, digits):
    """When tokens were used, right and wrong, no file under the Ray session's log folder contains them."""
    import ray

    from asp_service.serving.protos import learner_pb2_grpc as pb_grpc

    with grpc.insecure_channel(auth_app.target) as channel:
        stub = pb_grpc.LearnerStub(channel)
        for token in (WRITER, READER, WRONG):
            try:
                call(stub, "Reanchor", (("application", "asp-auth"), *bearer(token)), digits)
            except grpc.RpcError:
                pass
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file()]
    assert files, logs
    needles = [t.encode() for t in (WRITER, READER, WRONG)]
    leaked = [str(p) for p in files if p.stat().st_size < 256 * 2**20
              and any(n in p.read_bytes() for n in needles)]
    assert not leaked, leaked
