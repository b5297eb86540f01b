"""Songs -> spectrograms -> normalized 128-frame patches of mixture and vocals.

Datasets (all behind `load_tracks`):
    musdb  MUSDB18 (.stem.mp4, needs ffmpeg) or MUSDB18-HQ (--is-wav) through `musdb`
    mir1k  a MIR-1K folder (Wavfile/*.wav: left = accompaniment, right = vocals)
    stems  your own songs: ROOT/{train,test}/<song>/{mixture,vocals}.wav
    demo   a small SYNTHETIC set (not music; demo_data.py), so that the project runs offline

`PatchDataset` keeps each training track's spectra and serves patches, augmented by the steps
of augment.py; `to_patches` and `normalize_patches` cut and scale patches for separation too.

    python data_generator.py --dataset demo   # builds data/demo and prints patch counts
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from audio import STFT, header_seconds, read_audio
from augment import Item, altered_vocals, augmentations, vocal_copies
from config import AudioConfig, Config, InputError, TrainConfig, run_script
from demo_data import make_demo
from outputs import atomic_path

MIR1K_TRAIN_SINGERS = ("abjones", "amy")
EPS = 1e-8


# ---------------------------------------------------------------- datasets


@dataclass
class Track:
    """One song, read on demand (a dataset of hours costs nothing until used; it pickles small, paths
    only): `load()` gives (mixture, vocals, rate), float32 (channels, samples); `seconds()` its
    length from the file header; `files` name its cached spectra (none: not cached); `stems()`,
    where the dataset keeps the accompaniment's parts apart (MUSDB18), (sources, channels,
    samples) with the vocals first, and the rate."""

    name: str
    load: Callable[[], tuple[np.ndarray, np.ndarray, int]]
    seconds: Callable[[], float]
    files: tuple[Path, ...] = ()
    stems: Callable[[], tuple[np.ndarray, int]] | None = None


def spectra_key(track: Track, audio: AudioConfig, stems: bool = False, channels: str = "mean") -> str | None:
    """The cache name of a track's training spectra: a hash of its files (path, size, modification
    time) and of the settings that shape the spectra; None when the track names no files."""
    if not track.files:
        return None
    stats = []
    for path in track.files:
        for file in sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]:
            info = file.stat()
            stats.append((str(file.resolve()), info.st_size, info.st_mtime_ns))
    # "views, channels": the arrays carry a leading views axis and a channels axis after the sources,
    # which caches written before them do not have, so those are never read back
    shape = (audio.sample_rate, audio.n_fft, audio.hop_length, audio.n_bins, audio.patch_frames,
             "views, channels", *["stems"] * stems, channels)
    return hashlib.sha1(repr((stats, shape)).encode()).hexdigest()[:24]


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
    return [Track(t.name, partial(read_musdb_track, t), partial(getattr, t, "duration"), (Path(t.path),),
                  partial(read_musdb_stems, t)) for t in db.tracks]


def read_musdb_track(track: Any) -> tuple[np.ndarray, np.ndarray, int]:
    mixture = track.audio.T.astype(np.float32)
    vocals = track.targets["vocals"].audio.T.astype(np.float32)
    return mixture, vocals, int(track.rate)


def read_musdb_stems(track: Any) -> tuple[np.ndarray, int]:
    """(4 sources, channels, samples) float32: vocals, drums, bass, other; and the rate."""
    stems = np.stack([track.sources[name].audio.T for name in ("vocals", "drums", "bass", "other")])
    return stems.astype(np.float32), int(track.rate)


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


# ---------------------------------------------------------------- patches


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


def normalize_patches(mag: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each (bins, frames) patch to peak 1 ("patch") or leave it ("none").

    Returns the normalized patches and the per-patch scale they were divided by.
    """
    if mode == "none":
        return mag, torch.ones_like(mag[..., :1, :1])
    scale = mag.amax(dim=(-2, -1), keepdim=True).clamp_min(EPS)  # (..., 1, 1)
    return mag / scale, scale


# ---------------------------------------------------------------- training patches


class PatchDataset(Dataset):
    """Training patches: batches (`collate`) of normalized (mixture, vocals) complex spectra, each
    (batch, C, bins, patch_frames), C = 1 (the channels' mean, or each channel a track of its
    own) or 2 (`train.channels=stereo`). Each track's sources are transformed once at its own
    rate (`STFT`, the model's band) and kept as float16 complex spectra, 4 bytes per bin,
    frame, channel and source: in memory, or written once to `cache` and memory-mapped. With
    `remix`, items pass the steps of `augment.augmentations`, and the vocals are also kept
    altered (pitch shifts, time stretches: the default four shifts triple the memory), beside
    the vocals of `train.extra_vocals` (MIR-1K's training singers) where given."""

    def __init__(self, tracks: list[Track], cfg: Config, remix: bool = False, cache: Path | None = None) -> None:
        self.audio = cfg.audio
        self.random_offsets = remix and cfg.train.random_offsets
        self.steps = augmentations(cfg.train) if remix else []
        self.stems = remix and cfg.train.remix_stems
        # how a track's channels become training views: "each" (a view per channel) only with remix,
        # validation stays on the mean; "stereo" both ways (the network reads both channels)
        self.channels = cfg.train.channels if remix or cfg.train.channels == "stereo" else "mean"
        copies = vocal_copies(cfg.train) if remix else ()
        self.specs: list[np.ndarray] = []  # per view: (sources, C, 2 re/im, bins, frames) float16, maybe memory-mapped
        self.altered: list[list[np.ndarray]] = []  # per view: (1, C, 2 re/im, bins, frames) per copy of its vocals
        self.index: list[tuple[int, int]] = []  # (track, first frame) of each patch
        self.hop = cfg.audio.patch_hop(cfg.train.patch_overlap)
        for track in tracks:
            spec, *altered = self.track_spectra(track, copies) if cache is None else \
                self.cached_spectra(track, copies, cache)
            starts = range(0, max(1, spec.shape[-1] - cfg.audio.patch_frames + self.hop), self.hop)
            for view in range(len(spec)):  # the channels' mean, or each channel a track of its own
                self.index.extend((len(self.specs), s) for s in starts)
                self.specs.append(spec[view])
                self.altered.append([a[view] for a in altered])
        extra = load_tracks("mir1k", cfg.train.extra_vocals, "train") if remix and cfg.train.extra_vocals else []
        vocals = [self.mono_vocals(track) for track in extra]
        self.extra = [spec for spec, _ in vocals]  # per clip of `train.extra_vocals`: (1, 2 re/im, bins, frames)
        self.extra_bands = [band for _, band in vocals]  # the bins each clip's recording holds
        frames = np.array([spec.shape[-1] for spec in self.extra], dtype=float)
        self.extra_weights = frames / max(frames.sum(), 1)  # each clip drawn by its length: every patch as likely
        self.rng = np.random.default_rng(cfg.train.seed)

    def mono_vocals(self, track: Track) -> tuple[np.ndarray, int]:
        """A track's vocals (channels' mean) as spectra (1 channel, 2 re/im, bins, frames) float16
        for `augment.ExtraVocals`, and the bins its recording holds (a 16 kHz clip on the MUSDB18
        recipe's grid: 513 of 1024, up to 8 kHz)."""
        _, vocals, rate = track.load()
        return self.spectrogram(vocals.mean(0)[None, None], rate)[0], STFT(self.audio, rate).held_bins

    def track_spectra(self, track: Track, copies: tuple[tuple[str, float], ...] = ()) -> list[np.ndarray]:
        """The track's spectra from one load: its sources (views, sources, C, 2 re/im, bins,
        frames) float16, the model's band of the STFTs of vocals and accompaniment (or, with
        `train.remix_stems`, of each of the track's stems); then (views, 1, C, 2, bins, frames)
        per altered copy of the vocals (`augment.vocal_copies`); the views are `views`'."""
        if self.stems and track.stems is not None:
            stems, rate = track.stems()  # (sources, channels, samples), vocals first
        else:
            mixture, vocals, rate = track.load()
            stems = np.stack([vocals, mixture - vocals])  # (2, channels, samples)
        views = self.views(stems, track.name)
        return [np.stack([self.spectrogram(sources, rate) for sources in views])] + [
            np.stack([self.spectrogram(altered_vocals(sources[0], rate, kind, amount, self.audio)[None], rate)
                      for sources in views]) for kind, amount in copies]

    def views(self, stems: np.ndarray, name: str) -> list[np.ndarray]:
        """What training sees of a track's sources (sources, channels, samples): views (sources, C,
        samples) of one channel, the channels' mean, or with `train.channels` "each" one view per
        channel, with "stereo" one of both (a mono track in both channels: no side)."""
        if self.channels == "each":
            return [stems[:, c:c + 1] for c in range(stems.shape[1])]
        if self.channels == "mean":
            return [stems.mean(1, keepdims=True)]
        if stems.shape[1] > 2:
            raise InputError(f"{name}: {stems.shape[1]} channels; train.channels=stereo takes mono or stereo tracks")
        return [np.repeat(stems, 2 // stems.shape[1], axis=1)]

    def spectrogram(self, sources: np.ndarray, rate: int) -> np.ndarray:
        """(sources, C, samples) -> (sources, C, 2 re/im, bins, frames) float16: the model's band, >= one patch."""
        transform = STFT(self.audio, rate)
        spec = transform.model_band(transform(torch.from_numpy(sources)))  # (sources, C, bins, frames) complex
        frames = max(spec.shape[-1], self.audio.patch_frames)
        spec = torch.nn.functional.pad(spec, (0, frames - spec.shape[-1]))
        return torch.stack([spec.real, spec.imag], dim=2).half().numpy()

    def cached_spectra(self, track: Track, copies: tuple[tuple[str, float], ...], cache: Path) -> list[np.ndarray]:
        """`track_spectra`, memory-mapped from `cache`, written there first where absent."""
        key = spectra_key(track, self.audio, self.stems and track.stems is not None, self.channels)
        if key is None:
            return self.track_spectra(track, copies)
        paths = [cache / f"{key}.npy"] + [cache / f"{key}-{kind}{amount:+g}.npy" for kind, amount in copies]
        if not all(path.exists() for path in paths):
            try:
                cache.mkdir(parents=True, exist_ok=True)
                for path, spec in zip(paths, self.track_spectra(track, copies)):
                    if not path.exists():
                        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # torchrun ranks may write it at once
                            np.save(f, spec)
            except OSError as err:
                raise InputError(f"{cache}: cannot write the spectra cache ({err.strerror})") from None
        return [np.load(path, mmap_mode="r") for path in paths]

    def __len__(self) -> int:
        return len(self.index)

    def patch(self, spec: np.ndarray, start: int) -> torch.Tensor:
        """(sources, C, 2 re/im, bins, patch_frames) float16, copied out of spectra (sources, C, 2, bins, frames)."""
        start = min(start, spec.shape[-1] - self.audio.patch_frames)
        return torch.from_numpy(np.array(spec[..., start:start + self.audio.patch_frames]))

    def patch_anywhere(self, spec: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """`patch` of spectra (sources, C, 2, bins, frames) at a random first frame."""
        return self.patch(spec, int(rng.integers(spec.shape[-1] - self.audio.patch_frames + 1)))

    def patch_start(self, i: int, rng: np.random.Generator) -> tuple[int, int]:
        """(track, first frame) of patch i: on the grid of patch starts, or with remix and
        `train.random_offsets` anywhere up to the next start."""
        t, start = self.index[i]
        return t, start + (int(rng.integers(self.hop)) if self.random_offsets else 0)

    def random_patch(self, source: int, rng: np.random.Generator) -> torch.Tensor:
        t, start = self.patch_start(int(rng.integers(len(self.index))), rng)
        return self.patch(self.specs[t], start)[source]

    def altered_patch(self, track: int, rng: np.random.Generator) -> torch.Tensor | None:
        if not self.altered[track]:
            return None
        return self.patch_anywhere(self.altered[track][rng.integers(len(self.altered[track]))], rng)[0]

    def extra_vocal_patch(self, rng: np.random.Generator) -> tuple[torch.Tensor, int] | None:
        if not self.extra:
            return None
        clip = int(rng.choice(len(self.extra), p=self.extra_weights))
        return self.patch_anywhere(self.extra[clip][None], rng)[0], self.extra_bands[clip]

    def __getitem__(self, i: int) -> Item:
        """Patch i of its track's sources, through the augmentation steps; mixing and normalization
        are done per batch, in `collate`."""
        t, start = self.patch_start(i, self.rng)
        item = Item(self.patch(self.specs[t], start), torch.ones(len(self.specs[t]), 1), t)
        for step in self.steps:
            item = step(item, self, self.rng)
        return item

    def collate(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of (mixture, vocals) complex spectra (batch, C, bins, frames): the mixture is the sum
        of the gained sources; both divided by the normalization scale of the mixture's magnitude as
        the network sees it (the channels' mean)."""
        sources = torch.stack([item.sources for item in items]).float()  # (B, sources, C, 2 re/im, bins, T)
        gains = torch.stack([item.gains for item in items])[:, :, None, :, None]  # (B, sources, 1, 1 or bins, 1)
        sources = torch.complex(sources[:, :, :, 0], sources[:, :, :, 1]) * gains  # (B, sources, C, bins, T)
        vocals = sources[:, 0]  # (B, C, bins, T)
        mix = sources.sum(1)  # (B, C, bins, T): complex sum = STFT of the sum
        _, scale = normalize_patches(mix.abs().mean(1, keepdim=True), self.audio.normalization)  # (B, 1, 1, 1)
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
    args, cfg = parser.parse_args(), Config()
    for name, tracks in zip(("train", "valid"), train_valid_tracks(args.dataset, args.root, args.is_wav, cfg.train)):
        print(f"{name}: {len(tracks)} tracks, {len(PatchDataset(tracks, cfg)) if tracks else 0} patches")


if __name__ == "__main__":
    run_script(main)
