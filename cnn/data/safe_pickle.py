"""A restricted unpickler for the data files the builders read: numpy arrays, scipy sparse matrices, plain containers.

``pickle.load`` runs whatever callable a file names (``os.system``, ``builtins.eval``...), so a pickle is code. This
unpickler resolves a global only when it is in :data:`ALLOWED_GLOBALS`, the globals that the Planetoid ``ind.*`` files
(Python 2 pickles: ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``,
``scipy.sparse.csr.csr_matrix``, ``collections.defaultdict``, ``__builtin__.list``) and ``mnist1d_data.pkl`` reference
(found by tracing them with ``pickletools.genops``), plus the other sparse formats and builtin containers and scalars.
None of them runs code when called or built: they allocate arrays, dtypes, matrices and containers. Anything else
raises ``pickle.UnpicklingError`` naming the refused global, before anything is called.

Allowed names map to objects taken from this table, never imported by name, so an allowed module path cannot be
used to reach another attribute. Python 2 names (``__builtin__``, ``copy_reg``) are translated as ``pickle`` does.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import collections
import pickle
from typing import IO, Any

import numpy as np
import scipy.sparse
from numpy._core.multiarray import _reconstruct

_SPARSE = {"csr_matrix": scipy.sparse.csr_matrix, "csc_matrix": scipy.sparse.csc_matrix,
           "lil_matrix": scipy.sparse.lil_matrix}
_BUILTINS = ("list", "dict", "set", "frozenset", "tuple", "int", "float", "complex", "bool", "str", "bytes",
             "bytearray")

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # numpy < 2 writes numpy.core, numpy >= 2 numpy._core.
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Older scipy pickles name the private per-format module (scipy.sparse.csr), newer ones scipy.sparse._csr.
    **{(module, name): cls for name, cls in _SPARSE.items()
       for module in ("scipy.sparse", f"scipy.sparse.{name[:3]}", f"scipy.sparse._{name[:3]}")},
    ("collections", "defaultdict"): collections.defaultdict,
    **{("builtins", name): getattr(builtins, name) for name in _BUILTINS},
}


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals in ``allowed`` (:data:`ALLOWED_GLOBALS`; a subclass for
    another kind of file names its own table and says what it ``admits``)."""

    allowed: dict[tuple[str, str], Any] = ALLOWED_GLOBALS
    admits: str = "numpy arrays, scipy sparse matrices, builtin containers"

    def find_class(self, module: str, name: str) -> Any:
        # pickle translates Python 2 names inside the default find_class, which this override replaces.
        python3_module, python3_name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        try:
            return self.allowed[python3_module, python3_name]
        except KeyError:
            python3 = f" (Python 3: {python3_module}.{python3_name})" if python3_module != module else ""
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}{python3}: not one of the {len(self.allowed)} globals that "
                f"{type(self).__name__} admits ({self.admits})") from None


def load(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` (opened in binary mode) admitting only :data:`ALLOWED_GLOBALS`.

    ``encoding="latin1"`` reads the byte strings inside Python 2 numpy pickles as numpy expects.
    """
    return RestrictedUnpickler(file, encoding=encoding).load()
