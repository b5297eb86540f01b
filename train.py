"""Train the U-Net vocal separator.

    python train.py                                   # MUSDB_PATH, else the MUSDB18 preview, else demo
    python train.py --dataset mir1k --root ../shared/data/MIR-1K --max-minutes 20
    python train.py --dataset musdb --root ~/musdb18hq --is-wav --epochs 100 --device cuda
    python train.py --dataset musdb --root ~/musdb18hq --is-wav --spectra-cache ~/cache/spectra \
        --set audio.sample_rate=44100 --set audio.n_fft=2048 --set audio.hop_length=512   # full band
    python train.py --resume                          # continue from checkpoints/last.pt
    python train.py --dataset stems --root my-songs --init pretrained/unet-mir1k.pt --max-minutes 30
    python train.py --set audio.hop_length=768 --set train.loss=magnitude
    torchrun --standalone --nproc_per_node=4 train.py --dataset musdb --root ~/musdb18

Loss (train.loss): "magnitude", Jansson's L1 between the masked mixture and the vocals
(the default); "mask", L1 between the predicted mask and the oracle mask (vocals /
mixture in linear magnitude, clipped to [0, 1]); or "sdr", minus the SDR in dB of the
masked mixture taken back to a waveform with the mixture's phase (the best checkpoint is
then the one with the best validation SDR). Mixed precision: bfloat16 autocast where
the device computes it natively (CUDA, CPUs with AMX or AVX512-BF16), float16 with a
gradient scaler on older GPUs (--precision auto); --precision float32 keeps float32;
--precision bfloat16 runs bfloat16 even where the CPU emulates it (slow: a numerics check).
train.ema (e.g. 0.998) validates and saves an exponential moving average of the weights
instead of the last ones.

Writes DIR/best.pt (best validation loss), DIR/last.pt (for --resume), DIR/history.csv
and DIR/loss.png. --max-minutes is the wall-clock budget of the whole run, resumes
included; without --epochs it alone decides how many epochs run. At the budget, on
Ctrl-C or SIGTERM (to any one process of a torchrun job) every process stops at the same
step, validates, and rank 0 writes the checkpoints. --batch-size is the global batch:
under torchrun each of N processes takes batch/N. --init starts from a trained model's
weights (fine-tuning; new optimizer, the checkpoint's audio and model settings).
--spectra-cache DIR writes each track's training spectra to DIR once and memory-maps
them (8 bytes per bin and frame; a set larger than memory, e.g. MUSDB18 at 44.1 kHz),
named by the track's files and the audio settings, so later runs skip decoding.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from audio import EPS, STFT
from config import RECIPES, REPO, AudioConfig, Config, InputError, Recipe, apply_overrides, on_stop_signals, run_script
from data_generator import PatchDataset, worker_seed
from demo_data import make_demo
from devices import PRECISIONS, autocast, autocast_dtype, pick_device
from outputs import atomic_path, pyplot, save_figure
from tracks import train_valid_tracks
from unet_model import (
    UNet,
    checkpoint_config,
    count_parameters,
    load_starting_weights,
    network_input,
    read_checkpoint,
    save_checkpoint,
)

# ---------------------------------------------------------------- stopping


class StopRequest:
    """Set by SIGINT/SIGTERM while `catch_signals` is active, so training stops between steps."""

    def __init__(self) -> None:
        self.requested = False

    def catch_signals(self) -> contextlib.AbstractContextManager:
        """Route SIGINT and SIGTERM here; the previous handlers come back on exit."""
        return on_stop_signals(self.request)

    def request(self, signum: int, frame: Any) -> None:
        self.requested = True


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """Each flag True on every process when it is True on any (a collective: every rank must call it)."""
    if not dist.is_initialized():
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


# ---------------------------------------------------------------- devices and processes


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device); starts a process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


class AllReduceSum(torch.autograd.Function):
    """Sum over all processes, differentiable: the input's gradient on each process is the sum of
    the output's gradients on all of them (every process's loss depends on the same sum). Public
    collectives only: torch.distributed.nn.functional.all_reduce does the same but is deprecated."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()  # all_reduce works in place; autograd's gradient is not ours to change
        dist.all_reduce(total)
        return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all processes, on any backend (gloo included).

    torch's SyncBatchNorm runs on GPUs only. The statistics go through a differentiable
    all_reduce, so DDP training matches single-process training on the same global batch.
    They are computed in float32 whatever the activations' dtype (bfloat16 under autocast),
    in two passes (mean, then the mean squared deviation), so the variance keeps its digits
    and is never negative.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        all_reduce = AllReduceSum.apply
        x32 = x.float()  # statistics and normalization in float32, whatever the activations' dtype
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        sums = all_reduce(torch.cat([x32.sum(dim=(0, 2, 3)), count]))  # (C + 1,)
        n = sums[-1]
        mean = sums[:-1] / n  # (C,)
        shape = (1, -1, 1, 1)
        var = all_reduce((x32 - mean.view(shape)).square().sum(dim=(0, 2, 3))) / n  # (C,)
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        x_hat = (x32 - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (x_hat * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def use_global_batchnorm(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            use_global_batchnorm(child)
    return model


def reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum values over all processes (identity when not distributed)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class ShardSampler(Sampler):
    """Every rank-th index, without the padding DistributedSampler adds (exact validation)."""

    def __init__(self, size: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, size, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- data


# Fetch (once) the MUSDB18 7-second preview and print its folder. It runs in a child process,
# so that its socket timeout and any hang stay out of this one.
PREVIEW_PROBE = ("import socket, musdb; socket.setdefaulttimeout(5); "
                 "print(musdb.DB(download=True, subsets='train').root)")


def preview_or_demo() -> tuple[str, str | None]:
    """MUSDB_PATH, else the MUSDB18 7-second preview (downloads once), else the demo set."""
    if os.environ.get("MUSDB_PATH"):
        return "musdb", os.environ["MUSDB_PATH"]
    try:
        probe = subprocess.run([sys.executable, "-c", PREVIEW_PROBE], capture_output=True, text=True, timeout=60)
        root = probe.stdout.strip().splitlines()[-1] if probe.returncode == 0 and probe.stdout.strip() else ""
    except subprocess.TimeoutExpired:
        root = ""
    if root and Path(root).is_dir():
        print(f"dataset: MUSDB18 7-second preview at {root}")
        return "musdb", root
    print("dataset: MUSDB18 preview not reachable (offline?): training on the SYNTHETIC demo set "
          "in data/demo instead (not real music; pass --dataset/--root for real data)")
    return "demo", None


def make_loaders(cfg: Config, dataset: str, root: str | None, is_wav: bool, rank: int, world: int,
                 device: torch.device, cache: Path | None = None) -> tuple[DataLoader, DataLoader]:
    train_tracks, valid_tracks = train_valid_tracks(dataset, root, is_wav, cfg.train)
    if not valid_tracks:
        raise InputError(f"dataset '{dataset}' has too few tracks to hold out a validation set")
    train_set = PatchDataset(train_tracks, cfg, remix=cfg.train.remix, cache=cache)
    valid_set = PatchDataset(valid_tracks, cfg, cache=cache)
    per_process = max(1, cfg.train.batch_size // world)
    if world > 1:
        train_sampler = DistributedSampler(train_set, world, rank, shuffle=cfg.train.shuffle,
                                           seed=cfg.train.seed, drop_last=True)
    elif cfg.train.shuffle:
        train_sampler = RandomSampler(train_set, num_samples=cfg.train.samples_per_epoch or None)
    else:
        train_sampler = SequentialSampler(train_set)
    workers = cfg.train.data_workers
    if workers < 0:  # on a CPU the model needs every core; a GPU waits for data without workers
        workers = min(4, os.cpu_count() or 1) if device.type == "cuda" else 0
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", worker_init_fn=worker_seed,
                  persistent_workers=workers > 0)
    train = DataLoader(train_set, per_process, sampler=train_sampler, drop_last=True,
                       collate_fn=train_set.collate, **common)
    valid = DataLoader(valid_set, per_process, sampler=ShardSampler(len(valid_set), rank, world),
                       collate_fn=valid_set.collate, **common)
    if len(train) == 0:
        raise InputError(f"only {len(train_set)} training patches: fewer than one batch of {per_process}")
    return train, valid


# ---------------------------------------------------------------- losses


def oracle_mask(mix_mag: torch.Tensor, vocals_mag: torch.Tensor) -> torch.Tensor:
    """Vocals / mixture in linear magnitude, clipped to [0, 1]."""
    return (vocals_mag / mix_mag.clamp_min(EPS)).clamp(0.0, 1.0)


def mask_loss(mask: torch.Tensor, mix: torch.Tensor, vocals: torch.Tensor, kind: str,
              transform: STFT | None = None, magnitude_weight: float = 0.0,
              high_band: tuple[int, float, bool] = (0, 0.0, False),
              emphasis: tuple[float, float] = (0.0, 0.0), gain_free_weight: float = 0.0) -> torch.Tensor:
    """The training loss for a batch of masks (B, 1, bins, T) and the (normalized) spectra of
    the mixture and the vocals (B, C, bins, T) (complex, or magnitudes for "magnitude" and
    "mask"); one mask serves every channel.

    "magnitude": mean L1 between the masked mixture and the vocals (Jansson et al.);
    "mask": mean L1 between the mask and the oracle mask;
    "sdr": minus the mean SDR (dB) of the masked mixture, taken back to a waveform with the
    mixture's phase through `transform`'s inverse STFT, against the vocals' waveform: the
    quantity BSS Eval scores, phase and overlap-add included; plus `magnitude_weight` times
    the "magnitude" loss, and `high_band` = (first bin, weight, pooled) the weight times minus
    the SDR of the bins from the first up (of the whole batch where pooled), when those weights
    are not 0; and `emphasis` = (coefficient a, weight) the weight times minus the SDR of the
    three spectra pre-emphasized, each bin times |1 - a e^(-i w)| (+6 dB an octave, as speech
    coders tilt their error), when that weight is not 0; and `gain_free_weight` times minus the
    SDR after each bin takes its best complex gain over the patch (`best_bin_gains`), when it is
    not 0. A patch's SDR is a ratio of
    energies that the loud low band rules; the band above 8 kHz (sibilants, breath, air) holds
    a small share of a voice's energy and would otherwise be left to the accompaniment.
    """
    def masked_magnitude_l1() -> torch.Tensor:
        return (mask * mix.abs() - vocals.abs()).abs().mean()

    if kind == "sdr":
        if transform is None:
            raise ValueError('the "sdr" loss needs the STFT to invert')
        loss = -waveform_sdr(transform, mask * mix, vocals, mix).mean()
        if magnitude_weight:
            loss = loss + magnitude_weight * masked_magnitude_l1()
        first, weight, pooled = high_band
        if weight:  # the same SDR of the bins from `first` up alone
            band = (spec[..., first:, :] for spec in (mask * mix, vocals, mix))
            loss = loss - weight * waveform_sdr(transform, *band, first, pooled).mean()
        coefficient, weight = emphasis
        if weight:  # the same SDR with every bin's error weighed by the pre-emphasis filter's gain
            tilt = pre_emphasis(coefficient, transform.n_fft, mix.shape[-2]).to(mix.device)  # (bins, 1)
            loss = loss - weight * waveform_sdr(transform, tilt * mask * mix, tilt * vocals, tilt * mix).mean()
        if gain_free_weight:
            estimate = best_bin_gains(mask * mix, vocals) * mask * mix
            loss = loss - gain_free_weight * waveform_sdr(transform, estimate, vocals, mix).mean()
        return loss
    if kind == "mask":
        return (mask - oracle_mask(mix.abs(), vocals.abs())).abs().mean()
    return masked_magnitude_l1()


def best_bin_gains(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The complex gain per patch, channel and bin (B, C, bins, 1) that brings `estimate`
    closest to `target` over the patch's frames (least squares): the level and phase of a
    bin that a filter of the whole song fixes, which BSS Eval does not count as distortion."""
    power = estimate.abs().square().sum(-1, keepdim=True)  # (B, C, bins, 1)
    return (estimate.conj() * target).sum(-1, keepdim=True) / (power + 1e-8 * power.mean() + 1e-12)


def pre_emphasis(coefficient: float, n_fft: int, bins: int) -> torch.Tensor:
    """The gain |1 - a e^(-i w)| of the pre-emphasis filter y[n] = x[n] - a x[n - 1] at the
    lowest `bins` bins of an `n_fft`-point STFT, shape (bins, 1) (to weigh spectra (..., bins, T))."""
    omega = 2 * math.pi * torch.arange(bins, dtype=torch.float32) / n_fft
    return (1 + coefficient ** 2 - 2 * coefficient * torch.cos(omega)).sqrt().unsqueeze(1)


def waveform_sdr(transform: STFT, estimate: torch.Tensor, target: torch.Tensor,
                 mixture: torch.Tensor, first_bin: int = 0, pooled: bool = False) -> torch.Tensor:
    """SDR (dB) per patch of complex spectra (B, C, bins, T) of the STFT's bins from
    `first_bin` up, taken back to waveforms (energies summed over the C channels, as BSS Eval
    scores a stereo image).

    Bins below `first_bin` and above the given ones (a model that sees only the lowest
    `model_bins`) are zero in all three. Both energies get a floor of 1e-4 of the mixture's
    energy (-40 dB), so that a patch without vocals asks for a quiet estimate instead of an
    infinite SDR. With `pooled`, one SDR of the whole batch (energies summed over its patches,
    shape (1,)): patches count by their vocals' energy, as in a whole song's SDR, instead of a
    patch whose band holds no voice asking for silence as loudly as one full of it. The
    inverse STFT is linear, so the error's waveform is the inverse of the spectra's difference:
    only that one is differentiated.
    """
    frames = estimate.shape[-1]
    missing = transform.n_fft // 2 + 1 - first_bin - estimate.shape[-2]

    def energy(spec: torch.Tensor) -> torch.Tensor:  # (N, C, bins, T) -> (N,): of the waveforms
        spec = torch.nn.functional.pad(spec, (0, 0, first_bin, missing))  # (N, C, n_fft // 2 + 1, T)
        return transform.inverse(spec, (frames - 1) * transform.hop).square().sum((-2, -1))  # of (N, C, samples)

    with torch.no_grad():
        reference, mixed = energy(torch.cat([target, mixture])).chunk(2)  # (B,) each
    floor = 1e-4 * mixed
    error = energy(target - estimate)  # (B,)
    if pooled:
        reference, error, floor = reference.sum(0, keepdim=True), error.sum(0, keepdim=True), floor.sum(0, keepdim=True)
    return 10 * torch.log10((reference + floor) / (error + floor))


# ---------------------------------------------------------------- training


def learning_rate(cfg: Config, progress: float) -> float:
    """lr at `progress` (0 = start, 1 = end of the run): constant, or a cosine from lr down to lr / 20."""
    if cfg.train.lr_schedule == "constant":
        return cfg.train.lr
    return cfg.train.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


class WeightAverage:
    """An exponential moving average of a model's weights and BatchNorm statistics, updated
    after every optimizer step. Its decay ramps up as (1 + steps) / (10 + steps) towards
    `decay`, so that the first steps' random weights are soon forgotten in a short run."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.steps = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))  # (average, live)
        floats = [(a, b) for a, b in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1 - decay)
        for a, b in pairs:
            if not a.is_floating_point():
                a.copy_(b)  # BatchNorm's batch counter


class Trainer:
    """The arithmetic of training: the loss of a batch, an optimizer step (AdamW, bfloat16
    autocast where native, a weight average riding along), validation; the state --resume needs."""

    def __init__(self, cfg: Config, model: nn.Module, device: torch.device, precision: str) -> None:
        self.cfg, self.device, self.model = cfg, device, model
        self.net = getattr(model, "module", model)  # unwrapped from DistributedDataParallel
        # what is validated and saved: the weight average when there is one, else the trained weights
        self.average = WeightAverage(self.net, cfg.train.ema) if cfg.train.ema else None
        self.kept = self.average.model if self.average else self.net
        self.transform = STFT(cfg.audio)  # the "sdr" loss inverts the model's STFT
        self.high_band = (cfg.audio.bin_at(cfg.train.high_band_hz), cfg.train.high_band_weight,
                          cfg.train.high_band_pooled)
        self.emphasis = (cfg.train.emphasis, cfg.train.emphasis_weight)
        self.gain_free_weight = cfg.train.gain_free_weight
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr,  # AdamW: the decay is not
                                           weight_decay=cfg.train.weight_decay)  # scaled by Adam's step sizes
        self.dtype = autocast_dtype(device, precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)

    def loss(self, model: nn.Module, mix: torch.Tensor, vocals: torch.Tensor) -> torch.Tensor:
        """The loss of `model` (the one trained, or its weight average) on a batch of complex
        spectra (B, C, bins, T) (see `mask_loss`)."""
        mix, vocals = mix.to(self.device, non_blocking=True), vocals.to(self.device, non_blocking=True)
        features = network_input(mix, self.transform, self.cfg.model)  # (B, 1 to 3, bins, T), float32
        with autocast(self.device, self.dtype):
            mask = model(features.contiguous(memory_format=torch.channels_last))  # (B, 1, bins, T)
        return mask_loss(mask.float(), mix, vocals, self.cfg.train.loss, self.transform,
                         self.cfg.train.magnitude_weight, self.high_band, self.emphasis, self.gain_free_weight)

    def step(self, mix: torch.Tensor, vocals: torch.Tensor, lr: float | None = None) -> float:
        """One optimizer step on a batch (at learning rate `lr` where given); its loss."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        loss = self.loss(self.model, mix, vocals)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.average:
            self.average.update(self.net)
        return loss.item()

    @torch.inference_mode()
    def validate(self, loader: DataLoader) -> float:
        """The mean loss of the kept weights over `loader`, on every process together."""
        self.model.eval()
        total, count = 0.0, 0
        for mix, vocals in loader:
            total += self.loss(self.kept, mix, vocals).item() * len(mix)
            count += len(mix)
        total, count = reduce_sum([total, count], self.device)
        self.model.train()
        return total / max(count, 1)

    def state(self) -> dict[str, Any]:
        state = {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}
        if self.average:  # the checkpoint's "model" is the average; --resume needs the trained weights too
            state.update(trained_model=self.net.state_dict(), average_steps=self.average.steps)
        return state

    def load_state(self, payload: dict[str, Any]) -> None:
        """The weights, optimizer and average of a checkpoint written with `state`."""
        self.net.load_state_dict(payload.get("trained_model", payload["model"]))
        if self.average:
            self.average.model.load_state_dict(payload["model"])
            self.average.steps = payload.get("average_steps", 0)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])


class Budget:
    """When a run stops: at its epochs, at its wall-clock budget (resumes included), or when
    SIGINT / SIGTERM asks, on any process; and how far along it is (the learning rate's clock)."""

    def __init__(self, epochs: int, max_minutes: float | None, device: torch.device) -> None:
        self.epochs, self.device = epochs, device
        self.seconds = max_minutes * 60 if max_minutes else None
        self.stop = StopRequest()
        self.requested = False  # a stop was asked for, on any process
        self.elapsed = 0.0  # training seconds of earlier runs (resume) and of the epochs done
        self.started = time.time()

    def used(self) -> float:
        return self.elapsed + time.time() - self.started

    def progress(self, epoch: float) -> float:
        """Share of the run done at `epoch` (fractional): by epochs, by the budget, whichever is further."""
        by_epochs = epoch / self.epochs if self.epochs else 0.0
        return by_epochs if self.seconds is None else max(by_epochs, self.used() / self.seconds)

    def epochs_left(self, epoch: int) -> bool:
        return not self.epochs or epoch < self.epochs

    def should_stop(self) -> bool:
        """Out of time or asked to stop, on any process: decided together, so every rank stops at
        the same step (a rank that left alone would leave the others waiting in a collective)."""
        out_of_time = self.seconds is not None and self.used() >= self.seconds
        out_of_time, self.requested = any_rank([out_of_time, self.stop.requested], self.device)
        return out_of_time or self.requested

    def close_epoch(self) -> None:
        """Count the time so far as spent (before a checkpoint records it)."""
        self.elapsed, self.started = self.used(), time.time()


class TrainingRun:
    """A run of epochs: train, validate, record the epoch and keep the checkpoints (last.pt,
    best.pt by validation loss, history.csv, loss.png; rank 0 writes), until the budget stops it."""

    def __init__(self, trainer: Trainer, rank: int, out_dir: Path, max_minutes: float | None) -> None:
        self.trainer, self.cfg, self.rank, self.out_dir = trainer, trainer.cfg, rank, out_dir
        self.budget = Budget(self.cfg.train.epochs, max_minutes, trainer.device)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.best = math.inf

    def resume(self, path: Path) -> None:
        payload = read_checkpoint(path, self.trainer.device)
        if checkpoint_config(payload, path) != self.cfg:
            raise InputError(f"{path}: trained with another config; resume with the same flags")
        self.trainer.load_state(payload)
        self.epoch, self.history = payload["epoch"], payload["history"]
        self.budget.elapsed, self.best = payload["elapsed"], payload["best"]

    def fit(self, train: DataLoader, valid: DataLoader) -> None:
        """Train until the epochs, the budget or a stop request end it; SIGINT/SIGTERM are caught
        only while it runs."""
        self.budget.started = time.time()
        with self.budget.stop.catch_signals():
            stop = self.budget.should_stop()
            while self.budget.epochs_left(self.epoch) and not stop:
                epoch_start = time.time()
                train_loss, wait_share, stop = self.train_epoch(train)
                valid_loss = self.trainer.validate(valid)
                self.budget.close_epoch()
                self.end_epoch(train_loss, valid_loss, time.time() - epoch_start, wait_share)
        if self.rank == 0 and self.budget.requested:
            print("stopped on request; resume with --resume")
        elif self.rank == 0 and self.budget.seconds is not None and self.budget.epochs_left(self.epoch):
            print(f"stopped at the {self.budget.seconds / 60:g}-minute budget")

    def train_epoch(self, loader: DataLoader) -> tuple[float, float, bool]:
        """Mean training loss, share of time spent waiting for data, and whether to stop."""
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(self.epoch)
        total, count, waited, stop = 0.0, 0, 0.0, False
        epoch_start = tick = time.time()
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}", disable=True if self.rank else None, leave=False)
        for i, (mix, vocals) in enumerate(bar):
            waited += time.time() - tick
            lr = learning_rate(self.cfg, self.budget.progress(self.epoch + i / len(loader)))
            loss = self.trainer.step(mix, vocals, lr)
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{loss:.4f}")
            stop = self.budget.should_stop()
            if stop:
                break
            tick = time.time()
        total, count = reduce_sum([total, count], self.trainer.device)
        return total / max(count, 1), waited / max(time.time() - epoch_start, 1e-9), stop

    def end_epoch(self, train_loss: float, valid_loss: float, seconds: float, wait_share: float) -> None:
        """Record the epoch in the history; rank 0 saves the checkpoints and prints a line."""
        self.epoch += 1
        self.history.append({"epoch": self.epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                             "seconds": round(seconds, 2), "data_wait": round(wait_share, 4),
                             "lr": self.trainer.optimizer.param_groups[0]["lr"]})
        improved = valid_loss < self.best or self.cfg.train.all_tracks  # trained on: nothing to choose by
        self.best = min(self.best, valid_loss)
        if self.rank == 0:
            self.save(improved)
            tqdm.write(f"epoch {self.epoch}: train {train_loss:.4f}  valid {valid_loss:.4f}"
                       f"{'  (best)' if improved else ''}  {seconds:.0f}s  data wait {wait_share:.1%}")

    def save(self, improved: bool) -> None:
        state = {"epoch": self.epoch, "history": self.history, "elapsed": self.budget.elapsed, "best": self.best,
                 **self.trainer.state()}
        for name in ("last.pt", "best.pt") if improved else ("last.pt",):
            save_checkpoint(self.out_dir / name, self.trainer.kept, self.cfg, **state)
        write_history(self.out_dir, self.history, LOSS_LABELS[self.cfg.train.loss])


LOSS_LABELS = {"magnitude": "L1 loss (masked magnitude)", "mask": "L1 loss (mask)", "sdr": "minus SDR (dB)"}


def write_history(out_dir: Path, history: list[dict[str, float]], label: str) -> None:
    """history.csv and loss.png (train and validation loss per epoch), both atomically."""
    with atomic_path(out_dir / "history.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    plot_history(out_dir, history, label)


def plot_history(out_dir: Path, history: list[dict[str, float]], label: str) -> None:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title("U-Net vocal separator: loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out_dir / "loss.png")


# Settings a fine-tuned model may change (an added input feature starts at zero weights:
# `load_starting_weights`; the tilt lifts a band that widening makes new to the weights anyway);
# the rest of `audio` and `model` define what its weights mean.
FINE_TUNE_FREE = {"audio.patch_frames", "model.dropout", "model.dropout_layers", "model.side_input",
                  "model.inst_frequency", "model.bin_position", "model.top_tilt_db"}
# ... and these too, as long as bins keep their width in Hz and frames their duration: a
# convolution's weights then mean the same anywhere in the band, however many bins it spans
# (e.g. a 16 kHz model, n_fft 1024 / hop 256, fine-tuned at 32 kHz, 2048 / 512, up to 16 kHz).
SAME_GRID_FREE = {"audio.sample_rate", "audio.n_fft", "audio.hop_length", "audio.model_bins"}


def same_grid(a: AudioConfig, b: AudioConfig) -> bool:
    """Whether two STFT settings have bins of the same width and frames of the same duration."""
    return a.n_fft * b.sample_rate == b.n_fft * a.sample_rate and \
        a.hop_length * b.sample_rate == b.hop_length * a.sample_rate


def check_fine_tune(start: Config, cfg: Config, path: str) -> None:
    """InputError when cfg changes a setting the checkpoint's weights depend on."""
    free = FINE_TUNE_FREE | (SAME_GRID_FREE if same_grid(start.audio, cfg.audio) else set())
    for section in ("audio", "model"):
        theirs, ours = getattr(start, section).__dict__, getattr(cfg, section).__dict__
        for name, value in ours.items():
            if value != theirs[name] and f"{section}.{name}" not in free:
                raise InputError(f"--init {path}: {section}.{name}={value} differs from the checkpoint's "
                                 f"{theirs[name]} (its weights were trained with that)")


def starting_weights(args: argparse.Namespace, recipe: Recipe) -> str | None:
    """The checkpoint training starts from: --init (none: random weights), else the recipe's
    (on --resume, last.pt's own)."""
    if args.init:
        return None if args.init == "none" else args.init
    return str(REPO / recipe.init) if recipe.init and not args.resume else None


def build_config(args: argparse.Namespace, init: dict[str, Any] | None = None, dataset: str | None = None) -> Config:
    """The defaults with the recipe of `dataset` (default: --dataset), then flags and --set.
    Starting from a checkpoint (read here unless given as `init`), its audio and model settings
    replace the defaults'; the recipe's audio settings still apply when they keep its grid (a
    wider band), else not."""
    recipe = RECIPES.get(dataset or args.dataset, Recipe())
    path = starting_weights(args, recipe)
    base = apply_overrides(Config(), recipe.sets(("train", "separation")))
    if path:
        start = checkpoint_config(init or read_checkpoint(path), path)
        base.audio, base.model = start.audio, start.model
        widened = apply_overrides(base, recipe.sets(("audio",)))
        base = widened if same_grid(start.audio, widened.audio) else base
    else:
        base = apply_overrides(base, recipe.sets(("audio", "model")))
    overrides = list(args.set)
    for flag, field in (("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                        ("lr", "train.lr"), ("seed", "train.seed"), ("data_workers", "train.data_workers")):
        if getattr(args, flag) is not None:
            overrides.append(f"{field}={getattr(args, flag)}")
    epochs_named = any(o.startswith("train.epochs=") for o in [*args.set, *recipe.overrides])
    if args.max_minutes and args.epochs is None and not epochs_named:
        overrides.append("train.epochs=0")  # the wall-clock budget alone decides how many epochs run
    cfg = apply_overrides(base, overrides)
    if path:
        check_fine_tune(start, cfg, path)
    if cfg.train.epochs == 0 and not args.max_minutes:
        raise InputError("train.epochs=0 (no epoch limit) needs a --max-minutes budget")
    return cfg


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["musdb", "mir1k", "stems", "demo"], help="default: see above")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav) instead of .stem.mp4")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-workers", type=int, help="DataLoader worker processes (default: 0 on CPU, 4 on CUDA)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget of the whole run")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--spectra-cache", metavar="DIR",
                   help="keep the training spectra in DIR, memory-mapped (large sets; later runs skip decoding)")
    p.add_argument("--resume", action="store_true", help="continue from CHECKPOINT_DIR/last.pt")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from this model's weights (fine-tuning; none: random weights, not the recipe's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bfloat16 autocast where native (float16 on older GPUs), else float32")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set audio.hop_length=768")
    return p.parse_args(argv)


def chosen_dataset(args: argparse.Namespace, rank: int, world: int) -> tuple[str, str | None]:
    """--dataset and --root, else the first of MUSDB_PATH, the preview and the demo set (the
    same on every process: rank 0 looks)."""
    if args.dataset is not None:
        return args.dataset, args.root
    dataset, root = preview_or_demo() if rank == 0 else (None, None)
    if world > 1:
        shared = [(dataset, root)]
        dist.broadcast_object_list(shared)
        dataset, root = shared[0]
    return dataset, root


def train(args: argparse.Namespace) -> Path:
    """Run training as the flags say; returns the checkpoint folder."""
    if args.init and args.resume:
        raise InputError("--init and --resume exclude each other (--resume continues its own run)")
    rank, world, device = init_distributed(args.device)
    dataset, root = chosen_dataset(args, rank, world)
    path = starting_weights(args, RECIPES.get(dataset, Recipe()))
    init = read_checkpoint(path) if path else None  # read once: config here, weights below
    cfg = build_config(args, init, dataset)
    out_dir = Path(args.checkpoint_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out_dir}: cannot create checkpoint folder ({err.strerror})") from None
    torch.manual_seed(cfg.train.seed + rank)
    if rank == 0 and dataset == "demo":
        make_demo()  # build it once, before the other ranks read it
    if world > 1:
        dist.barrier()
    cache = Path(args.spectra_cache) if args.spectra_cache else None
    train_loader, valid_loader = make_loaders(cfg, dataset, root, args.is_wav, rank, world, device, cache)
    model = UNet(cfg.model)
    if init:
        load_starting_weights(model, cfg.model, checkpoint_config(init, path).model, init["model"])
    model = model.to(device, memory_format=torch.channels_last)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(use_global_batchnorm(model))
    trainer = Trainer(cfg, model, device, args.precision)
    run = TrainingRun(trainer, rank, out_dir, args.max_minutes)
    if args.resume:
        run.resume(out_dir / "last.pt")
    if rank == 0:
        print(f"{dataset}: {len(train_loader.dataset)} training / {len(valid_loader.dataset)} validation "
              f"patches; {count_parameters(model):,} parameters; {world} x {device}"
              f"{'; AMP ' + str(trainer.dtype).split('.')[-1] if trainer.dtype else ''}"
              f"{'; from ' + str(path) if path else ''}")
    run.fit(train_loader, valid_loader)
    if world > 1:
        dist.barrier()  # rank 0 may still be writing; a rank that tears down alone can abort at exit
        dist.destroy_process_group()
    return out_dir


def main() -> None:
    run_script(lambda: train(parse_args()))


if __name__ == "__main__":
    main()
