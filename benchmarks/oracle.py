"""The ceiling of an STFT for a masking separator: the ideal ratio mask on MIR-1K's test clips.

    python benchmarks/oracle.py --root ../shared/data/MIR-1K                      # the default STFT
    python benchmarks/oracle.py --root ../shared/data/MIR-1K --set audio.n_fft=2048 --set audio.hop_length=512

The mask |V| / (|V| + |A|) knows the true vocals V and accompaniment A; it is applied to the
mixture with the mixture's phase, as the U-Net's mask is, and scored as `mir1k.py` scores the
U-Net (BSS Eval v3 on whole clips, length-weighted GNSDR / GSIR / GSAR). No trained model
gets above it, so it tells how much an STFT setting leaves to gain.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from functools import partial

from common import ideal_ratio_mask, mir1k_figures  # also puts the project's folder on sys.path

from audio import STFT
from config import AudioConfig, Config, apply_overrides, run_script
from evaluate import mir1k_tables, score_mir1k
from tracks import Track, load_tracks


def ideal_ratio_mask_scores(audio: AudioConfig, track: Track) -> str:
    """One clip separated by its ideal ratio mask, scored (the JSON of `score_mir1k`)."""
    mixture, vocals, rate = track.load()  # (1, samples) each: MIR-1K clips are mono
    estimate = ideal_ratio_mask(STFT(audio, rate), mixture, vocals)  # (1, samples)
    references = {"vocals": vocals, "accompaniment": mixture - vocals}
    estimates = {"vocals": estimate, "accompaniment": mixture - estimate}
    return score_mir1k(track.name, rate, references, estimates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="MIR-1K folder (holding Wavfile/)")
    p.add_argument("--set", action="append", default=[], help="audio override, e.g. audio.n_fft=2048")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scoring processes")
    args = p.parse_args()
    audio = apply_overrides(Config(), args.set, sections=("audio",)).audio
    tracks = load_tracks("mir1k", args.root, "test")
    with ProcessPoolExecutor(args.workers) as pool:
        scores = dict(zip([t.name for t in tracks], pool.map(partial(ideal_ratio_mask_scores, audio), tracks)))
    _, summary = mir1k_tables(scores)
    figures = {name: round(value, 2) for name, value in mir1k_figures(summary.to_dict("records")).items()}
    print(json.dumps({"n_fft": audio.n_fft, "hop_length": audio.hop_length, "clips": len(tracks), **figures}))


if __name__ == "__main__":
    run_script(main)
