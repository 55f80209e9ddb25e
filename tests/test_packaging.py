"""A wheel built from a clean tree carries the gRPC stubs: an installed package needs no proto/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "_generated", "results", "checkpoints", "docs", "tests", "build",
                              "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis")


def test_wheel_carries_stubs_and_proto_and_imports_without_the_proto_tree(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    assert not (src / "asp_service/serving/_generated").exists()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("asp_service-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("learner_pb2.py", "learner_pb2_grpc.py", "learner_pb2.pyi", "learner.proto"):
        assert f"asp_service/serving/_generated/asp/v1/{name}" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # An installed copy: no proto/ next to it, imported ahead of the editable checkout.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import asp_service.serving.protos as p; "
            "assert p.__file__.startswith(sys.argv[1]), p.__file__; "
            "assert not p.PROTO_FILE.exists(); "
            "print(sorted(p.learner_pb2.TrainAck.DESCRIPTOR.fields_by_name)[:3])")
    out = subprocess.run([sys.executable, "-c", code, str(site)], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120)
    assert "anchored" in out.stdout
