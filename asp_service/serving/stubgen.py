"""Generate the Python gRPC stubs from ``proto/asp/v1/learner.proto`` (standard library only).

:func:`ensure_generated` runs ``grpc_tools.protoc`` into ``asp_service/serving/_generated/``
(git-ignored) when the stubs are missing or older than the ``.proto`` file, under a file lock so
that Ray's proxy, replicas and clients importing at the same time do not race. grpc_tools writes
an absolute import (``from asp.v1 import learner_pb2``) into the service module and names the
message module ``asp.v1.learner_pb2``; both are rewritten (a relative import, ``__name__``) so
that the stubs live inside this package and their messages pickle. A copy of the ``.proto``
goes next to the stubs, so an installed package carries its contract.

``setup.py`` loads this file by path (no package import, nothing but the standard library and
``grpc_tools``) so that a built wheel carries the stubs: installed without the repository's
``proto/`` tree, the package uses them as they are.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_ROOT = _PACKAGE_DIR.parents[1] / "proto"
PROTO_FILE = PROTO_ROOT / "asp" / "v1" / "learner.proto"
GENERATED_DIR = _PACKAGE_DIR / "_generated"
_OUT_DIR = GENERATED_DIR / "asp" / "v1"
_OUTPUTS = ("learner_pb2.py", "learner_pb2.pyi", "learner_pb2_grpc.py")


def _stale() -> bool:
    if not PROTO_FILE.exists():
        if all((_OUT_DIR / name).exists() for name in _OUTPUTS):
            return False  # installed without the proto tree: use what was generated
        raise FileNotFoundError(f"cannot generate gRPC stubs: {PROTO_FILE} is missing")
    source_mtime = PROTO_FILE.stat().st_mtime
    for name in _OUTPUTS:
        path = _OUT_DIR / name
        if not path.exists() or path.stat().st_mtime < source_mtime:
            return True
    return False


def ensure_generated(force: bool = False) -> Path:
    """Generate the stubs if missing or stale; return the folder holding them."""
    if not force and not _stale():
        return _OUT_DIR
    from grpc_tools import protoc  # build-time dependency, only needed here

    GENERATED_DIR.mkdir(parents=True, exist_ok=True)
    with open(GENERATED_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not force and not _stale():  # another process generated them meanwhile
                return _OUT_DIR
            with tempfile.TemporaryDirectory(dir=GENERATED_DIR) as tmp:
                include = Path(protoc.__file__).resolve().parent / "_proto"
                rc = protoc.main([
                    "grpc_tools.protoc",
                    f"-I{PROTO_ROOT}",
                    f"-I{include}",
                    f"--python_out={tmp}",
                    f"--pyi_out={tmp}",
                    f"--grpc_python_out={tmp}",
                    str(PROTO_FILE),
                ])
                if rc != 0:
                    raise RuntimeError(f"grpc_tools.protoc failed with exit code {rc} on {PROTO_FILE}")
                generated = Path(tmp) / "asp" / "v1"
                # Messages must pickle (Ray ships them between proxy and replicas): give them
                # the module name they are imported under, not the .proto path's "asp.v1".
                messages = generated / "learner_pb2.py"
                messages.write_text(messages.read_text().replace("'asp.v1.learner_pb2'", "__name__"))
                grpc_module = generated / "learner_pb2_grpc.py"
                grpc_module.write_text(re.sub(
                    r"^from asp\.v1 import learner_pb2 as",
                    "from . import learner_pb2 as",
                    grpc_module.read_text(),
                    flags=re.MULTILINE,
                ))
                _OUT_DIR.mkdir(parents=True, exist_ok=True)
                for package in (GENERATED_DIR, GENERATED_DIR / "asp", _OUT_DIR):
                    (package / "__init__.py").touch()
                shutil.copyfile(PROTO_FILE, generated / PROTO_FILE.name)
                for name in (*_OUTPUTS, PROTO_FILE.name):  # each file replaced atomically
                    os.replace(generated / name, _OUT_DIR / name)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    importlib.invalidate_caches()
    return _OUT_DIR


