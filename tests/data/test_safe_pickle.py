"""Restricted unpickler: the real data pickles load as the unrestricted ``pickle`` loads them; code payloads are refused
before they run."""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from cnn.data import safe_pickle

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real data folder {SHARED.resolve()} is absent")

PLANETOID_PICKLES = [f"planetoid/ind.{name}.{part}" for name in ("cora", "citeseer")
                     for part in ("x", "y", "tx", "ty", "allx", "ally", "graph")]


def restricted_load(data: bytes):
    return safe_pickle.load(io.BytesIO(data))


def assert_same(actual, expected):
    assert type(actual) is type(expected)
    if scipy.sparse.issparse(expected):
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual.toarray(), expected.toarray())
    elif isinstance(expected, np.ndarray):
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_same(actual[key], expected[key])
        if isinstance(expected, collections.defaultdict):
            assert actual.default_factory is expected.default_factory
    else:
        assert actual == expected


@needs_shared
@pytest.mark.parametrize("relative", [*PLANETOID_PICKLES, "mnist1d/mnist1d_data.pkl"])
def test_real_files_load_as_the_unrestricted_unpickler_loads_them(relative):
    data = (SHARED / relative).read_bytes()
    assert_same(restricted_load(data), pickle.loads(data, encoding="latin1"))


@needs_shared
def test_real_files_have_the_expected_contents():
    with open(SHARED / "planetoid/ind.cora.graph", "rb") as file:
        graph = safe_pickle.load(file)
    assert isinstance(graph, collections.defaultdict) and len(graph) == 2708
    assert sum(map(len, graph.values())) == 2 * 5429  # each published link is listed under both nodes
    with open(SHARED / "planetoid/ind.citeseer.allx", "rb") as file:
        assert safe_pickle.load(file).shape == (2312, 3703)
    with open(SHARED / "mnist1d/mnist1d_data.pkl", "rb") as file:
        data = safe_pickle.load(file)
    assert data["x"].shape == (4000, 40) and data["x_test"].shape == (1000, 40) and data["t"].shape == (40,)


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_numpy_sparse_and_container_round_trip(protocol):
    value = {"array": np.arange(12.0).reshape(3, 4), "ints": np.array([1, 2], np.int16),
             "csr": scipy.sparse.csr_matrix(np.eye(3, dtype=np.float32)), "csc": scipy.sparse.csc_matrix(np.eye(2)),
             "lil": scipy.sparse.lil_matrix(np.eye(2)), "graph": collections.defaultdict(list, {0: [1, 2]}),
             "plain": [(1, 2.5), {3}, frozenset({4}), "text", True, None, 1j]}
    if protocol == 2:  # Python 3 writes bytes at protocol 2 through _codecs.encode: not needed by the data files
        del value["ints"], value["array"], value["csr"], value["csc"], value["lil"]
    assert_same(restricted_load(pickle.dumps(value, protocol=protocol)), value)


class Payload:
    """Unpickles to ``function(*args)``: how a pickle runs code."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])  # GLOBAL opcode (0, 2) and STACK_GLOBAL (4, 5)
@pytest.mark.parametrize("function", [os.system, builtins.eval, builtins.exec, subprocess.Popen],
                         ids=["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen"])
def test_code_payloads_are_refused_before_running(tmp_path, protocol, function):
    marker = tmp_path / "ran"
    touch = f"open({str(marker)!r}, 'w').close()"
    args = {os.system: f"touch {marker}", builtins.eval: touch, builtins.exec: touch,
            subprocess.Popen: ["touch", str(marker)]}[function]
    data = pickle.dumps(Payload(function, args), protocol=protocol)
    result = pickle.loads(data)  # the unrestricted unpickler does run it
    if isinstance(result, subprocess.Popen):
        result.wait()
    assert marker.exists()
    marker.unlink()
    # At protocol < 3 the pickle names the Python 2 global (commands.Popen) and the message adds the Python 3 one.
    refused = rf"refused global .*\b{function.__module__}\.{function.__qualname__}\b"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        restricted_load(data)
    assert not marker.exists()


def global_call(module: str, name: str) -> bytes:
    """A protocol-0 pickle calling ``module.name('x')``, for names that need not exist in this environment."""
    return f"c{module}\n{name}\n(S'x'\ntR.".encode()


@pytest.mark.parametrize(("module", "name"), [
    ("numpy.testing._private.utils", "runstring"),  # exec()s its argument
    ("numpy", "load"),  # numpy.load(allow_pickle=True) unpickles without restriction
    ("numpy.lib.npyio", "load"),
    ("numpy.ctypeslib", "load_library"),
    ("numpy.f2py", "compile"),
    ("numpy.core.multiarray", "scalar"),  # harmless, but not needed by the files: not admitted either
    ("numpy.core.multiarray", "_reconstruct.__globals__"),
    ("scipy.sparse", "load_npz"),
    ("builtins", "getattr"),  # getattr on an admitted object would reach anything
    ("__builtin__", "eval"),  # the Python 2 name of builtins.eval
    ("__builtin__", "__import__"),
    ("copy_reg", "_reconstructor"),
    ("posix", "system"),
])
def test_unknown_globals_are_refused_by_name(module, name):
    with pytest.raises(pickle.UnpicklingError, match=rf"refused global {module}\.{name}"):
        restricted_load(global_call(module, name))


def test_admitted_names_are_taken_from_the_table_not_imported():
    # A py2 alias of an admitted name resolves to the admitted object; the mapping does not widen the table.
    assert restricted_load(b"c__builtin__\nlist\n(tR.") == []
    assert restricted_load(global_call("numpy", "dtype").replace(b"S'x'", b"S'f4'")) == np.float32
    with pytest.raises(pickle.UnpicklingError, match=r"refused global numpy\.ndarray\.tofile"):
        restricted_load(global_call("numpy", "ndarray.tofile"))
