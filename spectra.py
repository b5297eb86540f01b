"""Training spectra: what a training track's sources become before patches are cut from them.

Each track is read once; each of its sources (vocals and accompaniment, or with
`train.remix_stems` each stem) is transformed at the track's own rate (`audio.STFT`, the
model's band) for each view of its channels (their mean, each channel, or both together) and
kept as float16 complex spectra, 4 bytes per bin, frame, channel and source: in memory, or
written once to a cache folder and memory-mapped (`spectra_key` names a track's files there).
Beside them, the altered copies of the vocals the augmentations draw from (`augment.vocal_copies`).

    spectra = TrackSpectra(cfg.audio, stems=True, channels="each", copies=vocal_copies(cfg.train))
    sources, *altered = spectra.of(track)   # (views, sources, C, 2 re/im, bins, frames) each
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from audio import STFT
from augment import altered_vocals
from config import AudioConfig, InputError
from outputs import atomic_path
from tracks import Track


class TrackSpectra:
    """The training spectra of tracks, as `audio` shapes them: `stems` (a track's own stems as
    sources, where it keeps them apart), `channels` ("mean", "each" or "stereo": the views of a
    track's channels), `copies` ((kind, amount) of each altered copy of the vocals) and `cache`
    (a folder to memory-map them from; None: in memory)."""

    def __init__(self, audio: AudioConfig, stems: bool = False, channels: str = "mean",
                 copies: tuple[tuple[str, float], ...] = (), cache: Path | None = None) -> None:
        self.audio, self.stems, self.channels, self.copies, self.cache = audio, stems, channels, copies, cache

    def mono_vocals(self, track: Track) -> tuple[np.ndarray, int]:
        """A track's vocals (channels' mean) as spectra (1 channel, 2 re/im, bins, frames) float16
        for `augment.ExtraVocals`, and the bins its recording holds (a 16 kHz clip on the MUSDB18
        recipe's grid: 513 of 1024, up to 8 kHz)."""
        _, vocals, rate = track.load()
        return self.spectrogram(vocals.mean(0)[None, None], rate)[0], STFT(self.audio, rate).held_bins

    def computed(self, track: Track) -> list[np.ndarray]:
        """The track's spectra from one load: its sources (views, sources, C, 2 re/im, bins,
        frames) float16, the model's band of the STFTs of vocals and accompaniment (or, with
        `train.remix_stems`, of each of the track's stems); then (views, 1, C, 2, bins, frames)
        per altered copy of the vocals (`copies`); the views are `views`'."""
        if self.stems and track.stems is not None:
            stems, rate = track.stems()  # (sources, channels, samples), vocals first
        else:
            mixture, vocals, rate = track.load()
            stems = np.stack([vocals, mixture - vocals])  # (2, channels, samples)
        views = self.views(stems, track.name)
        return [np.stack([self.spectrogram(sources, rate) for sources in views])] + [
            np.stack([self.spectrogram(altered_vocals(sources[0], rate, kind, amount, self.audio)[None], rate)
                      for sources in views]) for kind, amount in self.copies]

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

    def of(self, track: Track) -> list[np.ndarray]:
        """`computed`, or with a cache memory-mapped from it, written there first where absent."""
        cache = self.cache
        key = spectra_key(track, self.audio, self.stems and track.stems is not None, self.channels) if cache else None
        if cache is None or key is None:
            return self.computed(track)
        paths = [cache / f"{key}.npy"] + [cache / f"{key}-{kind}{amount:+g}.npy" for kind, amount in self.copies]
        if not all(path.exists() for path in paths):
            try:
                cache.mkdir(parents=True, exist_ok=True)
                for path, spec in zip(paths, self.computed(track)):
                    if not path.exists():
                        with atomic_path(path) as tmp, open(tmp, "wb") as f:  # torchrun ranks may write it at once
                            np.save(f, spec)
            except OSError as err:
                raise InputError(f"{cache}: cannot write the spectra cache ({err.strerror})") from None
        return [np.load(path, mmap_mode="r") for path in paths]


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
