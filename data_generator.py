"""Songs -> spectrograms -> normalized 128-frame patches of mixture and vocals.

The songs are a dataset's tracks (tracks.py), their spectra computed once per track
(spectra.py); `PatchDataset` cuts training patches from them, passes each through the steps
of augment.py and mixes and normalizes them per batch. `to_patches` cuts patches for
separation too (audio.normalize_patches scales them).

    python data_generator.py --dataset demo   # builds data/demo and prints patch counts
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from audio import normalize_patches
from augment import Item, augmentations, vocal_copies
from config import Config, run_script
from spectra import TrackSpectra
from tracks import Track, load_tracks, train_valid_tracks

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


# ---------------------------------------------------------------- training patches


class PatchDataset(Dataset):
    """Training patches: batches (`collate`) of normalized (mixture, vocals) complex spectra, each
    (batch, C, bins, patch_frames), C = 1 (the channels' mean, or each channel a track of its
    own) or 2 (`train.channels=stereo`), cut from each track's spectra (`spectra.TrackSpectra`:
    in memory, or memory-mapped from `cache`). With `remix`, items pass the steps of
    `augment.augmentations`, drawing on altered copies of the vocals (pitch shifts, time
    stretches) and on the vocals of `train.extra_vocals` (MIR-1K's training singers) where given."""

    def __init__(self, tracks: list[Track], cfg: Config, remix: bool = False, cache: Path | None = None) -> None:
        self.audio = cfg.audio
        self.random_offsets = remix and cfg.train.random_offsets
        self.steps = augmentations(cfg.train) if remix else []
        # how a track's channels become training views: "each" (a view per channel) only with remix,
        # validation stays on the mean; "stereo" both ways (the network reads both channels)
        channels = cfg.train.channels if remix or cfg.train.channels == "stereo" else "mean"
        spectra = TrackSpectra(cfg.audio, remix and cfg.train.remix_stems, channels,
                               vocal_copies(cfg.train) if remix else (), cache)
        self.specs: list[np.ndarray] = []  # per view: (sources, C, 2 re/im, bins, frames) float16, maybe memory-mapped
        self.altered: list[list[np.ndarray]] = []  # per view: (1, C, 2 re/im, bins, frames) per copy of its vocals
        self.index: list[tuple[int, int]] = []  # (track, first frame) of each patch
        self.hop = cfg.audio.patch_hop(cfg.train.patch_overlap)
        for track in tracks:
            spec, *altered = spectra.of(track)
            starts = range(0, max(1, spec.shape[-1] - cfg.audio.patch_frames + self.hop), self.hop)
            for view in range(len(spec)):  # the channels' mean, or each channel a track of its own
                self.index.extend((len(self.specs), s) for s in starts)
                self.specs.append(spec[view])
                self.altered.append([a[view] for a in altered])
        extra = load_tracks("mir1k", cfg.train.extra_vocals, "train") if remix and cfg.train.extra_vocals else []
        vocals = [spectra.mono_vocals(track) for track in extra]
        self.extra = [spec for spec, _ in vocals]  # per clip of `train.extra_vocals`: (1, 2 re/im, bins, frames)
        self.extra_bands = [band for _, band in vocals]  # the bins each clip's recording holds
        frames = np.array([spec.shape[-1] for spec in self.extra], dtype=float)
        self.extra_weights = frames / max(frames.sum(), 1)  # each clip drawn by its length: every patch as likely
        self.rng = np.random.default_rng(cfg.train.seed)

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
