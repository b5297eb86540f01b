"""Training spectra at 44.1 kHz: process memory and start-up time held in memory against
`train.py --spectra-cache` (written once, memory-mapped), against the number of tracks.

    python benchmarks/spectra_cache.py                        # 2 and 8 tracks of 4 minutes
    python benchmarks/spectra_cache.py --tracks 4 16 --minutes 4

Tracks: 44.1 kHz stereo songs in the MUSDB18-HQ layout, looped from the MUSDB18 excerpts
in ../shared/data/musdb18-sample (synthetic demo songs where those are absent). Settings:
the full band at 44.1 kHz (n_fft 2048, hop 512: 1025 bins), no pitch-shifted copies of the
vocals (the default's four copies add twice these spectra). Each row runs in a fresh
process: build the training set (`PatchDataset`), then draw batches of 16 patches as
training does. Memory: the process's peak resident set, and at the end its anonymous part
(what the process owns) and its file-backed part (cached spectra read through the page
cache, which the kernel can drop and reread).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, cpu_name, make_tracks

from config import Config, apply_overrides
from data_generator import PatchDataset
from tracks import load_tracks

FULL_BAND = ["audio.sample_rate=44100", "audio.n_fft=2048", "audio.hop_length=512", "train.pitch_shifts="]
BATCHES = 100


def resident(field: str) -> int:
    """A field of /proc/self/status in bytes (RssAnon, RssFile)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def child(root: str, count: int, cache: str | None) -> dict:
    """Build the training set of the first `count` tracks and draw BATCHES batches from it."""
    cfg = apply_overrides(Config(), FULL_BAND)
    tracks = load_tracks("stems", root, "train")[:count]
    started = time.perf_counter()
    data = PatchDataset(tracks, cfg, remix=True, cache=Path(cache) if cache else None)
    built = time.perf_counter() - started
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(BATCHES):
        data.collate([data[i] for i in rng.integers(len(data), size=16)])
    drawn = time.perf_counter() - started
    return {"build_s": built, "patches_per_s": 16 * BATCHES / drawn, "spectra_bytes": sum(s.nbytes for s in data.specs),
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "anon": resident("RssAnon"), "file": resident("RssFile")}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], cwd=REPO, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracks", type=int, nargs="+", default=[2, 8])
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        root, count, cache = args.child[0], int(args.child[1]), (args.child[2] if len(args.child) > 2 else None)
        print(json.dumps(child(root, count, cache)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="spectra-"))
    root = make_tracks(tmp / "songs", max(args.tracks), args.minutes, subset="train")
    print(f"machine: {cpu_name()}; tracks of {args.minutes:g} min, 44.1 kHz stereo; "
          f"{' '.join(FULL_BAND)}; {BATCHES} batches of 16 drawn\n")
    print("| tracks | spectra | spectra GB | build s | patches/s drawn | peak RSS GB | anonymous GB | "
          "file-backed GB |\n|---|---|---|---|---|---|---|---|")
    for count in args.tracks:
        cache = str(tmp / f"cache-{count}")
        for name, extra in (("in memory", ()), ("cache, first run", (cache,)), ("cache, next run", (cache,))):
            r = run_child(str(root), str(count), *extra)
            print(f"| {count} | {name} | {r['spectra_bytes'] / 2**30:.2f} | {r['build_s']:.1f} | "
                  f"{r['patches_per_s']:.0f} | {r['peak'] / 2**30:.2f} | {r['anon'] / 2**30:.2f} | "
                  f"{r['file'] / 2**30:.2f} |", flush=True)


if __name__ == "__main__":
    main()
