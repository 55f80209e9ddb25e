"""Optional bearer-token authentication per role, checked on the learner replica.

Clients send the gRPC metadata ``authorization: Bearer <token>``. Two roles:

- **writers** may call ``Train``, ``TrainBatch``, ``Checkpoint`` and ``Reanchor``, and read;
- **readers** may call ``Predict`` and ``GetStatus``;
- ``Health`` is always open (load balancers and probes).

A role without tokens is open. Protecting reads but not writes is refused as a configuration
error. Tokens come from files (one token per line, ``#`` comments and blank lines ignored;
several lines allow rotation without downtime) or from the environment variables
``ASP_WRITER_TOKENS`` / ``ASP_READER_TOKENS`` (comma-separated). A missing or wrong token is
answered UNAUTHENTICATED before the request is decoded, so it changes nothing.

Every presented token is compared with every configured one through
:func:`hmac.compare_digest` on SHA-256 digests (constant time, and independent of the
tokens' lengths). Tokens never appear in messages, logs or ``repr``.

>>> auth = TokenAuth(writers=["writer-secret-0123456789"], readers=["reader-secret-0123456789"])
>>> auth.check("Predict", [("authorization", "Bearer reader-secret-0123456789")])
>>> auth.check("Train", [("authorization", "Bearer reader-secret-0123456789")])
Traceback (most recent call last):
...
asp_service.serving.validation.InvalidRequest: UNAUTHENTICATED: Train needs a writer token: send the metadata 'authorization: Bearer <token>'
>>> auth.check("Health", [])
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Iterable, Sequence

import grpc

from asp_service.serving.validation import InvalidRequest

WRITER_RPCS = frozenset({"Train", "TrainBatch", "Checkpoint", "Reanchor"})
READER_RPCS = frozenset({"Predict", "GetStatus"})
OPEN_RPCS = frozenset({"Health"})
WRITER_ENV, READER_ENV = "ASP_WRITER_TOKENS", "ASP_READER_TOKENS"
MIN_TOKEN_CHARS = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def read_token_file(path: str | os.PathLike) -> list[str]:
    """The tokens in a file: one per line; blank lines and ``#`` comments are skipped."""
    lines = Path(path).expanduser().read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _checked(tokens: Iterable[str], role: str) -> tuple[bytes, ...]:
    digests = []
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARS or not token.isprintable() or " " in token:
            # the message names the role and the rule, never the token
            raise ValueError(f"a {role} token is unusable: tokens need at least {MIN_TOKEN_CHARS} printable "
                             "characters without spaces (e.g. `openssl rand -hex 32`)")
        digests.append(_digest(token))
    return tuple(digests)


class TokenAuth:
    """Who may call what; :meth:`check` raises :class:`InvalidRequest` (UNAUTHENTICATED)."""

    def __init__(self, *, writers: Sequence[str] = (), readers: Sequence[str] = ()):
        self._writers = _checked(writers, "writer")
        self._readers = _checked(readers, "reader")
        if self._readers and not self._writers:
            raise ValueError("reader tokens are set but no writer token: writes would be open while reads are "
                             "protected; set a writer token too")

    @classmethod
    def from_sources(cls, *, writer_token_file: str | None = None, reader_token_file: str | None = None,
                     environ: dict[str, str] | None = None) -> "TokenAuth":
        """Tokens from the configured files plus the ``ASP_*_TOKENS`` environment variables.

        A configured file that is missing or holds no token is an error: the service refuses to
        start rather than run unprotected by mistake.
        """
        environ = os.environ if environ is None else environ
        tokens: dict[str, list[str]] = {}
        for role, path, variable in (("writer", writer_token_file, WRITER_ENV),
                                     ("reader", reader_token_file, READER_ENV)):
            found = [t.strip() for t in environ.get(variable, "").split(",") if t.strip()]
            if path:
                from_file = read_token_file(path)
                if not from_file:
                    raise ValueError(f"the {role} token file {path} holds no token")
                found += from_file
            tokens[role] = found
        return cls(writers=tokens["writer"], readers=tokens["reader"])

    @property
    def enabled(self) -> bool:
        return bool(self._writers)

    def __repr__(self) -> str:  # never the tokens
        return f"TokenAuth(writers={len(self._writers)}, readers={len(self._readers)})"

    def role_of(self, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """"writer", "reader" or None for the request's bearer token (constant time per token)."""
        presented = [value for key, value in metadata if key.lower() == "authorization"]
        if len(presented) != 1:
            return None
        value = presented[0].decode("latin-1") if isinstance(presented[0], bytes) else presented[0]
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        is_writer = is_reader = False
        for known in self._writers:  # no early exit: every comparison runs
            is_writer |= hmac.compare_digest(digest, known)
        for known in self._readers:
            is_reader |= hmac.compare_digest(digest, known)
        return "writer" if is_writer else "reader" if is_reader else None

    def check(self, rpc: str, metadata: Iterable[tuple[str, str | bytes]]) -> None:
        """Allow the call or raise UNAUTHENTICATED (an unknown RPC is treated as a write)."""
        if rpc in OPEN_RPCS or not self._writers:
            return
        needs = "reader" if rpc in READER_RPCS else "writer"
        if needs == "reader" and not self._readers:
            return  # reads are open
        role = self.role_of(metadata)
        if role == "writer" or (role == "reader" and needs == "reader"):
            return
        raise InvalidRequest(grpc.StatusCode.UNAUTHENTICATED,
                             f"{rpc} needs a {needs} token: send the metadata 'authorization: Bearer <token>'")
