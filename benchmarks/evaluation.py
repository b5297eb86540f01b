"""Scoring at the scale of a real test set: the fast scorer (bsseval.py) beside museval.

First each scorer alone on the same tracks (seconds and peak memory, one fresh single-threaded
process per track); then evaluate.py end to end, wall time and peak memory of the whole process
tree against the number of tracks, of scoring processes and the scorer, with the largest
per-frame and per-track differences between the two scorers' JSONs.

    python benchmarks/evaluation.py                           # 10 tracks x --workers 1, 2 x both scorers
    python benchmarks/evaluation.py --tracks 2 5 --workers 2 --minutes 4 --scorers fast
    python benchmarks/evaluation.py --profile --scorers fast  # one scorer on one track, profiled

Tracks: a MUSDB18-HQ-shaped folder (test/<track>/{mixture,vocals}.wav, 44.1 kHz stereo) of
`--minutes`-long songs looped from the real MUSDB18 excerpts in ../shared/data/musdb18-sample
(each track starts at another offset), or from synthetic demo songs where those are absent.
Memory: the resident set of evaluate.py and all its children, summed and sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


def score_one(folder: str, scorer: str) -> tuple[float, int]:
    """Seconds one scorer takes on one track, single-threaded, and its peak memory above the
    track's audio (bytes; meaningful in a fresh process). The estimate is the mixture scaled:
    the cost does not depend on it."""
    import resource

    import museval  # noqa: F401  (both scorers write museval's JSON: imported before the clock starts)
    from threadpoolctl import threadpool_limits

    from evaluate import SCORERS

    threadpool_limits(1)
    mixture, _ = sf.read(f"{folder}/mixture.wav", dtype="float32", always_2d=True)
    vocals, _ = sf.read(f"{folder}/vocals.wav", dtype="float32", always_2d=True)
    references = {"vocals": vocals.T, "accompaniment": (mixture - vocals).T}
    estimates = {"vocals": 0.5 * mixture.T, "accompaniment": 0.5 * mixture.T}
    before = resident_bytes()
    started = time.perf_counter()
    SCORERS[scorer]("profile", RATE, references, estimates)
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def resident_bytes() -> int:
    """This process's resident set now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def in_fresh_process(function, *args):
    """function(*args) in a new spawned process, so that its peak memory is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


def compare_scorers(root: Path, count: int, scorers: list[str]) -> None:
    print("\n| track | scorer | seconds | peak memory above the audio, GB |\n|---|---|---|---|")
    for folder in sorted(str(p) for p in (root / "test").iterdir())[:count]:
        for scorer in scorers:
            seconds, peak = in_fresh_process(score_one, folder, scorer)
            print(f"| {Path(folder).name} | {scorer} | {seconds:.1f} | {peak / 2**30:.2f} |", flush=True)


def largest_differences(fast: Path, slow: Path) -> str:
    """The largest per-frame and per-track (median over frames) differences, per metric, between
    the JSONs of two output folders of evaluate.py."""
    frames: dict[str, float] = {}
    tracks: dict[str, float] = {}
    for path in sorted((slow / "museval" / "test").glob("*.json")):
        ours = json.loads((fast / "museval" / "test" / path.name).read_text())["targets"]
        theirs = json.loads(path.read_text())["targets"]
        for a, b in zip(ours, theirs):
            for metric in ("SDR", "ISR", "SIR", "SAR"):
                x, y = (np.array([f["metrics"][metric] for f in t["frames"]], dtype=float) for t in (a, b))
                finite = np.isfinite(x) & np.isfinite(y)
                frames[metric] = max(frames.get(metric, 0.0), float(np.abs(x - y)[finite].max(initial=0.0)))
                tracks[metric] = max(tracks.get(metric, 0.0), abs(float(np.nanmedian(x) - np.nanmedian(y))))
    return "; ".join(f"{m} {frames[m]:.1e} / {tracks[m]:.1e}" for m in frames)


def profile(root: Path, scorer: str) -> None:
    folder = sorted(str(p) for p in (root / "test").iterdir())[0]
    profiler = cProfile.Profile()
    profiler.enable()
    alone, _ = score_one(folder, scorer)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(8)
    print(f"{scorer} on one track: {alone:.1f} s; where the time goes (tottime):")
    print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[-1500:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, nargs="+", default=[10])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--scorers", nargs="+", default=["fast", "museval"], choices=["fast", "museval"])
    p.add_argument("--alone", type=int, default=2, help="tracks each scorer scores alone first (0: none)")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--checkpoint", help="default: a random-weight model (the same cost)")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="evaluation-"))
    root = make_tracks(tmp / "musdb", max([*args.tracks, args.alone]) if not args.profile else 1, args.minutes)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; tracks of {args.minutes:g} min, 44.1 kHz stereo")
    if args.profile:
        profile(root, args.scorers[0])
        return
    if args.alone:
        compare_scorers(root, args.alone, args.scorers)
    checkpoint = args.checkpoint or str(tmp / "random.pt")
    if not args.checkpoint:
        save_checkpoint(checkpoint, UNet(Config().model), Config())
    print("\n| tracks | --workers | scorer | wall s | s per track | peak tree RSS GB |\n|---|---|---|---|---|---|")
    for count in args.tracks:
        for workers in args.workers:
            for scorer in args.scorers:
                out = tmp / f"out-{count}-{workers}-{scorer}"
                cmd = [sys.executable, "evaluate.py", "--dataset", "stems", "--root", str(root), "--checkpoint",
                       checkpoint, "--out-dir", str(out), "--workers", str(workers), "--tracks", str(count),
                       "--device", "cpu", "--scorer", scorer]
                seconds, peak = measure(cmd)
                print(f"| {count} | {workers} | {scorer} | {seconds:.0f} | {seconds / count:.1f} | "
                      f"{peak / 2**30:.2f} |", flush=True)
            if len(args.scorers) == 2:
                fast, slow = (tmp / f"out-{count}-{workers}-{scorer}" for scorer in ("fast", "museval"))
                print(f"largest difference, fast against museval, per frame / per track (dB; museval's JSON "
                      f"keeps 5 decimals): "
                      f"{largest_differences(fast, slow)}")


if __name__ == "__main__":
    main()
