"""Songs: the tracks of a dataset, read on demand.

Datasets (all behind `load_tracks`):
    musdb  MUSDB18 (.stem.mp4, needs ffmpeg) or MUSDB18-HQ (--is-wav) through `musdb`
    mir1k  a MIR-1K folder (Wavfile/*.wav: left = accompaniment, right = vocals)
    stems  your own songs: ROOT/{train,test}/<song>/{mixture,vocals}.wav
    demo   a small SYNTHETIC set (not music; demo_data.py), so that the project runs offline

    train, valid = train_valid_tracks("musdb", "~/musdb18", False, cfg.train)
    mixture, vocals, rate = train[0].load()
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from audio import header_seconds, read_audio
from config import InputError, TrainConfig
from demo_data import make_demo

MIR1K_TRAIN_SINGERS = ("abjones", "amy")



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
    """Training and validation tracks: MUSDB's official split where it has one; with
    `train.all_tracks` the validation tracks are among the training tracks too."""
    valid: list[Track] = []
    if dataset == "musdb":
        train = load_tracks(dataset, root, "train", is_wav, split="train")
        with contextlib.suppress(InputError):
            valid = load_tracks(dataset, root, "train", is_wav, split="valid")
    else:
        train = load_tracks(dataset, root, "train", is_wav)
    if not valid:
        train, valid = split_validation(train, cfg.valid_tracks)
    return (train + valid if cfg.all_tracks else train), valid
