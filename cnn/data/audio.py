"""Audio for the input pipeline, in numpy: reading FSDD's wavs, fixing a clip's length for batching, and the log-mel
spectrogram (the input of ``cnn.models.audio.LogMelCNN``).

Log-mel spectrogram of a signal ``x`` (librosa's defaults: centred frames, Slaney mel scale and area norm):

    frames     x zero-padded by n_fft // 2 on both sides; frame t is x[t·hop : t·hop + n_fft]
    power      P[f, t] = |sum_n w[n] x_t[n] e^{-2πi f n / n_fft}|²,  w the periodic Hann window, f = 0 .. n_fft/2
    mel        M[m, t] = sum_f H[m, f] P[f, t],  H the triangular filters centred at n_mels points equally spaced in
               mel between fmin and fmax, each scaled by 2 / (its width in Hz)
    log        L = 10 log10(max(M, amin))  (decibels)

Slaney's mel scale is linear below 1 kHz (mel = 3 f / 200) and logarithmic above (27 mels per factor 6.4).

Batching FSDD: recordings have 1,148 to 18,262 samples (mean 3,499); a batch holds clips of ``CLIP_LENGTH`` = 8,192
samples (1.02 s; 99.4% of the recordings are no longer): shorter ones are zero-padded at the end, longer ones keep
their centre (``pad_or_crop``). Evaluation can use the whole clip (the models pool globally). ``change_speed``
resamples a training clip for the ``speed`` augmentation.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from cnn.errors import UserError

SAMPLE_RATE = 8000
CLIP_LENGTH = 8192
N_FFT, HOP_LENGTH, N_MELS = 256, 128, 40  # 32 ms frames every 16 ms, 40 bands up to 4 kHz


def read_wav(path: Path) -> np.ndarray:
    """The samples of a mono 16-bit PCM wav at 8 kHz as int16.

    Raises:
      UserError: the file cannot be read as a wav, or is in another format (naming the file and the format).
    """
    try:
        with wave.open(str(path), "rb") as wav:
            layout = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate())
            if layout != (1, 2, SAMPLE_RATE):
                raise UserError(f"{path}: expected mono 16-bit PCM at {SAMPLE_RATE} Hz, got (channels, bytes per "
                                f"sample, rate) = {layout}")
            return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
    except (wave.Error, EOFError, OSError) as error:
        raise UserError(f"{path}: cannot be read as a PCM wav file ({error})") from None


def pad_or_crop(audio: np.ndarray, length: int = CLIP_LENGTH) -> np.ndarray:
    """``audio`` (samples first) at exactly ``length`` samples: zeros appended, or the centre kept."""
    n = audio.shape[0]
    if n >= length:
        start = (n - length) // 2
        return audio[start : start + length]
    return np.pad(audio, [(0, length - n)] + [(0, 0)] * (audio.ndim - 1))


def change_speed(signal: np.ndarray, rate: float) -> np.ndarray:
    """A 1D ``signal`` played ``rate`` times as fast, at its own length (speed perturbation, Ko et al. 2015: pitch
    and tempo scale together): ``y[n] = (1 - f) x[i] + f x[i + 1]`` with ``i + f = n · rate`` (``i`` an integer,
    ``0 <= f < 1``), ``x`` zero past its end. Float64."""
    n = signal.shape[0]
    padded = np.append(np.asarray(signal, np.float64), 0.0)  # the zero past the end, interpolated towards
    return np.interp(np.arange(n) * rate, np.arange(n + 1), padded, right=0.0)


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: ``3 f / 200`` below 1 kHz, then ``15 + 27 log(f / 1000) / log(6.4)``."""
    hz = np.asarray(hz, np.float64)
    log_region = hz >= 1000.0
    return np.where(log_region, 15.0 + 27.0 * np.log(np.maximum(hz, 1e-10) / 1000.0) / np.log(6.4), 3.0 * hz / 200.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) * (mel - 15.0) / 27.0), 200.0 * mel / 3.0)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """The ``(n_mels, n_fft // 2 + 1)`` triangular filters ``H``, each of area-normalised height ``2 / width``."""
    fmax = sample_rate / 2 if fmax is None else fmax
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))


def mel_spectrogram(
    signal: np.ndarray, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, hop_length: int = HOP_LENGTH,
    n_mels: int = N_MELS,
) -> np.ndarray:
    """The mel power spectrogram ``M`` ``(n_mels, frames)`` of a 1D ``signal``, ``frames = 1 + len // hop``."""
    signal = np.asarray(signal, np.float64)
    if signal.ndim != 1 or signal.shape[0] == 0:
        raise ValueError(f"signal must be a non-empty 1D array, got shape {signal.shape}")
    padded = np.pad(signal, n_fft // 2)
    frames = 1 + (padded.shape[0] - n_fft) // hop_length
    index = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2  # (frames, n_fft // 2 + 1)
    return mel_filters(sample_rate, n_fft, n_mels) @ power.T


def log_mel_spectrogram(signal: np.ndarray, amin: float = 1e-10, **kwargs) -> np.ndarray:
    """``10 log10(max(M, amin))`` of ``mel_spectrogram(signal, **kwargs)``, float32 ``(n_mels, frames)``."""
    return (10.0 * np.log10(np.maximum(mel_spectrogram(signal, **kwargs), amin))).astype(np.float32)
