"""Audio in and out, and the STFT: what training, separation and evaluation share of sound.

`AudioFile` reads any file libsndfile or ffmpeg can decode, a block at a time; `STFT` is the
model's transform at any sample rate (the one transform that training and separation share,
so a model always sees features computed by the same code).

    with AudioFile("song.mp3") as f:
        block = f.read(0, f.rate)               # (channels, samples) float32
    spec = STFT(cfg.audio, f.rate)(torch.from_numpy(block))   # (channels, bins, frames) complex
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from config import AudioConfig, InputError

EPS = 1e-8  # the smallest magnitude divided by
AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".caf",
                    ".w64", ".m4a", ".mp4", ".aac", ".opus", ".wma", ".webm", ".mka"}


class AudioFile:
    """A readable audio file with random access: `read(start, stop)` -> (channels, samples).

    libsndfile reads wav/flac/ogg/mp3/aiff directly; anything else is decoded once by
    ffmpeg into a temporary float wav, so that long songs are never held in memory.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._tmp: Path | None = None
        check_readable_file(self.path)
        try:
            self._file = sf.SoundFile(str(self.path))
        except (sf.SoundFileError, RuntimeError):
            self._tmp = decode_with_ffmpeg(self.path)
            self._file = sf.SoundFile(str(self._tmp))
        self.rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        if self.frames <= 0:
            self.close()
            raise InputError(f"{self.path}: contains no audio samples")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as float32 (channels, samples); NaN/inf are an InputError."""
        try:
            self._file.seek(start)
            block = self._file.read(stop - start, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise InputError(f"{self.path}: cannot be read past sample {start} ({err})") from None
        if block.shape[0] < stop - start:
            raise InputError(f"{self.path}: truncated (ends at sample {start + block.shape[0]}, "
                             f"header says {self.frames})")
        if not np.isfinite(block).all():
            raise InputError(f"{self.path}: contains NaN or infinite samples")
        return np.ascontiguousarray(block.T)

    def close(self) -> None:
        self._file.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_readable_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: permission denied")


def decode_with_ffmpeg(path: Path) -> Path:
    """Decode any ffmpeg-readable file to a temporary float32 wav; InputError if it is not audio."""
    if shutil.which("ffmpeg") is None:
        raise InputError(f"{path}: not a format libsndfile reads, and ffmpeg is not installed")
    handle, name = tempfile.mkstemp(suffix=".wav", prefix="separator-")
    os.close(handle)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(path), "-vn", "-c:a", "pcm_f32le",
           "-f", "wav", name]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or Path(name).stat().st_size <= 44:
        Path(name).unlink(missing_ok=True)
        raise InputError(f"{path}: not a readable audio file")
    return Path(name)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The whole file as float32 (channels, samples) and its sample rate."""
    with AudioFile(path) as f:
        return f.read(0, f.frames), f.rate


def find_audio_files(inputs: list[str]) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of audio files."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise InputError(f"{path}: folder contains no audio files")
            files.extend(found)
        else:
            files.append(path)
    return files


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(channels, samples) float32 resampled with soxr (high quality)."""
    if rate_in == rate_out:
        return audio
    out = soxr.resample(audio.T, rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


class STFT:
    """The Hann-window STFT of the model, at any sample rate, and its inverse.

    At the model's rate it is the model's STFT (n_fft, hop_length). At another rate the
    window and hop last as long as the model's (n_fft and hop scaled by rate / model rate),
    so bin k has the frequency of the model's bin k and frames pass at the model's frame
    rate: the model's bins are the lowest `n_bins` of this STFT and no resampling is
    needed. Bins above them (rates above the model's) are the high band that
    `extend_mask` covers.
    """

    def __init__(self, cfg: AudioConfig, rate: int | None = None) -> None:
        rate = rate or cfg.sample_rate
        ratio = rate / cfg.sample_rate
        self.n_fft = cfg.n_fft if ratio == 1 else fast_fft_size(cfg.n_fft * ratio)
        self.hop = max(1, round(cfg.hop_length * ratio))
        self.model_bins = cfg.n_bins
        self.gain = cfg.n_fft / self.n_fft  # magnitudes of tones as the model's STFT measures them

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> complex (..., n_fft // 2 + 1, frames); centred frames."""
        lead = audio.shape[:-1]
        window = torch.hann_window(self.n_fft, device=audio.device)
        spec = torch.stft(audio.reshape(-1, audio.shape[-1]), self.n_fft, self.hop, window=window,
                          center=True, pad_mode="constant", return_complex=True)  # (lead*, bins, frames)
        return spec.reshape(*lead, *spec.shape[-2:])

    def inverse(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(..., bins, frames) complex -> (..., length) real."""
        lead = spec.shape[:-2]
        window = torch.hann_window(self.n_fft, device=spec.device)
        audio = torch.istft(spec.reshape(-1, *spec.shape[-2:]), self.n_fft, self.hop, window=window,
                            center=True, length=length)  # (lead*, length)
        return audio.reshape(*lead, length)

    @property
    def held_bins(self) -> int:
        """How many of the model's bins this rate holds: all of them, or at rates below the model's
        those up to this rate's Nyquist frequency (a 16 kHz input on a 32 kHz model: half)."""
        return min(self.model_bins, self.n_fft // 2 + 1)

    def model_band(self, spec: torch.Tensor) -> torch.Tensor:
        """The model's bins of a spectrum (..., bins, frames), complex or its magnitude -> (...,
        model_bins, frames), scaled to the model's STFT; bins above the input's Nyquist frequency
        (`held_bins`) are zero."""
        band = spec[..., : self.held_bins, :] * self.gain
        missing = self.model_bins - band.shape[-2]
        return torch.nn.functional.pad(band, (0, 0, 0, missing)) if missing > 0 else band


def fast_fft_size(length: float) -> int:
    """The FFT size nearest `length` (within 0.5 %) whose prime factors are all <= 11.

    44.1 kHz asks for 2822.4 samples (2822 = 2 x 17 x 83 transforms slowly); 2816 = 2^8 x 11
    is 30 % faster through the STFT and its inverse, and moves the model's bins by 0.2 %.
    """
    target = round(length)
    for distance in range(max(1, target // 200) + 1):
        for size in (target - distance, target + distance):
            rest = size
            for prime in (2, 3, 5, 7, 11):
                while rest > 1 and rest % prime == 0:
                    rest //= prime
            if size >= 2 and rest == 1:
                return size
    return max(2, target)


def magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec| of complex spectra; magnitudes as they are."""
    if not spec.is_complex():
        return spec
    return squared_magnitude(spec).sqrt()  # |spec|: 2.5x abs() on the STFT's frames-major layout


def squared_magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec|^2 of complex spectra, without the square root."""
    return spec.real.square() + spec.imag.square()


def channel_mean(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The mean over a short dimension (channels), keeping it: slice by slice, 10x a reduction
    over the STFT's frames-major layout."""
    slices = x.unbind(dim)
    return (sum(slices[1:], slices[0]) / len(slices)).unsqueeze(dim)


def header_seconds(path: Path) -> float:
    """Length of an audio file in seconds, from its header (0 when libsndfile cannot read it)."""
    try:
        return float(sf.info(str(path)).duration)
    except (sf.SoundFileError, RuntimeError):
        return 0.0


def normalize_patches(mag: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each (bins, frames) patch to peak 1 ("patch") or leave it ("none").

    Returns the normalized patches and the per-patch scale they were divided by.
    """
    if mode == "none":
        return mag, torch.ones_like(mag[..., :1, :1])
    scale = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(EPS)  # (..., 1, 1)
    return mag / scale, scale
