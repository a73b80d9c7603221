"""Audio input: the log-mel spectrogram against librosa on real FSDD recordings, pad/crop, and FSDD wav reading
(scipy.io.wavfile as the independent reader; bad files give one line naming the file)."""

from __future__ import annotations

import wave
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.io.wavfile

from cnn.data.audio import CLIP_LENGTH, change_speed, log_mel_spectrogram, mel_spectrogram, pad_or_crop, read_wav
from cnn.errors import UserError

RECORDINGS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fsdd" / "recordings"
needs_shared = pytest.mark.skipif(not RECORDINGS.is_dir(), reason=f"{RECORDINGS.resolve()} is absent")


@needs_shared
@pytest.mark.parametrize("name", ["0_george_0.wav", "7_yweweler_33.wav", "3_theo_7.wav"])
@pytest.mark.parametrize(("n_fft", "hop_length", "n_mels"), [(256, 128, 40), (512, 160, 64)])
def test_log_mel_equals_librosa(name, n_fft, hop_length, n_mels):
    rate, samples = scipy.io.wavfile.read(RECORDINGS / name)
    signal = samples.astype(np.float32) / 32768
    ours = mel_spectrogram(signal, sample_rate=rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    power = librosa.feature.melspectrogram(y=signal, sr=rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    np.testing.assert_allclose(ours, power, rtol=1e-4, atol=1e-6 * power.max())
    log = log_mel_spectrogram(signal, sample_rate=rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
    np.testing.assert_allclose(log, librosa.power_to_db(power, top_db=None), atol=1e-3)


@pytest.mark.parametrize("rate", [0.9, 1.0, 1.13])
def test_change_speed_is_linear_interpolation_at_n_times_rate(rate):
    x = np.random.default_rng(0).normal(size=50)
    expected = np.zeros(50)
    for n in range(50):  # y[n] = (1 - f) x[i] + f x[i + 1], i + f = n·rate, x zero past its end
        i, f = int(np.floor(n * rate)), n * rate - np.floor(n * rate)
        at = lambda k: x[k] if k < 50 else 0.0  # noqa: E731
        expected[n] = (1 - f) * at(i) + f * at(i + 1) if i < 50 else 0.0
    np.testing.assert_allclose(change_speed(x, rate), expected, atol=1e-12)


@needs_shared
def test_read_wav_equals_scipy():
    rate, samples = scipy.io.wavfile.read(RECORDINGS / "9_lucas_49.wav")
    np.testing.assert_array_equal(read_wav(RECORDINGS / "9_lucas_49.wav"), samples)
    assert rate == 8000


def write_wav(path: Path, channels: int, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.zeros(100 * channels, np.int16).tobytes())
    return path


@pytest.mark.parametrize(("channels", "rate"), [(2, 8000), (1, 16000)])
def test_wrong_format_names_the_file_and_the_format(tmp_path, channels, rate):
    path = write_wav(tmp_path / "clip.wav", channels, rate)
    with pytest.raises(UserError, match=rf"clip.wav: expected mono 16-bit PCM at 8000 Hz, got .* = \({channels}, 2, "
                                        rf"{rate}\)"):
        read_wav(path)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00not a wav at all"])
def test_unreadable_file_names_the_file(tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"broken.wav: cannot be read as a PCM wav file") as error:
        read_wav(path)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"missing.wav: cannot be read"):
        read_wav(tmp_path / "missing.wav")


def test_pad_or_crop_keeps_the_start_or_the_centre():
    short = np.arange(1, 6)
    np.testing.assert_array_equal(pad_or_crop(short, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(pad_or_crop(np.arange(10), 4), [3, 4, 5, 6])
    assert pad_or_crop(np.ones((20_000, 1)), CLIP_LENGTH).shape == (CLIP_LENGTH, 1)
