"""Audio I/O, features and datasets: the one place where songs become network inputs.

Training and inference both call `STFT`, `to_patches` and `normalize_patches` from
here, so the model always sees features computed by the same code.

Datasets (all behind `load_tracks`):
    musdb  MUSDB18 (.stem.mp4, needs ffmpeg) or MUSDB18-HQ (--is-wav) through `musdb`
    mir1k  a MIR-1K folder (Wavfile/*.wav: left = accompaniment, right = vocals)
    stems  your own songs: ROOT/{train,test}/<song>/{mixture,vocals}.wav
    demo   a small synthetic set (NOT real music, see demo_data.py) in the MUSDB18-HQ
           layout, so that the project runs and tests offline

    python data_generator.py --dataset demo   # builds data/demo and prints patch counts
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset

from config import AudioConfig, Config, InputError, ModelConfig, TrainConfig, run_script
from demo_data import make_demo
from outputs import atomic_path

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".caf",
                    ".w64", ".m4a", ".mp4", ".aac", ".opus", ".wma", ".webm", ".mka"}
MIR1K_TRAIN_SINGERS = ("abjones", "amy")
EPS = 1e-8


# ---------------------------------------------------------------- audio I/O


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


def time_stretch(audio: np.ndarray, rate: int, factor: float, cfg: AudioConfig) -> np.ndarray:
    """(channels, samples) float32 played `factor` times as fast at the same pitch: a phase
    vocoder on the model's STFT. Output frames sit every `factor` input frames; each takes the
    magnitudes interpolated between its two neighbours, and its phases from `locked_phases`."""
    transform = STFT(cfg, rate)
    spec = transform(torch.from_numpy(audio).double()).numpy()  # (channels, bins, frames) complex
    steps = np.arange(0, spec.shape[-1] - 1, factor)  # (frames',) input positions of the output frames
    left = steps.astype(int)
    before, after = spec[..., left], spec[..., left + 1]  # (channels, bins, frames') each
    magnitudes = np.abs(before) + (steps - left) * (np.abs(after) - np.abs(before))
    advance = np.angle(after * before.conj())  # (channels, bins, frames'): phase step across one hop
    phases = np.stack([locked_phases(m, a, np.angle(b)) for m, a, b in zip(magnitudes, advance, before)])
    out = torch.polar(torch.from_numpy(magnitudes), torch.from_numpy(phases))
    return transform.inverse(out, round(audio.shape[-1] / factor)).float().numpy()


def locked_phases(magnitudes: np.ndarray, advance: np.ndarray, phases_in: np.ndarray) -> np.ndarray:
    """Phases (bins, frames') of a phase vocoder's output with identity phase locking (Laroche
    and Dolson 1999): a peak bin's phase moves on from the frame before by its measured
    step; every other bin keeps its offset, in the input frame, from its nearest peak. So the
    bins of one partial stay in step, and a step misread once (an onset, the edge's zero
    padding) shifts a whole partial instead of scrambling its bins against each other, which
    would cancel part of its energy."""
    nearest = nearest_peaks(magnitudes)  # (bins, frames')
    # out[:, k] = out[nearest, k - 1] + offset[:, k]: the peak's phase one step on, plus the bin's offset from it
    offset = np.zeros_like(magnitudes)
    offset[:, 1:] = (np.take_along_axis(advance[:, :-1], nearest[:, 1:], 0) + phases_in[:, 1:]
                     - np.take_along_axis(phases_in, nearest, 0)[:, 1:])
    out = np.empty_like(magnitudes)
    out[:, 0] = phases_in[:, 0]
    for k in range(1, magnitudes.shape[1]):  # each frame reads the one before: a gather and an add
        out[:, k] = out[nearest[:, k], k - 1] + offset[:, k]
    return out


def nearest_peaks(magnitudes: np.ndarray) -> np.ndarray:
    """(bins, frames) -> (bins, frames) int: per frame, the nearest bin that is a local maximum
    of the magnitudes (the bin itself where a frame has none, e.g. silence)."""
    bins = magnitudes.shape[0]
    index = np.arange(bins)[:, None]  # (bins, 1)
    peak = np.zeros(magnitudes.shape, dtype=bool)
    peak[1:-1] = (magnitudes[1:-1] > magnitudes[:-2]) & (magnitudes[1:-1] >= magnitudes[2:])
    below = np.maximum.accumulate(np.where(peak, index, -bins), axis=0)  # last peak at or under each bin
    above = np.minimum.accumulate(np.where(peak, index, 2 * bins)[::-1], axis=0)[::-1]  # first at or over
    nearest = np.where(index - below < above - index, below, above)
    return np.where(peak.any(0), nearest, index)


# ---------------------------------------------------------------- features


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

    def model_band(self, spec: torch.Tensor) -> torch.Tensor:
        """The model's bins of a spectrum (..., bins, frames) -> (..., model_bins, frames), scaled
        to the model's STFT; bins above the input's Nyquist frequency (low rates) are zero."""
        band = spec[..., : self.model_bins, :] * self.gain
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


def patch_padding(frames: int, patch: int, hop: int) -> tuple[int, int]:
    """Frames to pad left and right so every frame is covered by the same number of patches."""
    left = patch - hop
    total = frames + 2 * left
    n = max(1, -(-(total - patch) // hop) + 1)
    return left, (n - 1) * hop + patch - frames - left


def to_patches(mag: torch.Tensor, patch: int, hop: int) -> torch.Tensor:
    """(..., bins, frames) -> (..., n, bins, patch), zero-padded as `patch_padding` says."""
    left, right = patch_padding(mag.shape[-1], patch, hop)
    padded = torch.nn.functional.pad(mag, (left, right))  # (..., bins, left + frames + right)
    return padded.unfold(-1, patch, hop).movedim(-2, -3)  # (..., bins, n, patch) -> (..., n, bins, patch)


def blend_window(patch: int, hop: int, kind: str = "hann") -> torch.Tensor:
    """Weights (patch,) of each frame of a patch when overlapping patches are blended.

    "hann": a periodic Hann window when patches overlap by half or more (its shifted copies
    add up to a constant, so frames near a patch's edges, where the network sees the least
    context, count least); flat for less overlap, where Hann would leave gaps. "mean": flat.
    """
    if kind == "mean" or patch < 2 * hop:
        return torch.ones(patch)
    return torch.hann_window(patch, periodic=True).clamp_min(1e-3)


def from_patches(patches: torch.Tensor, hop: int, frames: int, blend: str = "hann") -> torch.Tensor:
    """Blend overlapping patches (..., n, bins, patch) back into (..., bins, frames), weighted
    by `blend_window`."""
    *lead, n, bins, patch = patches.shape
    left, right = patch_padding(frames, patch, hop)
    total = frames + left + right
    weight = blend_window(patch, hop, blend).to(patches)
    out = patches.new_zeros(*lead, bins, total)
    norm = patches.new_zeros(total)
    for i in range(n):
        out[..., i * hop:i * hop + patch] += patches[..., i, :, :] * weight
        norm[i * hop:i * hop + patch] += weight
    return (out / norm)[..., left:left + frames]


def magnitude(spec: torch.Tensor) -> torch.Tensor:
    """|spec| of complex spectra; magnitudes as they are."""
    return spec.abs() if spec.is_complex() else spec


def network_input(spec: torch.Tensor, transform: STFT, model: ModelConfig) -> torch.Tensor:
    """What the network sees of (normalized) spectra (N, 1, bins, T), complex (magnitudes do
    where the phase is not read): (N, 1 or 2, bins, T).

    Channel 0 is the magnitude. With `model.inst_frequency`, channel 1 is where each bin's
    frequency lies against the bin's centre: the phase advance from the frame before, less
    the advance of a tone at the centre (2 pi k hop / n_fft), wrapped to (-pi, pi] and divided
    by pi, times the smaller magnitude of the two frames (0 in a patch's first frame). A
    steady partial reads the same in every frame, a voice's vibrato and glides move, and bins
    with nothing in them read about 0 instead of noise; magnitudes alone cannot say where
    within a bin a partial lies (Muth et al., "Improving DNN-based music source separation
    using phase features", 2018).
    """
    mag = magnitude(spec)
    if not model.inst_frequency:
        return mag
    advance = spec[..., 1:] * spec[..., :-1].conj()  # (N, 1, bins, T - 1): phase step between frames
    bins = torch.arange(spec.shape[-2], device=spec.device)
    centre = torch.polar(torch.ones(spec.shape[-2], device=spec.device),  # (bins, 1): one step of each centre
                         -2 * math.pi * transform.hop / transform.n_fft * bins).unsqueeze(-1)
    deviation = (advance * centre).angle() / math.pi  # (N, 1, bins, T - 1) in (-1, 1]
    weighted = deviation * torch.minimum(mag[..., 1:], mag[..., :-1])  # quiet bins: about 0
    return torch.cat([mag, torch.nn.functional.pad(weighted, (1, 0))], dim=1)  # (N, 2, bins, T)


def normalize_patches(mag: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each (bins, frames) patch to peak 1 ("patch") or leave it ("none").

    Returns the normalized patches and the per-patch scale they were divided by.
    """
    if mode == "none":
        return mag, torch.ones_like(mag[..., :1, :1])
    scale = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(EPS)  # (..., 1, 1)
    return mag / scale, scale


def oracle_mask(mix_mag: torch.Tensor, vocals_mag: torch.Tensor) -> torch.Tensor:
    """Vocals / mixture in linear magnitude, clipped to [0, 1]."""
    return (vocals_mag / mix_mag.clamp_min(EPS)).clamp(0.0, 1.0)


def mask_loss(mask: torch.Tensor, mix: torch.Tensor, vocals: torch.Tensor, kind: str,
              transform: STFT | None = None, magnitude_weight: float = 0.0) -> torch.Tensor:
    """The training loss for a batch of masks (B, 1, bins, T) and the (normalized) spectra of
    the mixture and the vocals (complex, or magnitudes for "magnitude" and "mask").

    "magnitude": mean L1 between the masked mixture and the vocals (Jansson et al.);
    "mask": mean L1 between the mask and the oracle mask;
    "sdr": minus the mean SDR (dB) of the masked mixture, taken back to a waveform with the
    mixture's phase through `transform`'s inverse STFT, against the vocals' waveform: the
    quantity BSS Eval scores, phase and overlap-add included; plus `magnitude_weight` times
    the "magnitude" loss, when it is not 0.
    """
    def masked_magnitude_l1() -> torch.Tensor:
        return (mask * mix.abs() - vocals.abs()).abs().mean()

    if kind == "sdr":
        if transform is None:
            raise ValueError('the "sdr" loss needs the STFT to invert')
        loss = -waveform_sdr(transform, mask * mix, vocals, mix).mean()
        return loss + magnitude_weight * masked_magnitude_l1() if magnitude_weight else loss
    if kind == "mask":
        return (mask - oracle_mask(mix.abs(), vocals.abs())).abs().mean()
    return masked_magnitude_l1()


def waveform_sdr(transform: STFT, estimate: torch.Tensor, target: torch.Tensor,
                 mixture: torch.Tensor) -> torch.Tensor:
    """SDR (dB) per patch of complex spectra (B, 1, bins, T) taken back to waveforms.

    Bins above the given ones (a model that sees only the lowest `model_bins`) are zero in
    all three. Both energies get a floor of 1e-4 of the mixture's energy (-40 dB), so that a
    patch without vocals asks for a quiet estimate instead of an infinite SDR. The inverse
    STFT is linear, so the error's waveform is the inverse of the spectra's difference: only
    that one is differentiated.
    """
    frames = estimate.shape[-1]
    missing = transform.n_fft // 2 + 1 - estimate.shape[-2]

    def waveform(spec: torch.Tensor) -> torch.Tensor:  # (N, 1, bins, T) -> (N, samples)
        spec = torch.nn.functional.pad(spec.squeeze(1), (0, 0, 0, missing))  # (N, n_fft // 2 + 1, T)
        return transform.inverse(spec, (frames - 1) * transform.hop)

    with torch.no_grad():
        energies = waveform(torch.cat([target, mixture])).square().sum(-1)  # (2B,)
    reference, mixed = energies.chunk(2)  # (B,) each
    floor = 1e-4 * mixed
    error = waveform(target - estimate).square().sum(-1)  # (B,)
    return 10 * torch.log10((reference + floor) / (error + floor))


# ---------------------------------------------------------------- datasets


@dataclass
class Track:
    """One song, read on demand: `load()` returns (mixture, vocals, rate), float32 (channels, samples);
    `seconds()` its length, from the file header; `files` the files (or folders) it is read
    from, which name its cached spectra (none: not cached).

    Nothing is held in memory between loads, so a dataset of hours of audio costs nothing
    until it is used; a Track pickles small (paths only), so worker processes can load it.
    """

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, int]]
    seconds: Callable[[], float]
    files: tuple[Path, ...] = ()


def spectra_key(track: Track, audio: AudioConfig) -> str | None:
    """The cache name of a track's training spectra: a hash of its files (path, size, modification
    time) and of the settings that shape the spectra; None when the track names no files."""
    if not track.files:
        return None
    stats = []
    for path in track.files:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            info = file.stat()
            stats.append((str(file.resolve()), info.st_size, info.st_mtime_ns))
    shape = (audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_bins, audio.patch_frames)
    return hashlib.sha1(repr((stats, shape)).encode()).hexdigest()[:24]


def header_seconds(path: Path) -> float:
    """Length of an audio file in seconds, from its header (0 when libsndfile cannot read it)."""
    try:
        return float(sf.info(str(path)).duration)
    except (sf.SoundFileError, RuntimeError):
        return 0.0


def load_tracks(dataset: str, root: str | os.PathLike | None, subset: str,
                is_wav: bool = False, split: str | None = None) -> list[Track]:
    """Tracks of a dataset. subset: 'train' or 'test'; split (train only): 'train' or 'valid'."""
    if dataset == "demo":
        return load_wav_folders(Path(root) if root else make_demo(), subset)
    if root is None:
        raise InputError(f"--root is required for --dataset {dataset}")
    if dataset == "stems":
        return load_wav_folders(Path(root), subset)
    if dataset == "musdb":
        return load_musdb(Path(root), subset, is_wav, split)
    if dataset == "mir1k":
        return [Track(clip.stem, partial(read_mir1k_clip, clip), partial(header_seconds, clip), (clip,))
                for clip in mir1k_clips(Path(root), subset)]
    raise InputError(f"unknown dataset '{dataset}' (expected musdb, mir1k, stems or demo)")


def load_wav_folders(root: Path, subset: str) -> list[Track]:
    """Tracks in the MUSDB18-HQ layout (root/subset/<track>/{mixture,vocals}.wav), read directly."""
    folders = sorted(p for p in (root / subset).glob("*") if (p / "vocals.wav").is_file())
    if not folders:
        raise InputError(f"{root}: no tracks in '{subset}' (expected {subset}/<track>/vocals.wav)")
    return [Track(folder.name, partial(read_stem_folder, folder), partial(header_seconds, folder / "mixture.wav"),
                  (folder / "mixture.wav", folder / "vocals.wav")) for folder in folders]


def read_stem_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    mixture, rate = read_audio(folder / "mixture.wav")
    vocals, vocals_rate = read_audio(folder / "vocals.wav")
    if vocals_rate != rate or vocals.shape != mixture.shape:
        raise InputError(f"{folder}: mixture.wav and vocals.wav differ in rate or shape")
    return mixture, vocals, rate


def load_musdb(root: Path, subset: str, is_wav: bool, split: str | None) -> list[Track]:
    try:
        import musdb
    except RuntimeError as err:  # stempeg refuses to import without ffmpeg
        raise InputError(f"the musdb package cannot load: {err}") from None
    if not (root / subset).is_dir():
        raise InputError(f"{root}: not a MUSDB18 folder (no '{subset}' subfolder)")
    if not is_wav and shutil.which("ffmpeg") is None:
        raise InputError("reading MUSDB18 .stem.mp4 needs ffmpeg (apt-get install -y ffmpeg), "
                         "or pass --is-wav for MUSDB18-HQ")
    try:
        db = musdb.DB(root=str(root), subsets=subset, split=split, is_wav=is_wav)
    except Exception as err:  # musdb raises bare RuntimeError/ValueError on bad folders
        raise InputError(f"{root}: cannot be read as MUSDB18 ({err})") from None
    if not db.tracks:
        kind = "MUSDB18-HQ wav" if is_wav else "MUSDB18 .stem.mp4"
        raise InputError(f"{root}: no {kind} tracks in '{subset}'" + ("" if is_wav else
                         " (use --is-wav for MUSDB18-HQ folders)"))
    return [Track(t.name, partial(read_musdb_track, t), partial(getattr, t, "duration"), (Path(t.path),))
            for t in db.tracks]


def read_musdb_track(track: Any) -> tuple[np.ndarray, np.ndarray, int]:
    mixture = track.audio.T.astype(np.float32)
    vocals = track.targets["vocals"].audio.T.astype(np.float32)
    return mixture, vocals, int(track.rate)


def mir1k_clips(root: Path, subset: str) -> list[Path]:
    """MIR-1K's standard split: singers abjones and amy train, every other singer tests."""
    folder = root / "Wavfile" if (root / "Wavfile").is_dir() else root
    clips = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac")) if folder.is_dir() else []
    if not clips:
        raise InputError(f"{root}: not a MIR-1K folder (no Wavfile/*.wav)")
    chosen = [c for c in clips if (c.name.split("_")[0] in MIR1K_TRAIN_SINGERS) == (subset == "train")]
    if not chosen:
        raise InputError(f"{root}: no MIR-1K clips for subset '{subset}'")
    return chosen


def read_mir1k_clip(clip: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A MIR-1K clip: left = accompaniment, right = vocals, mixture = their sum."""
    audio, rate = read_audio(clip)
    if audio.shape[0] != 2:
        raise InputError(f"{clip}: MIR-1K clips are stereo (accompaniment, vocals)")
    return audio[:1] + audio[1:], audio[1:], rate


def split_validation(tracks: list[Track], count: int) -> tuple[list[Track], list[Track]]:
    """Hold out `count` tracks (at most a fifth) spread evenly over the list (deterministic)."""
    count = min(count, max(1, len(tracks) // 5), len(tracks) - 1)
    if count <= 0:
        return tracks, []
    picks = set(np.linspace(0, len(tracks) - 1, count).round().astype(int).tolist())
    return ([t for i, t in enumerate(tracks) if i not in picks],
            [t for i, t in enumerate(tracks) if i in picks])


def train_valid_tracks(dataset: str, root: str | None, is_wav: bool,
                       cfg: TrainConfig) -> tuple[list[Track], list[Track]]:
    """Training and validation tracks: MUSDB's official split where it has one."""
    if dataset == "musdb":
        train = load_tracks(dataset, root, "train", is_wav, split="train")
        try:
            valid = load_tracks(dataset, root, "train", is_wav, split="valid")
        except InputError:
            valid = []
        if valid:
            return train, valid
    else:
        train = load_tracks(dataset, root, "train", is_wav)
    return split_validation(train, cfg.valid_tracks)


def vocal_copies(train: TrainConfig) -> tuple[tuple[str, float], ...]:
    """The altered copies of each training track's vocals that remixing draws from: ("shift",
    semitones) per `train.pitch_shifts`, then ("stretch", tempo factor) per `train.time_stretches`."""
    return tuple(("shift", s) for s in train.pitch_shifts) + tuple(("stretch", f) for f in train.time_stretches)


class PatchDataset(Dataset):
    """Patches for training: batches (through `collate`) of normalized (mixture, vocals)
    complex spectra, each (batch, 1, bins, patch_frames).

    Each track's complex STFTs (vocals and accompaniment, mono) are computed once, at the
    track's own rate by `STFT` (the model's band only), as float16: 8 bytes per bin and
    frame. In memory by default (MUSDB18's 86 training tracks: about 5 GB at 16 kHz / hop
    256); with `cache`, written once to that folder and memory-mapped, so that a large set
    (the same tracks at 44.1 kHz, n_fft 2048, hop 512: about 14 GB) costs page cache, not
    process memory, and later runs skip decoding. With `remix`, an item may put the vocals
    of its track over the accompaniment of another, each with a random gain; mixing is done
    on complex spectra, so it equals the STFT of the remixed waveform. With remix and
    `train.pitch_shifts`, each track's vocals are also kept resampled by each shift (higher
    and shorter, or lower and longer, like a tape played faster or slower), and with
    `train.time_stretches` played faster or slower at the same pitch (`time_stretch`); a share
    `train.pitch_prob` of the items take their vocals from one of those copies (4 bytes per
    bin and frame each: the default four pitch shifts triple the memory above). With remix and
    `train.eq_db`, each source of an item also gets its own random equalizer
    (`equalizer_gains`).
    """

    def __init__(self, tracks: list[Track], cfg: Config, remix: bool = False, cache: Path | None = None) -> None:
        self.audio = cfg.audio
        self.train = cfg.train
        self.remix = remix
        self.specs: list[np.ndarray] = []  # (2 sources, 2 re/im, bins, frames) float16, maybe memory-mapped
        self.shifted: list[list[np.ndarray]] = []  # per track: (1 source, 2 re/im, bins, frames) per copy
        self.index: list[tuple[int, int]] = []  # (track, first frame)
        self.hop = hop = cfg.audio.patch_hop(cfg.train.patch_overlap)
        copies = vocal_copies(cfg.train) if remix else ()
        for t, track in enumerate(tracks):
            spec, *shifted = self.track_spectra(track, copies) if cache is None else \
                self.cached_spectra(track, copies, cache)
            self.specs.append(spec)
            self.shifted.append(shifted)
            frames = spec.shape[-1]
            starts = range(0, max(1, frames - cfg.audio.patch_frames + hop), hop)
            self.index.extend((t, s) for s in starts)
        self.rng = np.random.default_rng(cfg.train.seed)

    def track_spectra(self, track: Track, copies: tuple[tuple[str, float], ...] = ()) -> list[np.ndarray]:
        """The track's spectra from one load: (2 sources, 2 re/im, bins, frames) float16, the
        model's band of its mono STFTs (vocals, accompaniment); then per copy (`vocal_copies`)
        (1, 2, bins, frames), the vocals alone, pitch-shifted by resampling to sound that many
        semitones higher (shorter) or lower (longer), or time-stretched to play that many
        times as fast."""
        mixture, vocals, rate = track.load()
        sources = np.stack([vocals.mean(0), (mixture - vocals).mean(0)])  # (2, samples)
        return [self.spectrogram(sources, rate)] + [
            self.spectrogram(self.altered(sources[:1], rate, kind, amount), rate) for kind, amount in copies]

    def altered(self, vocals: np.ndarray, rate: int, kind: str, amount: float) -> np.ndarray:
        """(1, samples) vocals -> (1, samples'): pitch-shifted ("shift", semitones) or time-stretched
        ("stretch", tempo factor)."""
        if kind == "stretch":
            return time_stretch(vocals, rate, amount, self.audio)
        # a shift: the vocals' samples taken as played at rate * 2^(shift / 12), brought back to rate
        return resample(vocals, round(rate * 2 ** (amount / 12)), rate)

    def spectrogram(self, sources: np.ndarray, rate: int) -> np.ndarray:
        """(sources, samples) at `rate` -> (sources, 2 re/im, bins, frames) float16, the model's band,
        padded to at least one patch."""
        transform = STFT(self.audio, rate)
        spec = transform.model_band(transform(torch.from_numpy(sources)))  # (sources, bins, frames) complex
        frames = max(spec.shape[-1], self.audio.patch_frames)
        spec = torch.nn.functional.pad(spec, (0, frames - spec.shape[-1]))
        return torch.stack([spec.real, spec.imag], dim=1).half().numpy()

    def cached_spectra(self, track: Track, copies: tuple[tuple[str, float], ...], cache: Path) -> list[np.ndarray]:
        """`track_spectra`, memory-mapped from `cache`; computed (one load) and written there when
        any is absent (tracks that name no files are kept in memory)."""
        key = spectra_key(track, self.audio)
        if key is None:
            return self.track_spectra(track, copies)
        paths = [cache / f"{key}.npy"] + [cache / f"{key}-{kind}{amount:+g}.npy" for kind, amount in copies]
        if not all(path.exists() for path in paths):
            try:
                cache.mkdir(parents=True, exist_ok=True)
                for path, spec in zip(paths, self.track_spectra(track, copies)):
                    if path.exists():
                        continue
                    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # torchrun ranks may write it at once
                        np.save(f, spec)
            except OSError as err:
                raise InputError(f"{cache}: cannot write the spectra cache ({err.strerror})") from None
        return [np.load(path, mmap_mode="r") for path in paths]

    def __len__(self) -> int:
        return len(self.index)

    def patch(self, track: int, start: int, spec: np.ndarray | None = None) -> torch.Tensor:
        """(sources, 2 re/im, bins, patch_frames) float16, copied out of the track's spectra (or `spec`)."""
        spec = self.specs[track] if spec is None else spec
        start = min(start, spec.shape[-1] - self.audio.patch_frames)
        return torch.from_numpy(np.array(spec[..., start:start + self.audio.patch_frames]))

    def shifted_vocals(self, track: int) -> torch.Tensor:
        """(2 re/im, bins, patch_frames): a random patch of a random altered copy of the track's vocals."""
        spec = self.shifted[track][self.rng.integers(len(self.shifted[track]))]
        start = self.rng.integers(spec.shape[-1] - self.audio.patch_frames + 1)
        return self.patch(track, start, spec)[0]

    def equalizer_gains(self, bins: int, anchors: int = 8) -> torch.Tensor:
        """(2 sources, bins): a random equalizer per source, in linear gain. Gains in dB are drawn
        within +-`train.eq_db` at `anchors` frequencies spread evenly in octaves (from the first
        bin above 0 Hz to the top one) and interpolated between them, so each curve is smooth:
        a change of timbre, not a comb. Applied to a complex spectrum, a gain per bin is what a
        filter much shorter than the STFT window does to the waveform."""
        octaves = np.log2(np.maximum(np.arange(bins), 1))  # (bins,): bin 0 (DC) shares bin 1's gain
        at = np.linspace(0, octaves[-1], anchors)  # (anchors,)
        db = self.rng.uniform(-self.train.eq_db, self.train.eq_db, size=(2, anchors))
        curves = np.stack([np.interp(octaves, at, row) for row in db])  # (2, bins)
        return torch.from_numpy((10 ** (curves / 20)).astype(np.float32))

    def patch_start(self, i: int) -> tuple[int, int]:
        """(track, first frame) of item i: on the grid of patch starts, or with remix and
        `train.random_offsets` anywhere up to the next start."""
        t, start = self.index[i]
        if self.remix and self.train.random_offsets:
            start += int(self.rng.integers(self.hop))
        return t, start

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(vocals, accompaniment, gains): float16 (re/im, bins, frames) spectra and (2 sources,
        1 or bins) gains, one per source or per source and bin (`train.eq_db`).

        Mixing and normalization are done per batch, in `collate`.
        """
        t, start = self.patch_start(i)
        vocals, accompaniment = self.patch(t, start)
        gains = torch.ones(2, 1)
        if self.remix:
            low, high = self.train.gain_range
            gains = torch.from_numpy(self.rng.uniform(low, high, size=(2, 1)).astype(np.float32))
            if self.train.eq_db:
                gains = gains * self.equalizer_gains(vocals.shape[-2])
            if self.shifted[t] and self.rng.random() < self.train.pitch_prob:
                vocals = self.shifted_vocals(t)
            if len(self.specs) > 1 and self.rng.random() < self.train.remix_prob:
                other, other_start = self.patch_start(self.rng.integers(len(self.index)))
                accompaniment = self.patch(other, other_start)[1]
        return vocals, accompaniment, gains

    def collate(self, items: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of (mixture, vocals) complex spectra (batch, 1, bins, frames), both divided by the
        mixture's normalization scale (`normalize_patches` of its magnitude)."""
        vocals, accompaniment, gains = (torch.stack(x) for x in zip(*items))  # (B, 2, bins, T) x2, (B, 2, 1 or bins)
        vocals = torch.complex(vocals[:, 0].float(), vocals[:, 1].float()).unsqueeze(1)  # (B, 1, bins, T)
        accompaniment = torch.complex(accompaniment[:, 0].float(), accompaniment[:, 1].float()).unsqueeze(1)
        gains = gains.unsqueeze(-1)  # (B, 2, 1 or bins, 1): per source, and per bin with the equalizer
        vocals = vocals * gains[:, :1]
        mix = vocals + accompaniment * gains[:, 1:]  # complex sum = STFT of the sum
        _, scale = normalize_patches(mix.abs(), self.audio.normalization)  # scale: (B, 1, 1, 1)
        return mix / scale, vocals / scale


def worker_seed(worker_id: int) -> None:
    """Give each DataLoader worker its own augmentation stream."""
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(torch.initial_seed() % 2**32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="demo", choices=["musdb", "mir1k", "stems", "demo"])
    parser.add_argument("--root", default=None)
    parser.add_argument("--is-wav", action="store_true")
    args = parser.parse_args()
    cfg = Config()
    train, valid = train_valid_tracks(args.dataset, args.root, args.is_wav, cfg.train)
    for name, tracks in (("train", train), ("valid", valid)):
        patches = len(PatchDataset(tracks, cfg)) if tracks else 0
        print(f"{name}: {len(tracks)} tracks, {patches} patches")


if __name__ == "__main__":
    run_script(main)
