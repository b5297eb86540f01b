"""Separation: a trained model applied to audio of any length, rate and channel count.

The one place where a model meets a song, used by inference.py (files) and evaluate.py
(test sets). The STFT runs at the input's own rate (`STFT`); the model masks its band of
the channels' mean magnitude (or of each channel), patch by patch with overlapping
patches blended; the mask is extended over the full band (`extend_mask`); long songs
stream in chunks read from the patch grid and cross-faded, so memory stays flat and the
result equals separating the song in one piece away from the cross-fades.

    model, cfg = load_separator(None, "auto", [])        # checkpoints/best.pt, else the shipped model
    vocals = separate_array(model, cfg, audio, rate)    # (channels, samples) -> (channels, samples)
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from audio import STFT, channel_mean, magnitude, squared_magnitude
from backends import Network, as_network, load_network
from config import REPO, Config, InputError
from data_generator import patch_padding, to_patches
from devices import pick_device
from outputs import partial_path
from unet_model import UNet, network_input

SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"}
CHUNK_SECONDS = 30.0
FADE_SECONDS = 0.5
TRAINED = Path("checkpoints") / "best.pt"
SHIPPED = REPO / "pretrained" / "unet-musdb.pt"  # real songs: trained on MUSDB18's stems, up to 16 kHz
SHIPPED_MIR1K = REPO / "pretrained" / "unet-mir1k.pt"  # the MIR-1K protocol: trained on its two singers


def default_checkpoint(dataset: str | None = None) -> Path:
    """checkpoints/best.pt when a model has been trained here, else the shipped model for the
    material: the MIR-1K model for MIR-1K (its protocol), the MUSDB18 model for songs."""
    if TRAINED.is_file():
        return TRAINED
    return SHIPPED_MIR1K if dataset == "mir1k" else SHIPPED


def predict_mask(model: UNet | Network, spec: torch.Tensor, cfg: Config, transform: STFT) -> torch.Tensor:
    """Vocal mask (views, bins, frames) for the model's band of spectrograms (views, C, bins,
    frames), each view C channels the network reads together (`network_input`): magnitudes,
    or complex where the network reads the phase (`model.side_input`, `model.inst_frequency`;
    `transform`'s hop and FFT size tell `network_input` a bin's phase advance).

    The spectrogram is cut into patches overlapping by `separation.patch_overlap`; the masks
    of the patches that cover a frame are blended (`from_patches`).
    """
    patch, hop = cfg.audio.patch_frames, cfg.audio.patch_hop(cfg.separation.patch_overlap)
    patches = to_patches(spec, patch, hop).movedim(-3, 1)  # (V, C, n, bins, patch) -> (V, n, C, bins, patch)
    masks = patch_masks(model, patches.flatten(0, 1), cfg, transform)  # (V*n, 1, bins, patch)
    masks = masks.reshape(*patches.shape[:2], *masks.shape[-2:])  # (V, n, bins, patch)
    return from_patches(masks, hop, spec.shape[-1], cfg.separation.blend)  # (V, bins, frames)


def patch_masks(model: UNet | Network, patches: torch.Tensor, cfg: Config, transform: STFT) -> torch.Tensor:
    """Vocal masks (n, 1, bins, patch) of patches (n, C, bins, patch) as the STFT gives them, in
    batches of `separation.batch_size` through the network (which normalizes each patch): the
    mean of the masks of the network's input shifted up by each of `separation.bin_shifts` bins."""
    network = as_network(model, cfg)
    masks = torch.zeros(len(patches), 1, *patches.shape[-2:])  # (n, 1, bins, patch)
    batch, shifts = cfg.separation.batch_size, cfg.separation.bin_shifts
    for i in range(0, len(patches), batch):
        features = network_input(patches[i:i + batch], transform, cfg.model)  # (b, F, bins, patch)
        for shift in shifts:
            masks[i:i + batch] += unshift_bins(network(shift_bins(features, shift)), shift)
    return masks / len(shifts)


def shift_bins(x: torch.Tensor, shift: int) -> torch.Tensor:
    """(..., bins, T) moved up by `shift` bins: zeros below, the top `shift` bins dropped."""
    if shift == 0:
        return x
    return torch.cat([torch.zeros_like(x[..., :shift, :]), x[..., :-shift, :]], dim=-2)


def unshift_bins(mask: torch.Tensor, shift: int) -> torch.Tensor:
    """The mask (..., bins, T) of an input `shift_bins` moved, back on the input's bins (the top
    `shift` bins, which the network did not see, take the row below them)."""
    if shift == 0:
        return mask
    return torch.cat([mask[..., shift:, :], mask[..., -1:, :].expand(*mask.shape[:-2], shift, -1)], dim=-2)


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


def soft_mask(mask: torch.Tensor, power: float) -> torch.Tensor:
    """Sharpen the vocal mask against its complement (power 1: unchanged)."""
    if power == 1.0:
        return mask
    vocal, rest = mask.pow(power), (1 - mask).pow(power)
    return vocal / (vocal + rest).clamp_min(1e-8)


def extend_mask(mask: torch.Tensor, spec: torch.Tensor, rule: str = "top-octave") -> torch.Tensor:
    """The model's mask (1 or C, model_bins, frames) over every bin of `spec` (C, bins, frames).

    Below the model's band: unchanged. Above it (inputs at rates above the model's), every
    bin of a frame takes one value, the frame's row from `HIGH_BAND[rule]`. The default,
    "top-octave", is the vocal share of the energy in the top octave of the model's band,
    sum(mask * |X|^2) / sum(|X|^2): when the model hears voice near the top of its band, the
    sibilants and air above it go with the vocals. At or below the model's rate: the mask
    cut to the input's bins.
    """
    bins, model_bins = spec.shape[-2], mask.shape[-2]
    if bins <= model_bins:
        return mask[..., :bins, :]
    row = HIGH_BAND[rule](mask, spec)  # (1 or C, frames)
    high = row.unsqueeze(-2).expand(-1, bins - model_bins, -1)  # (1 or C, bins - model_bins, frames)
    return torch.cat([mask, high], dim=-2)  # (1 or C, bins, frames)


def voicing_share(mask: torch.Tensor, spec: torch.Tensor, first_bin: int) -> torch.Tensor:
    """Per frame, the vocal share of the energy in the model's bins from `first_bin` up:
    sum(mask * |X|^2) / sum(|X|^2) -> (1 or C, frames); one mask for every channel uses their
    mean power."""
    energy = squared_magnitude(spec[:, first_bin: mask.shape[-2]])  # (C, bins used, frames): |X|^2
    if mask.shape[0] == 1:
        energy = channel_mean(energy, 0)
    return (mask[:, first_bin:] * energy).sum(-2) / energy.sum(-2).clamp_min(1e-12)


# `separation.high_band`: the mask of every bin above the model's band, per frame, from the
# model's mask (1 or C, model_bins, frames) and the spectrogram -> (1 or C, frames).
# benchmarks/fullband.py measures them; "none" keeps the vocals within the model's band.
HIGH_BAND: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "top-octave": lambda mask, spec: voicing_share(mask, spec, mask.shape[-2] // 2),
    "whole-band": lambda mask, spec: voicing_share(mask, spec, 0),
    "top-bins": lambda mask, spec: mask[:, -32:].mean(-2),
    "top-bin": lambda mask, spec: mask[:, -1],
    "none": lambda mask, spec: torch.zeros_like(mask[:, -1]),
}


def full_band_mask(model: UNet | Network, cfg: Config, transform: STFT, spec: torch.Tensor) -> torch.Tensor:
    """The vocal mask (1 or C, bins, frames) over every bin of `spec` (C, bins, frames, complex):
    the model's mask of `mask_views` (`predict_mask`), then `finish_mask`."""
    views = mask_views(spec, cfg, transform)  # (1 or C, C or 1, model_bins, frames)
    return finish_mask(predict_mask(model, views, cfg, transform), spec, cfg)  # (1 or C, bins, frames)


def mask_views(spec: torch.Tensor, cfg: Config, transform: STFT) -> torch.Tensor:
    """What the network reads of the model's band of `spec` (C, bins, frames) complex: one view
    of all channels ("shared": the network reads their mean magnitude, and their side or phase
    where it reads those) or a view per channel ("each") -> (views, C or 1, model_bins, frames)."""
    held = spec[..., :transform.held_bins, :]  # (C, held bins, frames)
    views = held[None] if cfg.separation.stereo == "shared" else held[:, None]  # (1, C, ...) or (C, 1, ...)
    if not (cfg.model.side_input or cfg.model.inst_frequency):  # the channels' mean magnitude is all it reads
        views = channel_mean(magnitude(views), 1)  # (1 or C, 1, held bins, frames): real, half the bytes
    return transform.model_band(views)  # scaled to the model's STFT after the magnitude: it commutes


def finish_mask(mask: torch.Tensor, spec: torch.Tensor, cfg: Config) -> torch.Tensor:
    """The model's mask (1 or C, model_bins, frames) of the frames of `spec` (C, bins, frames),
    sharpened by `mask_power`, extended above the model's band by the rule `high_band`
    (`extend_mask`), and from `high_mask_hz` up raised to `high_mask_power`: frame by frame,
    so a stream finishes each frame once its mask is known."""
    mask = soft_mask(mask, cfg.separation.mask_power)
    mask = extend_mask(mask, spec, cfg.separation.high_band)  # (1 or C, bins, frames)
    if cfg.separation.high_mask_power == 1.0:
        return mask
    first = cfg.audio.bin_at(cfg.separation.high_mask_hz)  # every rate's STFT has the model's bin width
    return torch.cat([mask[..., :first, :], mask[..., first:, :].pow(cfg.separation.high_mask_power)], dim=-2)


def separate_block(model: UNet | Network, cfg: Config, audio: np.ndarray, rate: int,
                   views: dict[str, Any] | None = None) -> np.ndarray:
    """Vocals (channels, samples) of one block of audio at its own rate.

    One STFT at the input's rate (`STFT`: no resampling); the model's mask over the full band
    (`full_band_mask`: with "shared" one mask serves every channel, one network pass) is
    applied to the channels. If `views` is given, it receives the block's magnitude, mask
    and vocal magnitude (first channel).
    """
    transform = STFT(cfg.audio, rate)
    x = torch.from_numpy(audio)  # (C, samples)
    spec = transform(x)  # (C, bins, frames) complex
    mask = full_band_mask(model, cfg, transform, spec)  # (1 or C, bins, frames)
    vocals = transform.inverse(spec * mask, x.shape[-1])  # (C, samples)
    if views is not None:
        views.update(mixture=spec[:1].abs(), mask=mask[:1], vocals=(spec[:1] * mask[:1]).abs(),
                     seconds=x.shape[-1] / rate, rate=rate, hop=transform.hop, n_fft=transform.n_fft)
    return vocals.numpy()


def chunk_bounds(length: int, rate: int, cfg: Config) -> tuple[list[int], int, int, int]:
    """Chunk boundaries over [0, length), and the context, cross-fade and patch grid (in samples)."""
    patch_seconds = cfg.audio.patch_frames * cfg.audio.hop_length / cfg.audio.sample_rate
    context = int((patch_seconds + FADE_SECONDS) * rate)
    fade = int(FADE_SECONDS * rate)
    chunk = int(max(CHUNK_SECONDS, 4 * patch_seconds) * rate)
    n = max(1, round(length / chunk))
    grid = STFT(cfg.audio, rate).hop * cfg.audio.patch_hop(cfg.separation.patch_overlap)
    return np.linspace(0, length, n + 1).round().astype(int).tolist(), context, fade, grid


def separate_stream(model: UNet | Network, cfg: Config, read: Callable[[int, int], np.ndarray], length: int,
                    rate: int, views: dict[str, Any] | None = None,
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield consecutive (mixture, vocals) pieces that together cover samples [0, length).

    Each chunk is separated with at least `context` samples of audio on both sides, read
    from a multiple of the patch grid, so that its frames and patches are those of the
    whole song: away from the cross-fades (2 * `fade` samples around each boundary) the
    result equals separating the song in one piece.
    """
    bounds, context, fade, grid = chunk_bounds(length, rate, cfg)
    network = as_network(model, cfg)  # once: a torch model's bfloat16 copy is made here
    ramp = np.linspace(0.0, 1.0, 2 * fade, dtype=np.float32)
    tail = None
    for start, stop in itertools.pairwise(bounds):
        a, b = max(0, (start - context) // grid * grid), min(length, stop + context)
        mix = read(a, b)
        vocals = separate_block(network, cfg, mix, rate, views if start == 0 else None)
        if tail is not None:
            blend = slice(start - fade - a, start + fade - a)
            yield mix[:, blend], tail * (1 - ramp) + vocals[:, blend] * ramp
        keep = slice(start - a + (fade if start > 0 else 0), stop - a - (fade if stop < length else 0))
        yield mix[:, keep], vocals[:, keep]
        tail = vocals[:, stop - fade - a: stop + fade - a] if stop < length else None


def separate_array(model: UNet | Network, cfg: Config, audio: np.ndarray, rate: int) -> np.ndarray:
    """Vocals (channels, samples) of a whole song held in memory."""
    pieces = separate_stream(model, cfg, lambda a, b: audio[:, a:b], audio.shape[1], rate)
    return np.concatenate([vocals for _, vocals in pieces], axis=1)


def stream_latency(transform: STFT, patch: int, hop: int) -> int:
    """Samples from a sample's arrival to the moment its vocals are final in `StreamSeparator`:
    its last frame's mask waits for the last patch that covers that frame, and the patch for its
    own last frame's samples. The wait repeats with each patch hop; its longest is the latency."""
    n_fft, step, left = transform.n_fft, transform.hop, patch - hop
    s = np.arange(hop * step)  # one period of the patch grid, in samples
    last_frame = (s + n_fft // 2) // step  # the last frame whose window holds sample s
    last_patch = (last_frame + left) // hop  # the last patch that covers that frame
    needed = (last_patch * hop - left + patch - 1) * step + n_fft - n_fft // 2  # samples it needs
    return int((needed - s - 1).max())


def overlap_add(total: torch.Tensor, envelope: torch.Tensor, frames: torch.Tensor, window: torch.Tensor,
                step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Add windowed frames (C, n_fft, k), `step` apart from sample 0, to a running sum (C, n) and
    its squared-window envelope (n,), both grown to hold them: the inverse STFT's overlap-add."""
    n_fft = frames.shape[-2]
    grow = max(0, (frames.shape[-1] - 1) * step + n_fft - envelope.shape[0])
    total, envelope = torch.nn.functional.pad(total, (0, grow)), torch.nn.functional.pad(envelope, (0, grow))
    for j in range(frames.shape[-1]):
        total[:, j * step:j * step + n_fft] += frames[..., j]
        envelope[j * step:j * step + n_fft] += window.square()
    return total, envelope


class StreamSeparator:
    """Live separation: blocks of samples (any size) in, blocks of vocals and accompaniment of the
    same size out, `latency` samples late (zeros first); `flush()` at the end gives the last
    `latency` samples. Each STFT frame, patch mask and inverse-STFT frame is computed once, on
    the grid of the whole stream, so the output less its first `latency` samples equals
    separating the stream in one piece. The latency (`stream_latency`, about one patch: 2.1 s for
    the shipped model at 44.1 kHz) does not depend on the block size.

        stream = StreamSeparator(network, cfg, 44100, 2)
        vocals, accompaniment = stream.process(block)   # block: (channels, samples) float32
    """

    def __init__(self, model: UNet | Network, cfg: Config, rate: int, channels: int) -> None:
        self.network, self.cfg, self.channels = as_network(model, cfg), cfg, channels
        self.transform = transform = STFT(cfg.audio, rate)
        self.patch, self.hop = cfg.audio.patch_frames, cfg.audio.patch_hop(cfg.separation.patch_overlap)
        self.left = self.patch - self.hop  # the zero frames before frame 0 (`patch_padding`)
        self.weight = blend_window(self.patch, self.hop, cfg.separation.blend)
        self.window, self.latency = torch.hann_window(transform.n_fft), stream_latency(transform, self.patch, self.hop)
        half = transform.n_fft // 2
        self.audio = torch.zeros(channels, half)  # input from the next frame's first sample: the centred STFT's zeros
        self.mixture = torch.zeros(channels, self.latency)  # the input, `latency` late
        self.spec, self.spec_at = torch.zeros(channels, half + 1, self.left, dtype=torch.complex64), -self.left
        views = 1 if cfg.separation.stereo == "shared" else channels  # the blended masks and their weights:
        self.masks, self.norm = torch.zeros(views, transform.model_bins, 0), torch.zeros(0)  # all from `spec_at`
        self.sum, self.envelope = torch.zeros(channels, 0), torch.zeros(0)  # overlap-add, samples from `vocals_end`
        self.vocals = torch.zeros(channels, 0)  # final vocals not yet given, up to sample `vocals_end`
        self.vocals_end, self.received, self.given, self.patches = -half, 0, 0, 0

    def process(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(channels, n) float32 -> vocals, accompaniment (channels, n), `latency` samples late."""
        if block.ndim != 2 or block.shape[0] != self.channels:
            raise InputError(f"a block of shape {block.shape}: expected ({self.channels} channels, samples)")
        x = torch.from_numpy(np.asarray(block, dtype=np.float32))
        self.audio, self.mixture = torch.cat([self.audio, x], 1), torch.cat([self.mixture, x], 1)
        self.received += x.shape[1]
        self.advance((self.audio.shape[1] - self.transform.n_fft) // self.transform.hop + 1)
        return self.give(x.shape[1])

    def flush(self) -> tuple[np.ndarray, np.ndarray]:
        """The stream has ended: its last `latency` samples of vocals and accompaniment."""
        frames = self.received // self.transform.hop + 1  # the whole stream's centred STFT frames
        self.audio = torch.nn.functional.pad(self.audio, (0, self.transform.n_fft))  # zeros after the end
        self.advance(frames - self.spec_at - self.spec.shape[-1], last=None)
        self.spec = torch.nn.functional.pad(self.spec, (0, patch_padding(frames, self.patch, self.hop)[1]))
        self.advance(0, last=frames)
        self.vocals = torch.cat([self.vocals, self.sum / self.envelope.clamp_min(1e-11)], 1)  # no frame follows
        return self.give(self.latency)

    def advance(self, frames: int, last: int | None = None) -> None:
        """STFT the next `frames` frames, mask every patch they complete, and overlap-add the frames
        whose mask no later patch changes (at the stream's end: every frame before `last`)."""
        n_fft, step = self.transform.n_fft, self.transform.hop
        if frames > 0:
            new = torch.stft(self.audio[:, :(frames - 1) * step + n_fft], n_fft, step, window=self.window,
                             center=False, return_complex=True)  # (C, bins, frames)
            self.spec, self.audio = torch.cat([self.spec, new], -1), self.audio[:, frames * step:]
        while self.patches * self.hop - self.left + self.patch <= self.spec_at + self.spec.shape[-1]:
            self.add_patch()
        self.finish_frames(self.patches * self.hop - self.left if last is None else last)

    def add_patch(self) -> None:
        """Mask the next patch of the grid and blend it in, as `from_patches` does a whole song's."""
        first = self.patches * self.hop - self.left - self.spec_at
        views = mask_views(self.spec[..., first:first + self.patch], self.cfg, self.transform)
        mask = patch_masks(self.network, views, self.cfg, self.transform)[:, 0]  # (views, model_bins, patch)
        grow = first + self.patch - self.norm.shape[0]
        self.masks, self.norm = (torch.nn.functional.pad(t, (0, grow)) for t in (self.masks, self.norm))
        self.masks[..., first:first + self.patch] += mask * self.weight  # (views, model_bins, patch)
        self.norm[first:first + self.patch] += self.weight
        self.patches += 1

    def finish_frames(self, end: int) -> None:
        """Overlap-add the vocals of the frames before `end` (the padding before frame 0 adds
        nothing), as the inverse STFT does; the samples no later frame reaches become final."""
        count, skip = end - self.spec_at, max(0, -self.spec_at)
        if count <= skip:
            return
        step, n_fft = self.transform.hop, self.transform.n_fft
        spec = self.spec[..., skip:count]  # (C, bins, frames)
        mask = finish_mask(self.masks[..., skip:count] / self.norm[skip:count], spec, self.cfg)
        frames = torch.fft.irfft(spec * mask, n=n_fft, dim=-2) * self.window[:, None]  # (C, n_fft, frames)
        self.sum, self.envelope = overlap_add(self.sum, self.envelope, frames, self.window, step)
        done = frames.shape[-1] * step  # the next frame starts there
        self.vocals = torch.cat([self.vocals, self.sum[:, :done] / self.envelope[:done].clamp_min(1e-11)], 1)
        self.sum, self.envelope, self.vocals_end = self.sum[:, done:], self.envelope[done:], self.vocals_end + done
        self.vocals = self.vocals[:, max(0, self.vocals.shape[1] - self.vocals_end):]  # samples before 0: padding
        self.spec, self.masks, self.norm = self.spec[..., count:], self.masks[..., count:], self.norm[count:]
        self.spec_at += count

    def give(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next n output samples: the vocals `latency` late (zeros before the stream's first),
        and the delayed input less them."""
        lead = min(n, max(0, self.latency - self.given))
        vocals, self.vocals = self.vocals[:, :n - lead], self.vocals[:, n - lead:]
        assert vocals.shape[1] == n - lead, "stream_latency is shorter than the wait for final vocals"
        vocals = torch.nn.functional.pad(vocals, (lead, 0))
        mixture, self.mixture = self.mixture[:, :n], self.mixture[:, n:]
        self.given += n
        return vocals.numpy(), (mixture - vocals).numpy()


class OutputFiles:
    """vocals and accompaniment written to temporary names, renamed only on success.

        with OutputFiles(folder, rate, channels, "wav", "32f") as out:
            out.write(mixture, vocals)   # any number of times
        out.final                        # the two paths, complete
    """

    def __init__(self, folder: Path, rate: int, channels: int, fmt: str, bits: str) -> None:
        if fmt == "flac" and bits == "32f":
            raise InputError("flac stores 16 or 24 bits; use --bits 16 or 24 (or --format wav)")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise InputError(f"{folder}: cannot create output folder ({err.strerror})") from None
        self.final = [folder / f"{name}.{fmt}" for name in ("vocals", "accompaniment")]
        self.tmp = [partial_path(p) for p in self.final]
        self.pcm = bits != "32f"
        try:
            self.files = [sf.SoundFile(str(p), "w", rate, channels, SUBTYPES[bits], format=fmt.upper())
                          for p in self.tmp]
        except (sf.SoundFileError, RuntimeError, OSError) as err:
            self.discard()
            raise InputError(f"{folder}: cannot write output files ({err})") from None

    def write(self, mixture: np.ndarray, vocals: np.ndarray) -> None:
        for f, audio in zip(self.files, (vocals, mixture - vocals)):
            f.write(np.clip(audio.T, -1.0, 1.0) if self.pcm else audio.T)

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Renamed into place when the block completes; removed when anything (Ctrl-C too) ends it."""
        if kind is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> list[Path]:
        for f in self.files:
            f.close()
        for tmp, final in zip(self.tmp, self.final):
            os.replace(tmp, final)
        return self.final

    def discard(self) -> None:
        for f in getattr(self, "files", []):
            f.close()
        for tmp in self.tmp:
            tmp.unlink(missing_ok=True)


def load_separator(checkpoint: str | Path | None, device: str, overrides: list[str],
                   dataset: str | None = None, backend: str = "torch") -> tuple[Network, Config]:
    """The network of a checkpoint or exported .onnx file (None: `default_checkpoint` for
    `dataset`, named on stderr) on `backend`, and its config with separation overrides applied."""
    if checkpoint is None:
        checkpoint = default_checkpoint(dataset)
        shipped = checkpoint in (SHIPPED, SHIPPED_MIR1K)
        print(f"model: {checkpoint}" + (" (a shipped model)" if shipped else ""), file=sys.stderr)
    return load_network(checkpoint, pick_device(device), backend, overrides)
