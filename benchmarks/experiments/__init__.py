"""One-off performance experiments; nothing in the product imports them.

The experiments that time C loops share :func:`compile_c` (gcc into a temporary folder, then
``ctypes``) and the signatures of the sparse first-layer kernels in ``sparse_kernels.h``.
"""

from __future__ import annotations

import ctypes
import subprocess
import tempfile
from pathlib import Path

P, L, F, I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int

#: ``sparse_kernels.h``: pointers (P) and sizes (L), in the order the C functions take them.
SPARSE_KERNELS = {"pos_T": [P, L, L, P], "z_sparse": [P, P, L, L, L, P],
                  "back_sparse": [P, P, P, L, L, L, P], "hebb_T": [P, P, L, L, L, P, P]}


def compile_c(source: Path, argtypes: dict[str, list], restypes: dict | None = None) -> ctypes.CDLL:
    """Compile ``source`` (next to it: the headers it includes) for this CPU and load it."""
    out = Path(tempfile.mkdtemp()) / source.with_suffix(".so").name
    # reassociation lets gcc vectorize the sums (dot products, row sums)
    subprocess.run(["gcc", "-O3", "-march=native", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math",
                    "-shared", "-fPIC", "-o", str(out), str(source)], check=True)
    lib = ctypes.CDLL(str(out))
    for name, args in argtypes.items():
        getattr(lib, name).argtypes = args
    for name, res in (restypes or {}).items():
        getattr(lib, name).restype = res
    return lib


def ptr(t) -> ctypes.c_void_p:
    """A tensor's data pointer for a C function."""
    return ctypes.c_void_p(t.data_ptr())
