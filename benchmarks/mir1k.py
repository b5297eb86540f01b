"""MIR-1K benchmark: train on singers abjones + amy with a wall-clock budget, then
separate and score every test clip under --root (all singers but those two) with
BSS Eval v3 on whole clips, as the MIR-1K papers do.

    python benchmarks/mir1k.py --root ../shared/data/MIR-1K --minutes 60
    python benchmarks/mir1k.py --root ../shared/data/MIR-1K --epochs 45 --samples 2000 \
        --set train.loss=magnitude --name loss-magnitude        # an ablation: fixed patch budget
    python benchmarks/mir1k.py --root ../shared/data/MIR-1K --skip-training --name default

    python benchmarks/mir1k.py --root ../shared/data/MIR-1K --epochs 12 --hold-out abjones \
        --name holdout-abjones   # train on amy alone, score abjones's clips (test singers untouched)

Prints vocals GNSDR / GSIR / GSAR, accompaniment GNSDR, training minutes and the machine,
and writes them to results/benchmarks/<name>/benchmark.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from common import cpu_name, mir1k_figures

from config import InputError, run_script
from evaluate import evaluate_model, format_summary
from tracks import MIR1K_TRAIN_SINGERS, mir1k_clips
from train import parse_args as train_args
from train import train


def machine(device: str) -> str:
    text = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device != "cpu" and torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def hold_out(root: Path, singer: str, folder: Path) -> Path:
    """A MIR-1K folder of links in which `singer`'s clips are the test set and the other
    training singer's clips the training set (the test singers are left out)."""
    if singer not in MIR1K_TRAIN_SINGERS:
        raise InputError(f"--hold-out {singer}: expected one of the training singers {MIR1K_TRAIN_SINGERS}")
    wavs = folder / "Wavfile"
    shutil.rmtree(folder, ignore_errors=True)
    wavs.mkdir(parents=True)
    for clip in mir1k_clips(root, "train"):
        held = clip.name.split("_")[0] == singer
        (wavs / (f"heldout-{clip.name}" if held else clip.name)).symlink_to(clip.resolve())  # heldout-*: a test singer
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="MIR-1K folder (holding Wavfile/)")
    p.add_argument("--minutes", type=float, help="training budget (wall clock)")
    p.add_argument("--epochs", type=int, help="epoch limit (default: the budget alone decides)")
    p.add_argument("--samples", type=int, help="training patches per epoch (default: all)")
    p.add_argument("--set", action="append", default=[], help="training config override, see train.py")
    p.add_argument("--eval-set", action="append", default=[], help="separation override, see evaluate.py")
    p.add_argument("--name", default="mir1k")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scoring processes")
    p.add_argument("--hold-out", metavar="SINGER",
                   help="train on the other training singer and score this one's clips instead of the test set")
    p.add_argument("--skip-training", action="store_true", help="only score --checkpoint")
    p.add_argument("--checkpoint", help="with --skip-training (default: checkpoints/<name>/best.pt)")
    args = p.parse_args()
    if args.minutes is None and args.epochs is None and not args.skip_training:
        p.error("give --minutes or --epochs")

    ckpt_dir = Path("checkpoints") / args.name
    out_dir = Path("results") / "benchmarks" / args.name
    root = args.root
    if args.hold_out:
        root = str(hold_out(Path(args.root), args.hold_out, out_dir / "mir1k-holdout"))
    started = time.time()
    if not args.skip_training:
        argv = ["--dataset", "mir1k", "--root", root, "--checkpoint-dir", str(ckpt_dir),
                "--device", args.device]
        argv += ["--epochs", str(args.epochs)] if args.epochs else []
        argv += ["--max-minutes", str(args.minutes)] if args.minutes else []
        overrides = args.set + ([f"train.samples_per_epoch={args.samples}"] if args.samples else [])
        argv += [item for o in overrides for item in ("--set", o)]
        train(train_args(argv))
    minutes = None if args.skip_training else round((time.time() - started) / 60, 1)
    checkpoint = args.checkpoint if args.skip_training and args.checkpoint else ckpt_dir / "best.pt"
    shutil.rmtree(out_dir / "clips", ignore_errors=True)  # scores of an earlier run's model would be read back
    summary = evaluate_model(checkpoint, "mir1k", root, "test", out_dir=out_dir,
                             workers=args.workers, device=args.device, overrides=args.eval_set)
    result = {"name": args.name, "hold_out": args.hold_out, "train_overrides": args.set,
              "eval_overrides": args.eval_set, "clips": summary[0]["tracks"], **mir1k_figures(summary),
              "training_minutes": minutes, "machine": machine(args.device)}
    (out_dir / "benchmark.json").write_text(json.dumps(result, indent=2))
    print(format_summary(summary))
    print(json.dumps(result))


if __name__ == "__main__":
    run_script(main)
