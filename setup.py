"""Build hook: generate the gRPC stubs before setuptools collects the packages.

The stubs (``asp_service/serving/_generated/``) are build output, not source. Generating them
here, before ``setup()`` looks for packages, puts them in every wheel, so ``pip install .`` (or
an image built from a wheel) works without the repository's ``proto/`` tree. Everything else is
in ``pyproject.toml``.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup

_spec = importlib.util.spec_from_file_location(
    "_asp_stubgen", Path(__file__).resolve().parent / "asp_service" / "serving" / "stubgen.py")
_stubgen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_stubgen)
try:
    _stubgen.ensure_generated()
except ImportError as exc:  # grpc_tools missing: a checkout generates the stubs on first import
    print(f"setup.py: gRPC stubs not generated ({exc}); a wheel built now would lack them", file=sys.stderr)

setup()
