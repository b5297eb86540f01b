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

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import Config
from data_generator import load_tracks
from demo_data import synthesize_song
from unet_model import UNet, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO.parent / "shared" / "data" / "musdb18-sample"
RATE = 44100


def source_songs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(mixture, vocals) pairs at 44.1 kHz stereo to loop tracks from."""
    if SAMPLE.exists():
        return [track.load()[:2] for subset in ("train", "test") for track in load_tracks("musdb", SAMPLE, subset)]
    stems = synthesize_song(np.random.default_rng(0), 20.0, RATE)
    return [(stems["mixture"], stems["vocals"])]


def make_tracks(root: Path, count: int, minutes: float) -> Path:
    """`count` tracks of `minutes` in MUSDB18-HQ layout under root/test."""
    sources = source_songs()
    length = int(minutes * 60 * RATE)
    for i in range(count):
        mixture, vocals = sources[i % len(sources)]
        index = (np.arange(length) + i * 7919) % mixture.shape[1]  # loop, from another offset per track
        folder = root / "test" / f"track-{i:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, audio in (("mixture", mixture), ("vocals", vocals)):
            sf.write(str(folder / f"{name}.wav"), audio[:, index].T, RATE, subtype="PCM_16")
    return root


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        child = int(status.parent.name)
        parents[child] = int(fields["PPid"])
        rss[child] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    tree, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                todo.append(child)
    return sum(rss.get(p, 0) for p in tree)


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


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
