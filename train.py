"""Train the U-Net vocal separator.

    python train.py                                   # MUSDB_PATH, else the MUSDB18 preview, else demo
    python train.py --dataset mir1k --root ../shared/data/MIR-1K --max-minutes 20
    python train.py --dataset musdb --root ~/musdb18hq --is-wav --epochs 100 --device cuda
    python train.py --resume                          # continue from checkpoints/last.pt
    python train.py --set audio.hop_length=768 --set train.loss=magnitude
    torchrun --standalone --nproc_per_node=4 train.py --dataset musdb --root ~/musdb18

Loss (train.loss): "magnitude", Jansson's L1 between the masked mixture and the vocals
(the default), or "mask", L1 between the predicted mask and the oracle mask (vocals /
mixture in linear magnitude, clipped to [0, 1]). Mixed precision: bfloat16 autocast where
the device computes it natively (CUDA, CPUs with AMX or AVX512-BF16), float16 with a
gradient scaler on older GPUs; --no-amp keeps float32.

Writes DIR/best.pt (best validation loss), DIR/last.pt (for --resume), DIR/history.csv
and DIR/loss.png. --max-minutes is the wall-clock budget
of the whole run, resumes included; at the budget, on Ctrl-C or SIGTERM it validates,
writes its checkpoints and stops. --batch-size is the global batch: under torchrun
each of N processes takes batch/N.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from config import Config, InputError, apply_overrides
from data_generator import PatchDataset, make_demo, oracle_mask, train_valid_tracks, worker_seed
from unet_model import UNet, count_parameters, native_bfloat16, read_checkpoint, save_checkpoint


class Stop:
    """Set by SIGINT/SIGTERM, so the loop can stop cleanly between steps."""

    requested = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: Any) -> None:
            cls.requested = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------- devices and processes


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available")
        return torch.device("cuda", local_rank)
    if name not in ("auto", "cpu"):
        raise InputError(f"unknown device '{name}' (expected auto, cpu or cuda)")
    return torch.device("cpu")


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


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch of all processes, on any backend (gloo included).

    torch's SyncBatchNorm runs on GPUs only. The statistics go through a differentiable
    all_reduce, so DDP training matches single-process training on the same global batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        sums = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        sums = all_reduce(sums.float())
        n = sums[-1]
        mean = sums[: x.shape[1]] / n
        var = sums[x.shape[1]: 2 * x.shape[1]] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * n / (n - 1), self.momentum)
        shape = (1, -1, 1, 1)
        x_hat = (x - mean.view(shape).to(x.dtype)) * torch.rsqrt(var.view(shape) + self.eps).to(x.dtype)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


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


def preview_or_demo() -> tuple[str, str | None]:
    """MUSDB_PATH, else the MUSDB18 7-second preview (downloads once), else the demo set."""
    if os.environ.get("MUSDB_PATH"):
        return "musdb", os.environ["MUSDB_PATH"]
    result: dict[str, str] = {}

    def fetch() -> None:
        import musdb

        socket.setdefaulttimeout(5)
        try:
            db = musdb.DB(download=True, subsets="train")
            result["root"] = db.root
        except Exception:  # any network or archive failure means: no preview here
            pass

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(timeout=15)
    if "root" in result:
        print(f"dataset: MUSDB18 7-second preview at {result['root']}")
        return "musdb", result["root"]
    print("dataset: MUSDB18 preview not reachable (offline?): training on the SYNTHETIC demo set "
          "in data/demo instead (not real music; pass --dataset/--root for real data)")
    return "demo", None


def make_loaders(cfg: Config, dataset: str, root: str | None, is_wav: bool, rank: int, world: int,
                 device: torch.device) -> tuple[DataLoader, DataLoader]:
    train_tracks, valid_tracks = train_valid_tracks(dataset, root, is_wav, cfg.train)
    if not valid_tracks:
        raise InputError(f"dataset '{dataset}' has too few tracks to hold out a validation set")
    train_set = PatchDataset(train_tracks, cfg, remix=cfg.train.remix)
    valid_set = PatchDataset(valid_tracks, cfg)
    per_process = max(1, cfg.train.batch_size // world)
    if world > 1:
        train_sampler = DistributedSampler(train_set, world, rank, shuffle=cfg.train.shuffle,
                                           seed=cfg.train.seed, drop_last=True)
    elif cfg.train.shuffle:
        train_sampler = RandomSampler(train_set, num_samples=cfg.train.samples_per_epoch or None)
    else:
        train_sampler = SequentialSampler(train_set)
    workers = cfg.train.num_workers
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


# ---------------------------------------------------------------- training


def mask_loss(mask: torch.Tensor, mix: torch.Tensor, vocals: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean L1: mask vs oracle mask ("mask") or masked mixture vs vocals ("magnitude")."""
    if kind == "mask":
        return (mask - oracle_mask(mix, vocals)).abs().mean()
    if kind == "magnitude":
        return (mask * mix - vocals).abs().mean()
    raise InputError(f"unknown loss '{kind}' (expected 'mask' or 'magnitude')")


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """bfloat16 where the device computes it natively, else float16 on CUDA, else none (float32)."""
    if not enabled:
        return None
    if native_bfloat16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def learning_rate(cfg: Config, progress: float) -> float:
    if cfg.train.lr_schedule == "constant":
        return cfg.train.lr
    if cfg.train.lr_schedule == "cosine":
        return cfg.train.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
    raise InputError(f"unknown lr schedule '{cfg.train.lr_schedule}'")


class Trainer:
    def __init__(self, cfg: Config, model: nn.Module, device: torch.device, rank: int,
                 out_dir: Path, max_minutes: float | None, amp: bool) -> None:
        self.cfg, self.device, self.rank, self.out_dir = cfg, device, rank, out_dir
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr,
                                          weight_decay=cfg.train.weight_decay)
        self.dtype = amp_dtype(device, amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.budget = max_minutes * 60 if max_minutes else None
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.elapsed = 0.0  # training seconds in earlier runs (resume)
        self.best = math.inf

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "optimizer": self.optimizer.state_dict(), "history": self.history,
                "elapsed": self.elapsed, "best": self.best, "scaler": self.scaler.state_dict()}

    def resume(self, path: Path) -> None:
        payload = read_checkpoint(path, self.device)
        if payload["config"] != self.cfg.to_dict():
            raise InputError(f"{path}: trained with another config; resume with the same flags")
        getattr(self.model, "module", self.model).load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scaler.load_state_dict(payload["scaler"])
        self.epoch, self.history = payload["epoch"], payload["history"]
        self.elapsed, self.best = payload["elapsed"], payload["best"]

    def progress(self, started: float, step: int, steps_per_epoch: int) -> float:
        by_epochs = (self.epoch + step / steps_per_epoch) / self.cfg.train.epochs
        if self.budget is None:
            return by_epochs
        return max(by_epochs, (self.elapsed + time.time() - started) / self.budget)

    def out_of_time(self, started: float) -> bool:
        return self.budget is not None and self.elapsed + time.time() - started >= self.budget

    def step(self, mix: torch.Tensor, vocals: torch.Tensor) -> float:
        mix = mix.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        vocals = vocals.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            mask = self.model(mix)
        loss = mask_loss(mask.float(), mix, vocals, self.cfg.train.loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()

    @torch.inference_mode()
    def validate(self, loader: DataLoader) -> float:
        self.model.eval()
        total, count = 0.0, 0
        for mix, vocals in loader:
            mix, vocals = mix.to(self.device), vocals.to(self.device)
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
                mask = self.model(mix)
            total += mask_loss(mask.float(), mix, vocals, self.cfg.train.loss).item() * len(mix)
            count += len(mix)
        total, count = reduce_sum([total, count], self.device)
        self.model.train()
        return total / max(count, 1)

    def train_epoch(self, loader: DataLoader, started: float) -> tuple[float, float, bool]:
        """Mean training loss, share of time spent waiting for data, and whether to stop."""
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(self.epoch)
        total, count, waited = 0.0, 0, 0.0
        epoch_start = time.time()
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}", disable=True if self.rank else None, leave=False)
        tick = time.time()
        stop = False
        for i, (mix, vocals) in enumerate(bar):
            waited += time.time() - tick
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(self.cfg, self.progress(started, i, len(loader)))
            loss = self.step(mix, vocals)
            total, count = total + loss, count + 1
            bar.set_postfix(loss=f"{loss:.4f}")
            stop = self.out_of_time(started) or Stop.requested
            if stop:
                break
            tick = time.time()
        total, count = reduce_sum([total, count], self.device)
        return total / max(count, 1), waited / max(time.time() - epoch_start, 1e-9), stop

    def fit(self, train: DataLoader, valid: DataLoader) -> None:
        started = time.time()
        stop = self.out_of_time(started)
        while self.epoch < self.cfg.train.epochs and not stop:
            epoch_start = time.time()
            train_loss, wait_share, stop = self.train_epoch(train, started)
            valid_loss = self.validate(valid)
            seconds = time.time() - epoch_start
            self.epoch += 1
            self.history.append({"epoch": self.epoch, "train_loss": train_loss, "valid_loss": valid_loss,
                                 "seconds": round(seconds, 2), "data_wait": round(wait_share, 4),
                                 "lr": self.optimizer.param_groups[0]["lr"]})
            self.elapsed += time.time() - started
            started = time.time()
            improved = valid_loss < self.best
            self.best = min(self.best, valid_loss)
            if self.rank == 0:
                self.save(improved)
                tqdm.write(f"epoch {self.epoch}: train {train_loss:.4f}  valid {valid_loss:.4f}"
                           f"{'  (best)' if improved else ''}  {seconds:.0f}s  data wait {wait_share:.1%}")
        if self.rank == 0 and Stop.requested:
            print("stopped on request; resume with --resume")
        elif self.rank == 0 and self.budget is not None and self.epoch < self.cfg.train.epochs:
            print(f"stopped at the {self.budget / 60:g}-minute budget")

    def save(self, improved: bool) -> None:
        save_checkpoint(self.out_dir / "last.pt", self.model, self.cfg, **self.state())
        if improved:
            save_checkpoint(self.out_dir / "best.pt", self.model, self.cfg, **self.state())
        write_history(self.out_dir, self.history)


def write_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    """history.csv and loss.png (train and validation loss per epoch), both atomically."""
    tmp = out_dir / ".history.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    os.replace(tmp, out_dir / "history.csv")
    plot_history(out_dir, history)


def plot_history(out_dir: Path, history: list[dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(epochs, [h["valid_loss"] for h in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("L1 loss")
    ax.set_title("U-Net vocal separator: loss per epoch")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / ".loss.png.tmp", format="png", dpi=100)
    plt.close(fig)
    os.replace(out_dir / ".loss.png.tmp", out_dir / "loss.png")


def build_config(args: argparse.Namespace) -> Config:
    overrides = list(args.set)
    for flag, field in (("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                        ("lr", "train.lr"), ("seed", "train.seed"), ("workers", "train.num_workers")):
        if getattr(args, flag) is not None:
            overrides.append(f"{field}={getattr(args, flag)}")
    return apply_overrides(Config(), overrides)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["musdb", "mir1k", "stems", "demo"], help="default: see above")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav) instead of .stem.mp4")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget of the whole run")
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from CHECKPOINT_DIR/last.pt")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="float32 only (no bfloat16/float16 autocast)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set audio.hop_length=768")
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> Path:
    """Run training as the flags say; returns the checkpoint folder."""
    cfg = build_config(args)
    out_dir = Path(args.checkpoint_dir)
    rank, world, device = init_distributed(args.device)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out_dir}: cannot create checkpoint folder ({err.strerror})") from None
    torch.manual_seed(cfg.train.seed + rank)
    if args.dataset is None:
        dataset, root = preview_or_demo() if rank == 0 else (None, None)
        if world > 1:
            shared = [(dataset, root)]
            dist.broadcast_object_list(shared)
            dataset, root = shared[0]
    else:
        dataset, root = args.dataset, args.root
    if rank == 0 and dataset == "demo":
        make_demo()  # build it once, before the other ranks read it
    if world > 1:
        dist.barrier()
    train_loader, valid_loader = make_loaders(cfg, dataset, root, args.is_wav, rank, world, device)
    model = UNet(cfg.model).to(device, memory_format=torch.channels_last)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(use_global_batchnorm(model))
    trainer = Trainer(cfg, model, device, rank, out_dir, args.max_minutes, amp=not args.no_amp)
    if args.resume:
        trainer.resume(out_dir / "last.pt")
    if rank == 0:
        print(f"{dataset}: {len(train_loader.dataset)} training / {len(valid_loader.dataset)} validation "
              f"patches; {count_parameters(model):,} parameters; {world} x {device}"
              f"{'; AMP ' + str(trainer.dtype).split('.')[-1] if trainer.dtype else ''}")
    Stop.install()
    trainer.fit(train_loader, valid_loader)
    if world > 1:
        dist.destroy_process_group()
    return out_dir


def main() -> None:
    try:
        train(parse_args())
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
