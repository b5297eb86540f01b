"""Training augmentations: small steps, each changing one thing about a training item, applied
in the order `augmentations` lists them (what the patch holds first, then its levels and timbre):

1. `AlteredVocals`: the vocals from a pitch-shifted or time-stretched copy of the track's own
   (`vocal_copies`, computed once per track by `altered_vocals`);
2. `RemixSources`: each source but the vocals from a random place of a random other track;
3. `ExtraVocals`: the vocals from another collection (MIR-1K's singers), the whole item cut to
   that collection's band;
4. `SwapChannels`: with both channels (`train.channels=stereo`), left and right swapped per source;
5. `RandomGains`: a gain per source;
6. `Equalizer`: a smooth random equalizer per source.

An `Item` is a patch of a track's sources as complex spectra (vocals first; one channel, or
two) and a gain per source (and bin); `PatchDataset.collate` forms the mixture, their gained
sum, per batch. Mixing complex spectra equals the STFT of the mixed waveforms, so no STFT
runs per item.

    steps = augmentations(cfg.train)
    for step in steps:
        item = step(item, dataset, rng)   # dataset: where other patches come from (a PatchPool)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from audio import STFT, resample
from config import AudioConfig, TrainConfig


@dataclass
class Item:
    """One training item: `sources` (sources, C, 2 re/im, bins, frames) float16, vocals first;
    `gains` (sources, 1 or bins) float32; `track`, the track it was drawn from (whose altered
    vocals `AlteredVocals` takes)."""

    sources: torch.Tensor
    gains: torch.Tensor
    track: int


class PatchPool(Protocol):
    """What the steps draw other material from (PatchDataset)."""

    def random_patch(self, source: int, rng: np.random.Generator) -> torch.Tensor:
        """(C, 2 re/im, bins, frames): a patch of that source from a random track and place."""

    def altered_patch(self, track: int, rng: np.random.Generator) -> torch.Tensor | None:
        """(C, 2 re/im, bins, frames): a random patch of a random altered copy of the track's
        vocals, or None when it has none."""

    def extra_vocal_patch(self, rng: np.random.Generator) -> tuple[torch.Tensor, int] | None:
        """(1, 2 re/im, bins, frames) of the extra vocals (`train.extra_vocals`, one channel: the
        same in both of a stereo item) at a random place, and the bins their recording holds;
        None when there are none."""


@dataclass
class AlteredVocals:
    """With probability `prob`, the vocals from an altered copy of the track's own."""

    prob: float

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        if rng.random() < self.prob:
            altered = pool.altered_patch(item.track, rng)
            if altered is not None:
                item.sources[0] = altered
        return item


@dataclass
class RemixSources:
    """With probability `prob` for each, every source but the vocals replaced by a patch of the
    same source from a random track and place: voices over accompaniments they never met."""

    prob: float

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        for source in range(1, len(item.sources)):
            if rng.random() < self.prob:
                item.sources[source] = pool.random_patch(source, rng)
        return item


@dataclass
class ExtraVocals:
    """With probability `prob`, the vocals from the extra collection (`train.extra_vocals`), and
    every source cut to the bins that collection's recordings hold: the item is what a recording
    at its rate would be, so the loss has nothing above its band to learn from (masked silence
    is silence), and the voices do not teach that a voice stops there."""

    prob: float

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        if rng.random() < self.prob:
            drawn = pool.extra_vocal_patch(rng)
            if drawn is not None:
                item.sources[0], band = drawn
                item.sources[..., band:, :] = 0
        return item


@dataclass
class SwapChannels:
    """With probability `prob` for each source, its left and right channels swapped: a source
    panned left is as likely as one panned right, and remixed sources sit anywhere in the field."""

    prob: float = 0.5

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        for source in range(len(item.sources)):
            if rng.random() < self.prob:
                item.sources[source] = item.sources[source].flip(0)  # (C, 2, bins, T): channels reversed
        return item


@dataclass
class RandomGains:
    """Each source's gain multiplied by one drawn uniformly from [low, high]."""

    low: float
    high: float

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        drawn = rng.uniform(self.low, self.high, size=(len(item.sources), 1)).astype(np.float32)
        item.gains = item.gains * torch.from_numpy(drawn)
        return item


@dataclass
class Equalizer:
    """A random equalizer per source: gains in dB drawn within +-`db` at `anchors` frequencies
    spread evenly in octaves (from the first bin above 0 Hz to the top one) and interpolated
    between them, so each curve is smooth: a change of timbre, not a comb. A gain per bin of a
    complex spectrum is what a filter much shorter than the STFT window does to the waveform."""

    db: float
    anchors: int = 8

    def __call__(self, item: Item, pool: PatchPool, rng: np.random.Generator) -> Item:
        bins = item.sources.shape[-2]
        octaves = np.log2(np.maximum(np.arange(bins), 1))  # (bins,): bin 0 (DC) shares bin 1's gain
        at = np.linspace(0, octaves[-1], self.anchors)  # (anchors,)
        db = rng.uniform(-self.db, self.db, size=(len(item.sources), self.anchors))
        curves = np.stack([np.interp(octaves, at, row) for row in db])  # (sources, bins)
        item.gains = item.gains * torch.from_numpy((10 ** (curves / 20)).astype(np.float32))
        return item


Step = AlteredVocals | RemixSources | ExtraVocals | SwapChannels | RandomGains | Equalizer


def augmentations(train: TrainConfig) -> list[Step]:
    """The steps `train` asks for, in their order (none without `train.remix`)."""
    if not train.remix:
        return []
    steps: list[Step] = []
    if vocal_copies(train):
        steps.append(AlteredVocals(train.pitch_prob))
    steps.append(RemixSources(train.remix_prob))
    if train.extra_vocals:  # after the remix, which brings full-band sources it must cut
        steps.append(ExtraVocals(train.extra_vocals_prob))
    if train.channels == "stereo":
        steps.append(SwapChannels())
    steps.append(RandomGains(*train.gain_range))
    if train.eq_db:
        steps.append(Equalizer(train.eq_db))
    return steps


def vocal_copies(train: TrainConfig) -> tuple[tuple[str, float], ...]:
    """The altered copies of each training track's vocals that remixing draws from: ("shift",
    semitones) per `train.pitch_shifts`, then ("stretch", tempo factor) per `train.time_stretches`."""
    return tuple(("shift", s) for s in train.pitch_shifts) + tuple(("stretch", f) for f in train.time_stretches)


def altered_vocals(vocals: np.ndarray, rate: int, kind: str, amount: float, audio: AudioConfig) -> np.ndarray:
    """(1, samples) vocals -> (1, samples'): pitch-shifted ("shift", semitones: resampled, so higher
    and shorter or lower and longer, like a tape played faster or slower) or time-stretched
    ("stretch", tempo factor: `time_stretch`)."""
    if kind == "stretch":
        return time_stretch(vocals, rate, amount, audio)
    # a shift: the vocals' samples taken as played at rate * 2^(shift / 12), brought back to rate
    return resample(vocals, round(rate * 2 ** (amount / 12)), rate)


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

