"""Preprocessing ops composed by a config string, e.g. ``"decode|random_crop(32, pad=4)|flip_lr|normalize('cifar10')"``.

Each op works on a batch ``(n, *spatial, channels)`` in numpy. Spatial ops (pad, crops, flips, resize) move the
batch's per-pixel maps (a segmentation's label map, a weight map) with the images, by the same random draw. Random
ops draw their values through a :class:`BatchRandom`: the values are drawn for the whole global batch from
``rng(seed, step)`` and each process takes its slice, so an augmented batch depends only on ``(seed, step)``, never
on how many processes share it, and a resumed run sees the same augmentations. Arguments are Python literals
(``ast.literal_eval``), nothing is executed.

| op | effect |
|---|---|
| ``decode`` | integers to float32 in [0, 1] (divided by the dataset's maximum value) |
| ``normalize(name)`` / ``normalize(mean, std)`` | ``(x - mean) / std`` per channel; no argument: this dataset's |
| ``random_crop(size, pad=0)`` | zero-pad by ``pad`` then crop ``size`` at a random position |
| ``center_crop(size)`` | crop ``size`` from the centre |
| ``flip_lr(p=0.5)``, ``flip_ud(p=0.5)`` | mirror with probability p |
| ``pad(n)`` | zero-pad every spatial axis by n on both sides |
| ``resize(size)`` | bilinear resize of the spatial axes |
| ``mirror_pad(n)`` | pad every spatial axis by n on both sides with the mirror image (U-Net's missing context) |
| ``rot90`` | rotate (2D, square) by k·90°, k uniform in 0..3 |
| ``elastic(sigma=10, grid=3)`` | U-Net's elastic deformation (:mod:`cnn.data.elastic`): bicubic for the images |
| ``elastic(..., pad=n, crop=size)`` | then ``mirror_pad(n)`` and ``random_crop(size)``, computing only the crop |
| ``log_mel(n_fft=256, hop_length=128, n_mels=40)`` | waveforms ``(n, samples, 1)`` to log-mel spectrograms |
|  | ``(n, n_mels, frames, 1)`` in dB, 8 kHz (:func:`cnn.data.audio.log_mel_spectrogram`) |
| ``speed(low=0.9, high=1.1)`` | waveforms ``(n, samples, 1)`` each played ``r`` times as fast, ``r`` uniform in |
|  | ``[low, high]``, at the same length (:func:`cnn.data.audio.change_speed`) |

U-Net's training augmentation of a 512² slice into 572² input tiles whose 388² centre is labelled:
``"decode|rot90|flip_lr|elastic|mirror_pad(92)|random_crop(572)|normalize"``, or the same tiles for less work:
``"decode|rot90|flip_lr|elastic(pad=92, crop=572)|normalize"``. In the spatial ops that resample
(``resize``, ``elastic``) integer maps (labels) are sampled by nearest neighbour, float maps (weights) linearly.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from cnn.data.audio import HOP_LENGTH, N_FFT, N_MELS, change_speed, log_mel_spectrogram
from cnn.data.sources import TFDS_DATASETS, DatasetSpec
from cnn.errors import ConfigError
from cnn.registry import Registry

OPS = Registry("preprocessing op")
Maps = list[np.ndarray]  # per-pixel arrays of a batch (label or weight maps), each (n, *spatial, 1) here


class Op(NamedTuple):
    """One preprocessing op. A pixel op maps the images alone; a spatial op moves pixels, and moves every per-pixel
    map of the batch the same way (labels by nearest neighbour, so they keep their values)."""

    pixels: Callable[[np.ndarray, BatchRandom], np.ndarray] | None = None
    spatial: Callable[[np.ndarray, Maps, BatchRandom], tuple[np.ndarray, Maps]] | None = None


class BatchRandom:
    """Random values per example of a process's slice of a global batch, drawn for the global batch."""

    def __init__(self, seed: Sequence[int], global_batch: int, local: slice = slice(None)):
        self.rng, self.global_batch, self.local = np.random.default_rng(list(seed)), global_batch, local

    def integers(self, low: int, high: int) -> np.ndarray:
        return self.rng.integers(low, high, size=self.global_batch)[self.local]

    def uniform(self) -> np.ndarray:
        return self.rng.random(self.global_batch)[self.local]

    def generators(self) -> list[np.random.Generator]:
        """A generator per example, for ops that draw many values per example."""
        return [np.random.default_rng(s) for s in self.rng.integers(0, 2**63 - 1, size=self.global_batch)[self.local]]


def _as_tuple(size, ndim: int) -> tuple[int, ...]:
    return (size,) * ndim if isinstance(size, int) else tuple(size)


def _each(transform: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray, Maps, BatchRandom], tuple]:
    """A spatial op that applies one deterministic ``transform`` to the images and to every map."""
    return lambda x, maps, rand: (transform(x), [transform(m) for m in maps])


@OPS.register("decode")
def _decode(spec: DatasetSpec) -> Op:
    return Op(pixels=lambda x, rand: x.astype(np.float32) / np.float32(spec.scale))


@OPS.register("normalize")
def _normalize(spec: DatasetSpec, mean=None, std=None) -> Op:
    if isinstance(mean, str):
        if mean not in TFDS_DATASETS:
            raise ConfigError(f"normalize({mean!r}): no statistics for it; choose from {sorted(TFDS_DATASETS)} or "
                              "give normalize(mean, std)")
        mean, std = TFDS_DATASETS[mean].spec.mean, TFDS_DATASETS[mean].spec.std
    elif mean is None:
        mean, std = spec.mean, spec.std
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return Op(pixels=lambda x, rand: ((x - mean) / std).astype(np.float32))


def _zero_pad(x: np.ndarray, n: int) -> np.ndarray:
    return np.pad(x, [(0, 0)] + [(n, n)] * (x.ndim - 2) + [(0, 0)])


@OPS.register("pad")
def _pad(spec: DatasetSpec, n: int) -> Op:
    """Zero padding; maps are padded with 0 too (background, or a weight of 0)."""
    return Op(spatial=_each(lambda x: _zero_pad(x, n)))


@OPS.register("random_crop")
def _random_crop(spec: DatasetSpec, size, pad: int = 0) -> Op:
    def crop(x, maps, rand):
        if pad:
            x, maps = _zero_pad(x, pad), [_zero_pad(m, pad) for m in maps]
        out = _as_tuple(size, x.ndim - 2)
        if any(o > n for o, n in zip(out, x.shape[1:-1], strict=True)):
            raise ConfigError(f"random_crop({size}): larger than the (padded) images {x.shape[1:-1]}")
        starts = [rand.integers(0, n - o + 1) for o, n in zip(out, x.shape[1:-1], strict=True)]
        # One gather: offsets per example and axis, broadcast over the crop window.
        index = (np.arange(len(x)).reshape((-1,) + (1,) * len(out)), *(
            (s[:, None] + np.arange(o)[None, :]).reshape((len(x),) + (1,) * a + (o,) + (1,) * (len(out) - a - 1))
            for a, (s, o) in enumerate(zip(starts, out, strict=True))
        ))
        return x[index], [m[index] for m in maps]

    return Op(spatial=crop)


@OPS.register("center_crop")
def _center_crop(spec: DatasetSpec, size) -> Op:
    def crop(x):
        out = _as_tuple(size, x.ndim - 2)
        starts = [(n - o) // 2 for o, n in zip(out, x.shape[1:-1], strict=True)]
        return x[(slice(None), *(slice(s, s + o) for s, o in zip(starts, out, strict=True)))]

    return Op(spatial=_each(crop))


def _flip(axis: int, p: float) -> Op:
    def flip(x, maps, rand):
        chosen = rand.uniform() < p

        def apply(a):
            a = a.copy()
            a[chosen] = np.flip(a[chosen], axis=axis)
            return a

        return apply(x), [apply(m) for m in maps]

    return Op(spatial=flip)


OPS.register("flip_lr", lambda spec, p=0.5: _flip(-2, p))
OPS.register("flip_ud", lambda spec, p=0.5: _flip(1, p))


@OPS.register("resize")
def _resize(spec: DatasetSpec, size) -> Op:
    """Bilinear for the images, nearest neighbour for the maps."""
    import jax
    import jax.numpy as jnp

    def resize(x, method):
        out = (len(x), *_as_tuple(size, x.ndim - 2), x.shape[-1])
        with jax.default_device(jax.devices("cpu")[0]):
            resized = np.asarray(jax.image.resize(jnp.asarray(x, jnp.float32), out, method))
        return resized if method == "bilinear" else resized.astype(x.dtype)

    return Op(spatial=lambda x, maps, rand: (resize(x, "bilinear"), [resize(m, "nearest") for m in maps]))


@OPS.register("mirror_pad")
def _mirror_pad(spec: DatasetSpec, n: int) -> Op:
    """Mirror padding (``numpy.pad`` mode ``reflect``) of the images and the maps alike."""
    return Op(spatial=_each(lambda x: np.pad(x, [(0, 0)] + [(n, n)] * (x.ndim - 2) + [(0, 0)], mode="reflect")))


def _square_2d(x: np.ndarray, op: str) -> None:
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ConfigError(f"{op}: needs square 2D images (n, size, size, channels), got {x.shape}")


@OPS.register("rot90")
def _rot90(spec: DatasetSpec) -> Op:
    def rotate(x, maps, rand):
        _square_2d(x, "rot90")
        turns = rand.integers(0, 4)

        def apply(a):
            return np.stack([np.rot90(e, k, axes=(0, 1)) for e, k in zip(a, turns, strict=True)])

        return apply(x), [apply(m) for m in maps]

    return Op(spatial=rotate)


@OPS.register("elastic")
def _elastic(spec: DatasetSpec, sigma: float = 10.0, grid: int = 3, pad: int = 0, crop=None) -> Op:
    """U-Net's elastic deformation; with ``pad`` and ``crop``, ``elastic|mirror_pad(pad)|random_crop(crop)`` in one:
    the same draws (the deformations, then the crop's rows and columns) and the same values, but the deformation is
    evaluated and the maps resampled only at the crop's pixels (a 380² tile of a 512² slice: 3× faster)."""
    from cnn.data.elastic import elastic_displacement, mirror_index, warp

    def deform(x, maps, rand):
        if x.ndim != 4:
            raise ConfigError(f"elastic: needs 2D images (n, height, width, channels), got {x.shape}")
        shape = x.shape[1:3]
        generators = rand.generators()  # drawn first, as the unfused chain draws them
        padded = [n + 2 * pad for n in shape]
        out = padded if crop is None else _as_tuple(crop, 2)
        if any(o > n for o, n in zip(out, padded, strict=True)):
            raise ConfigError(f"elastic(crop={crop}): larger than the images {shape} mirror-padded by {pad}")
        starts = [np.zeros(len(x), int) if crop is None else rand.integers(0, n - o + 1)
                  for o, n in zip(out, padded, strict=True)]
        windows = [tuple(mirror_index(s + np.arange(o) - pad, n) for s, o, n in zip(example, out, shape, strict=True))
                   for example in zip(*starts, strict=True)]
        fields = [elastic_displacement(g, shape, sigma=sigma, grid=grid, at=w)
                  for g, w in zip(generators, windows, strict=True)]

        def apply(a, order):
            return np.stack([warp(e, f, order, at=w) for e, f, w in zip(a, fields, windows, strict=True)])

        return apply(x, 3), [apply(m, 0 if np.issubdtype(m.dtype, np.integer) else 1) for m in maps]

    return Op(spatial=deform)


def _mono(x: np.ndarray, op: str) -> None:
    if x.ndim != 3 or x.shape[-1] != 1:
        raise ConfigError(f"{op}: expected mono waveforms (batch, samples, 1), got shape {x.shape}")


@OPS.register("log_mel")
def _log_mel(spec: DatasetSpec, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH, n_mels: int = N_MELS) -> Op:
    """Computed in the input pipeline, per clip; the sample rate is FSDD's (8 kHz)."""

    def spectrograms(x, rand):
        _mono(x, "log_mel")
        return np.stack([log_mel_spectrogram(clip[:, 0], n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
                         for clip in x])[..., None]

    return Op(pixels=spectrograms)


@OPS.register("speed")
def _speed(spec: DatasetSpec, low: float = 0.9, high: float = 1.1) -> Op:
    """Speed perturbation of training clips (Ko et al. 2015 use 0.9, 1.0 and 1.1): a new speaker's pitch and tempo."""
    if not 0 < low <= high:
        raise ConfigError(f"speed(low, high): expected 0 < low <= high, got low={low!r}, high={high!r}")

    def perturb(x, rand):
        _mono(x, "speed")
        rates = low + (high - low) * rand.uniform()
        return np.stack([change_speed(clip[:, 0], r) for clip, r in zip(x, rates, strict=True)])[..., None].astype(
            np.float32)

    return Op(pixels=perturb)


def _parse_op(text: str) -> tuple[str, tuple, dict]:
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, (), {}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = tuple(ast.literal_eval(a) for a in node.args)
            return node.func.id, args, {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except (SyntaxError, ValueError):
        pass
    raise ConfigError(f"cannot parse preprocessing op {text.strip()!r}: expected name or name(literal, key=literal)")


class Preprocess:
    """The ops of a chain, composed: ``preprocess(images, rand) -> images``, or ``preprocess.batch(batch, rand)``
    for a batch dict whose per-pixel maps (every key but ``image`` with a spatial shape, e.g. a segmentation's
    ``label`` of shape ``(n, *spatial)``) follow the images through the spatial ops."""

    def __init__(self, ops: list[Op]):
        self.ops = ops

    def __call__(self, images: np.ndarray, rand: BatchRandom) -> np.ndarray:
        return self.batch({"image": images}, rand)["image"]

    def batch(self, batch: dict[str, np.ndarray], rand: BatchRandom) -> dict[str, np.ndarray]:
        images = batch["image"]
        dense = [k for k, v in batch.items() if k != "image" and v.ndim == images.ndim - 1]
        maps = [batch[k][..., None] for k in dense]
        for op in self.ops:
            if op.pixels:
                images = op.pixels(images, rand)
            else:
                images, maps = op.spatial(images, maps, rand)
        return {**batch, "image": images, **{k: m[..., 0] for k, m in zip(dense, maps, strict=True)}}


def build_preprocess(chain: str, spec: DatasetSpec) -> Preprocess:
    """Compose the ops of ``"op1|op2(args)|..."``."""
    ops = []
    for text in filter(str.strip, chain.split("|")):
        name, args, kwargs = _parse_op(text)
        try:
            ops.append(OPS.get(name)(spec, *args, **kwargs))
        except TypeError as error:
            raise ConfigError(f"preprocessing op {text.strip()!r}: {error}") from None
    return Preprocess(ops)
