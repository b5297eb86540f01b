"""evaluate.py at the scale of a real test set: wall time and peak memory of the whole process
tree against the number of tracks and of scoring processes, and where the time goes.

    python benchmarks/evaluation.py                           # 2, 5, 10 tracks x --workers 1, 2
    python benchmarks/evaluation.py --tracks 2 5 --workers 2 --minutes 4
    python benchmarks/evaluation.py --profile                 # museval alone, profiled; two at once

Tracks: a MUSDB18-HQ-shaped folder (test/<track>/{mixture,vocals}.wav, 44.1 kHz stereo) of
`--minutes`-long songs looped from the real MUSDB18 excerpts in ../shared/data/musdb18-sample
(each track starts at another offset), or from synthetic demo songs where those are absent.
Memory: the resident set of evaluate.py and all its children, summed and sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
from common import RATE, REPO, cpu_name, make_tracks, tree_rss

from config import Config
from unet_model import UNet, save_checkpoint


def measure(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak tree RSS (bytes) of a command."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"evaluate.py failed: {proc.stderr.read().strip().splitlines()[-1:]}")
    return time.perf_counter() - started, peak


def score_one(folder: str) -> float:
    """Seconds museval takes on one track (the estimate: the mixture scaled, a fixed cost)."""
    from threadpoolctl import threadpool_limits

    from evaluate import score_musdb

    threadpool_limits(1)
    mixture, _ = sf.read(f"{folder}/mixture.wav", dtype="float32", always_2d=True)
    vocals, _ = sf.read(f"{folder}/vocals.wav", dtype="float32", always_2d=True)
    references = {"vocals": vocals.T, "accompaniment": (mixture - vocals).T}
    estimates = {"vocals": 0.5 * mixture.T, "accompaniment": 0.5 * mixture.T}
    started = time.perf_counter()
    score_musdb("profile", RATE, references, estimates)
    return time.perf_counter() - started


def profile(root: Path) -> None:
    folders = sorted(str(p) for p in (root / "test").iterdir())
    profiler = cProfile.Profile()
    profiler.enable()
    alone = score_one(folders[0])
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
    print(f"museval BSS Eval v4 on one track, alone: {alone:.1f} s; where the time goes (tottime):")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-1500:])
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        both = pool.map(score_one, folders[:2])
    print(f"two tracks at once, one process each: {both[0]:.1f} s and {both[1]:.1f} s per track "
          f"(alone {alone:.1f} s): scaling {2 * alone / max(both):.2f}x on 2 processes")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, nargs="+", default=[2, 5, 10])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--checkpoint", help="default: a random-weight model (the same cost)")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evaluation-"))
    root = make_tracks(tmp / "musdb", max(args.tracks) if not args.profile else 2, args.minutes)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; tracks of {args.minutes:g} min, 44.1 kHz stereo")
    if args.profile:
        profile(root)
        return
    checkpoint = args.checkpoint or str(tmp / "random.pt")
    if not args.checkpoint:
        save_checkpoint(checkpoint, UNet(Config().model), Config())
    print("\n| tracks | --workers | wall s | s per track | peak tree RSS GB |\n|---|---|---|---|---|")
    for count in args.tracks:
        for workers in args.workers:
            out = tmp / f"out-{count}-{workers}"
            cmd = [sys.executable, "evaluate.py", "--dataset", "stems", "--root", str(root),
                   "--checkpoint", checkpoint, "--out-dir", str(out), "--workers", str(workers), "--tracks",
                   str(count), "--device", "cpu"]
            seconds, peak = measure(cmd)
            print(f"| {count} | {workers} | {seconds:.0f} | {seconds / count:.1f} | {peak / 2**30:.2f} |", flush=True)


if __name__ == "__main__":
    main()
