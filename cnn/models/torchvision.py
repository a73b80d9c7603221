"""torchvision's pretrained weights in the zoo, read without torch: ``load_torchvision(name, path)`` returns the
``{"params", "batch_stats"}`` that ``cnn.models.create(name, num_classes=...).apply(variables, x, train=False)``
takes (inputs channels-last).

Files (recognized by their first bytes, not their name):

- ``.pth`` as ``torch.save`` writes it since torch 1.6: a zip of ``<dir>/data.pkl``, the pickled state dict, and
  ``<dir>/data/<key>``, the raw elements of each storage (byte order in ``<dir>/byteorder``, little if absent). In
  the pickle a tensor is a call ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and a storage
  a persistent id ``("storage", torch.FloatStorage, key, location, numel)``.
- ``.pth`` of torch < 1.6 (the older torchvision files): pickles in a row (magic number, protocol, system info, the
  state dict, the list of storage keys), then each storage as an int64 element count and its elements.
- ``.safetensors``: an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape",
  "data_offsets": [begin, end]}}``, then the bytes.

The pickles go through :class:`cnn.data.safe_pickle.RestrictedUnpickler` with :data:`TORCH_GLOBALS`, the globals a
state dict needs (the rebuild functions, ``collections.OrderedDict``, the storage types); any other (``os.system``,
``builtins.eval``) is refused by name before anything runs. A tensor's view is bounds-checked against its storage.

Mapping, torch -> flax: a convolution's weight ``(O, I/groups, *kernel)`` -> kernel ``(*kernel, I/groups, O)``;
a linear weight ``(O, I)`` -> kernel ``(I, O)``, and the first dense layer of AlexNet and VGG, which reads the pooled
``(C, H, W)`` map flattened channel-first in torch and ``(H, W, C)`` here, has its rows permuted to match; a 1×1
convolution onto a dense layer (EfficientNet's squeeze-and-excitation) -> ``(I, O)``; BatchNorm ``weight, bias`` ->
``scale, bias`` and ``running_mean, running_var`` -> ``batch_stats`` ``mean, var`` (``num_batches_tracked`` unused).
Each family names its modules (:data:`FAMILIES`); a tensor no module takes, a variable no tensor fills, or a shape
that disagrees is one line naming it.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cnn.data.safe_pickle import RestrictedUnpickler
from cnn.errors import ConfigError, UserError

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_SAFETENSORS_DTYPES = {
    "F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class _Storage:
    """A storage named in the pickle; its elements are read after unpickling (they follow it in a legacy file)."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _Tensor:
    """``torch._utils._rebuild_tensor(_v2)``: a strided view of a storage (requires_grad, hooks, metadata unused)."""
    if not (isinstance(storage, _Storage) and isinstance(offset, int) and isinstance(size, tuple)
            and isinstance(stride, tuple) and len(size) == len(stride)
            and all(isinstance(n, int) and n >= 0 for n in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor whose storage, offset, size or stride is malformed")
    return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is its tensor (requires_grad, hooks unused)."""
    return data


TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): np.dtype(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(RestrictedUnpickler):
    allowed = TORCH_GLOBALS
    admits = "torch tensors, storages, ordered dicts"

    def __init__(self, file: Any, **kwargs: Any):
        super().__init__(file, **kwargs)
        self.storages: dict[str, _Storage] = {}

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", type, key, location, numel) since torch 1.6; the legacy format adds a view (None for a state dict)
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], np.dtype) and isinstance(pid[4], int) and pid[5:] in ((), (None,))):
            raise pickle.UnpicklingError(f"unsupported persistent id {str(pid)[:80]}")
        storage = _Storage(str(pid[2]), pid[1], pid[4])
        self.storages[storage.key] = storage
        return storage


def _materialize(tree: Any, read: Callable[[_Storage], np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict with every tensor read from its storage; a view that leaves its storage is refused."""
    if not isinstance(tree, dict):
        raise UserError(f"the file holds a {type(tree).__name__}, not a state dict")
    storages: dict[_Storage, np.ndarray] = {}
    state = {}
    for name, tensor in tree.items():
        if not isinstance(tensor, _Tensor):
            raise UserError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        if tensor.storage not in storages:
            storages[tensor.storage] = read(tensor.storage)
        data = storages[tensor.storage]
        end = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride, strict=True)) + 1
        if 0 not in tensor.size and end > data.size:
            raise UserError(f"tensor {name!r} reads past the end of its storage ({end} > {data.size} elements)")
        strides = tuple(s * data.itemsize for s in tensor.stride)
        state[name] = np.lib.stride_tricks.as_strided(data[tensor.offset:], tensor.size, strides).copy()
    return state


def _elements(raw: bytes, storage: _Storage, byteorder: str) -> np.ndarray:
    dtype = storage.dtype.newbyteorder(byteorder)
    if len(raw) < storage.numel * dtype.itemsize:
        raise UserError(f"storage {storage.key} is shorter than its {storage.numel} elements")
    return np.frombuffer(raw, dtype, storage.numel).astype(storage.dtype)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [name for name in names if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise UserError(f"{path}: a zip without exactly one <dir>/data.pkl, not a torch checkpoint")
        root = pickles[0][: -len("data.pkl")]
        byteorder = "<"
        if f"{root}byteorder" in names:
            byteorder = ">" if archive.read(f"{root}byteorder").strip() == b"big" else "<"
        tree = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), encoding="utf-8").load()

        def read(storage: _Storage) -> np.ndarray:
            member = f"{root}data/{storage.key}"
            if member not in names:
                raise UserError(f"{path}: storage {storage.key} is missing ({member})")
            return _elements(archive.read(member), storage, byteorder)

        return _materialize(tree, read)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        if _StateDictUnpickler(file).load() != _LEGACY_MAGIC:
            raise UserError(f"{path}: neither a zip, a safetensors file nor a torch checkpoint")
        _StateDictUnpickler(file).load()  # protocol version
        _StateDictUnpickler(file).load()  # system info
        unpickler = _StateDictUnpickler(file, encoding="utf-8")
        tree = unpickler.load()
        raw = {}
        for key in _StateDictUnpickler(file).load():  # each storage: its element count (int64), its elements
            storage = unpickler.storages.get(str(key))
            if storage is None:
                raise UserError(f"{path}: storage {key} is listed but no tensor names it")
            numel = int.from_bytes(file.read(8), "little")
            raw[storage.key] = _elements(file.read(numel * storage.dtype.itemsize), storage, "<")

    def read(storage: _Storage) -> np.ndarray:
        if storage.key not in raw:
            raise UserError(f"{path}: storage {storage.key} is not among the file's storages")
        return raw[storage.key]

    return _materialize(tree, read)


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    length = int(np.frombuffer(data[:8], "<u8")[0])
    header = json.loads(data[8: 8 + length])
    body = data[8 + length:]
    state = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry.get("dtype") not in _SAFETENSORS_DTYPES:
            raise UserError(f"{path}: tensor {name!r} has dtype {entry.get('dtype')!r}, not one of "
                            f"{sorted(_SAFETENSORS_DTYPES)}")
        dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
        begin, end = entry["data_offsets"]
        shape = tuple(entry["shape"])
        if not 0 <= begin <= end <= len(body) or end - begin != int(np.prod(shape)) * dtype.itemsize:
            raise UserError(f"{path}: tensor {name!r}: data_offsets {[begin, end]} do not hold shape {shape} "
                            f"of {entry['dtype']} within the file's {len(body)} bytes")
        state[name] = np.frombuffer(body[begin:end], dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    return state


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a torch checkpoint (zip or legacy ``.pth``) or ``.safetensors`` file, by name, as numpy."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            head = file.read(9)
    except OSError as error:
        raise UserError(f"cannot read weights {path}: {error.strerror}") from None
    try:
        if head.startswith(b"PK"):
            return _read_zip(path)
        if head[8:9] == b"{":
            return _read_safetensors(path)
        return _read_legacy(path)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise UserError(f"{path}: {error}") from None


# Each family: torch module name -> zoo module path ("/"-joined), from the zoo model's own structure.
Renamer = Callable[[Any], dict[str, str]]


def _resnet(model: Any) -> dict[str, str]:
    names = {"conv1": "stem_conv", "bn1": "stem_bn", "fc": "head"}
    convs = 2 if model.block_cls.expansion == 1 else 3
    for i, blocks in enumerate(model.stage_sizes):
        for j in range(blocks):
            torch, zoo = f"layer{i + 1}.{j}", f"stage{i + 1}_block{j + 1}"
            for k in range(1, convs + 1):
                names[f"{torch}.conv{k}"], names[f"{torch}.bn{k}"] = f"{zoo}/conv{k}", f"{zoo}/bn{k}"
            names[f"{torch}.downsample.0"], names[f"{torch}.downsample.1"] = f"{zoo}/proj_conv", f"{zoo}/proj_bn"
    return names


def _video_resnet(model: Any) -> dict[str, str]:
    if model.stem == "r2plus1d":
        names = {"stem.0": "stem_spatial", "stem.1": "stem_mid_bn", "stem.3": "stem_temporal", "stem.4": "stem_bn"}
    else:
        names = {"stem.0": "stem_conv", "stem.1": "stem_bn"}
    names["fc"] = "head"
    for i, (blocks, kind) in enumerate(zip(model.stage_sizes, model.block_kinds, strict=True)):
        for j in range(blocks):
            torch, zoo = f"layer{i + 1}.{j}", f"stage{i + 1}_block{j + 1}"
            for k in (1, 2):
                names[f"{torch}.conv{k}.1"] = f"{zoo}/bn{k}"
                if kind == "2+1d":  # torchvision's Conv2Plus1D: spatial conv, BN, ReLU, temporal conv
                    names[f"{torch}.conv{k}.0.0"] = f"{zoo}/conv{k}_spatial"
                    names[f"{torch}.conv{k}.0.1"] = f"{zoo}/conv{k}_mid_bn"
                    names[f"{torch}.conv{k}.0.3"] = f"{zoo}/conv{k}_temporal"
                else:
                    names[f"{torch}.conv{k}.0"] = f"{zoo}/conv{k}"
            names[f"{torch}.downsample.0"], names[f"{torch}.downsample.1"] = f"{zoo}/proj_conv", f"{zoo}/proj_bn"
    return names


def _alexnet(model: Any) -> dict[str, str]:
    names = {f"features.{index}": f"conv{i + 1}" for i, index in enumerate((0, 3, 6, 8, 10))}
    return names | {"classifier.1": "fc1", "classifier.4": "fc2", "classifier.6": "head"}


def _vgg(model: Any) -> dict[str, str]:
    names, index = {}, 0
    for i, convs in enumerate(model.stage_sizes):  # features: conv, [bn], relu per convolution; a pool per stage
        for j in range(convs):
            names[f"features.{index}"] = f"conv{i + 1}_{j + 1}"
            if model.norm:
                names[f"features.{index + 1}"] = f"bn{i + 1}_{j + 1}"
            index += 3 if model.norm else 2
        index += 1
    return names | {"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "head"}


def _efficientnet(model: Any) -> dict[str, str]:
    stages = model.stages()
    names = {"features.0.0": "stem_conv", "features.0.1": "stem_bn", f"features.{len(stages) + 1}.0": "head_conv",
             f"features.{len(stages) + 1}.1": "head_bn", "classifier.1": "head"}
    for i, stage in enumerate(stages):
        parts = (["expand"] if stage.expand_ratio != 1 else []) + ["depthwise", "se", "project"]
        for j in range(stage.layers):
            torch, zoo = f"features.{i + 1}.{j}.block", f"stage{i + 1}_block{j + 1}"
            for k, part in enumerate(parts):
                if part == "se":
                    names[f"{torch}.{k}.fc1"], names[f"{torch}.{k}.fc2"] = f"{zoo}/se_reduce", f"{zoo}/se_expand"
                else:
                    names[f"{torch}.{k}.0"], names[f"{torch}.{k}.1"] = f"{zoo}/{part}_conv", f"{zoo}/{part}_bn"
    return names


# family -> (renamer, {zoo dense layer: the (C, H, W) map torch flattens into it})
FAMILIES: dict[str, tuple[Renamer, dict[str, tuple[int, int, int]]]] = {
    "alexnet": (_alexnet, {"fc1": (256, 6, 6)}),
    "vgg": (_vgg, {"fc1": (512, 7, 7)}),
    "resnet": (_resnet, {}),
    "efficientnet": (_efficientnet, {}),
    "video_resnet": (_video_resnet, {}),
}
_VIDEO = ("r3d_18", "mc3_18", "r2plus1d_18")


def family(name: str) -> str:
    """The torchvision family of zoo model ``name`` (a ``ConfigError`` naming the importable ones otherwise)."""
    if name in _VIDEO:
        return "video_resnet"
    match = re.fullmatch(r"(alexnet|vgg|resnet|efficientnet)(\d+(_bn)?|_b\d)?", name)
    if not match:
        raise ConfigError(f"model {name!r} has no torchvision weights; importable: alexnet, vgg11..vgg19(_bn), "
                          f"resnet18..resnet152, efficientnet_b0..b7, {', '.join(_VIDEO)}")
    return match.group(1)


def _convert(weight: np.ndarray, target: tuple[int, ...], chw: tuple[int, int, int] | None) -> np.ndarray:
    """A torch ``weight`` in the layout of a flax kernel of shape ``target`` (see the module docstring)."""
    if weight.ndim > 2 and len(target) == 2:  # a 1×1 convolution onto a dense layer
        weight = weight.reshape(weight.shape[:2])
    if weight.ndim == 2 and chw:  # rows in torch's (C, H, W) flattening -> (H, W, C)
        return weight.reshape(weight.shape[0], *chw).transpose(2, 3, 1, 0).reshape(-1, weight.shape[0])
    return weight.transpose(*range(2, weight.ndim), 1, 0)


_BATCH_NORM = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
               "running_var": ("batch_stats", "var")}


def torchvision_variables(name: str, state: dict[str, np.ndarray]) -> dict[str, Any]:
    """``state`` (a torchvision state dict of model ``name``) as the zoo model's ``{"params", "batch_stats"}``, with
    as many classes as the state dict's head has.

    Raises ``UserError`` listing, one line each, the tensors no module takes, the variables no tensor fills and the
    shapes that disagree."""
    from cnn.models import create  # cnn.models imports this module

    renamer, flattened = FAMILIES[family(name)]
    modules = renamer(create(name, num_classes=1000))
    head = next((f"{module}.bias" for module, zoo in modules.items() if zoo == "head"), "")
    if head not in state:
        raise UserError(f"no tensor {head} (the head of {name}) in the state dict: not {name}'s weights?")
    model = create(name, num_classes=state[head].shape[0])
    sample = jnp.zeros((1, 4, 64, 64, 3) if name in _VIDEO else (1, 64, 64, 3))
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), sample))
    expected = {"/".join(str(k.key) for k in path): leaf.shape
                for path, leaf in jax.tree_util.tree_flatten_with_path(dict(abstract))[0]}
    found: dict[str, np.ndarray] = {}
    problems, claimed = [], set()
    for key, tensor in state.items():
        module, _, kind = key.rpartition(".")
        if kind == "num_batches_tracked":
            continue
        zoo = modules.get(module)
        batch_norm = f"params/{zoo}/scale" in expected
        collection, leaf = (_BATCH_NORM.get(kind, ("", "")) if batch_norm
                            else ("params", {"weight": "kernel", "bias": "bias"}.get(kind, "")))
        path = f"{collection}/{zoo}/{leaf}"
        if zoo is None or path not in expected:
            problems.append(f"tensor {key} {tuple(tensor.shape)}: no variable of {name} takes it")
            continue
        claimed.add(path)
        target = expected[path]
        value = tensor if batch_norm or kind == "bias" else _convert(tensor, target, flattened.get(zoo))
        if value.shape != target:
            problems.append(f"tensor {key} {tuple(tensor.shape)}: {path} needs {target}, the tensor gives "
                            f"{value.shape}")
            continue
        found[path] = value.astype(np.float32)
    problems += [f"variable {path} {shape}: no tensor fills it" for path, shape in expected.items()
                 if path not in claimed]
    if problems:
        raise UserError(f"{len(problems)} problems importing torchvision weights into {name}:\n" + "\n".join(problems))
    variables: dict[str, Any] = {}
    for path, value in found.items():
        *parents, leaf = path.split("/")
        node = variables
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return variables


def load_torchvision(name: str, path: str | Path) -> dict[str, Any]:
    """The variables of zoo model ``name`` from torchvision's checkpoint file ``path`` (``.pth`` or
    ``.safetensors``), for ``create(name, num_classes=<classes of the file>)``; apply them to channels-last
    images."""
    return torchvision_variables(name, read_state_dict(path))
