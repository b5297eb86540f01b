"""MUSDB18: train the default recipe, then score it on the test set beside the shipped MIR-1K
model, the ideal ratio mask and the mixture itself.

    python benchmarks/musdb.py --root ../shared/data/musdb18-preview --minutes 60
    python benchmarks/musdb.py --root ../shared/data/musdb18-preview --skip-training   # the others only
    python benchmarks/musdb.py --root ~/musdb18 --checkpoint checkpoints/musdb/best.pt
    python benchmarks/musdb.py --root ../shared/data/musdb18-preview --split valid --model-only \
        --set train.lr=5e-4 --out checkpoints/lr5e-4      # a lever of the recipe, scored where it is chosen
    python benchmarks/musdb.py --root ../shared/data/musdb18-preview --split valid --model-only \
        --seeds 42,7 --out checkpoints/soup        # two runs of the recipe, their weights averaged
    python benchmarks/musdb.py --root ../shared/data/musdb18-preview --checkpoint pretrained/unet-musdb.pt \
        --split valid --model-only --separate separation.mask_power=2   # a way of applying the model

Training: `train.py --dataset musdb`, the recipe of the shipped model (config.RECIPES) on musdb's
training split, --minutes its wall-clock cap; the checkpoint kept is the one with the best loss on
musdb's validation split. Scores: BSS Eval v4
(museval's numbers, bsseval.py), per target SDR / SIR / ISR / SAR, median over 1-s frames,
then median over songs (museval's EvalStore); and the vocals' SDR above 8 kHz (the band of
the whole song above 8 kHz, 0 dB = nothing recovered), median over songs. The ideal ratio mask
|V| / (|V| + |A|) per channel at n_fft 4096 / hop 1024 knows the true sources: no masking
separator gets above it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from common import cpu_name, ideal_ratio_mask  # also puts the project's folder on sys.path
from fullband import band_sdr

from audio import STFT
from config import AudioConfig, apply_overrides, run_script
from evaluate import TARGETS, museval_tables, score_musdb
from separation import SHIPPED_MIR1K, separate_array
from tracks import Track, load_tracks
from train import parse_args as train_args
from train import train
from unet_model import average_checkpoints, load_model

# (mixture, true vocals, rate) -> the estimates of the vocals and of the accompaniment, (channels, samples) each
Separator = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def model_separator(checkpoint: str | Path, separation: Sequence[str] = ()) -> Separator:
    """A model's separator, with `separation.field=value` overrides (mask power, blend, overlap)."""
    model, cfg = load_model(checkpoint)
    cfg = apply_overrides(cfg, list(separation), sections=("separation",))

    def separate(mixture: np.ndarray, vocals: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        estimate = separate_array(model, cfg, mixture, rate)
        return estimate, mixture - estimate

    return separate


def oracle(mixture: np.ndarray, vocals: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The ideal ratio mask of each channel at n_fft 4096, hop 1024."""
    estimate = ideal_ratio_mask(STFT(AudioConfig(sample_rate=rate, n_fft=4096, hop_length=1024), rate), mixture, vocals)
    return estimate, mixture - estimate


def split_tracks(root: str, split: str) -> list[Track]:
    """musdb's test set, or the validation split of its training set (where choices are made)."""
    return load_tracks("musdb", root, "test") if split == "test" else load_tracks("musdb", root, "train", split="valid")


def scores(separator: Separator, tracks: list[Track]) -> dict[str, float]:
    """Median over songs of each target's metrics (medians over frames) and of the vocals' SDR above 8 kHz."""
    jsons, high = {}, []
    for track in tracks:
        mixture, vocals, rate = track.load()
        estimates = dict(zip(TARGETS, separator(mixture, vocals, rate)))
        references = {"vocals": vocals, "accompaniment": mixture - vocals}
        jsons[track.name] = score_musdb(track.name, rate, references, estimates)
        high.append(band_sdr(vocals, estimates["vocals"], rate, 8000, rate / 2 + 1))
    _, summary = museval_tables(jsons)
    figures = {f"{r['target']} {r['metric']}": r["median"] for r in summary.to_dict("records")}
    return {**figures, "vocals SDR > 8 kHz": float(np.median(high)), "songs": len(jsons)}


def table(rows: dict[str, dict[str, float]]) -> str:
    columns = [f"{t} {m}" for t in TARGETS for m in ("SDR", "SIR", "ISR", "SAR")]
    columns.insert(4, "vocals SDR > 8 kHz")
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines)


def seed_list(text: str) -> list[int]:
    """--seeds 42,7 -> [42, 7]."""
    return [int(seed) for seed in text.split(",")]


def train_recipe(args: argparse.Namespace) -> Path:
    """The recipe trained under `args.out` (`--minutes` each run): one run, or with several
    `--seeds` one run per seed under out/seed-N and their weights averaged into out/soup.pt."""
    flags = ["--dataset", "musdb", "--root", args.root, "--max-minutes", str(args.minutes)]
    flags += ["--init", args.init] if args.init else []
    flags += [f for s in args.set for f in ("--set", s)]

    def run(seed: int | None, out: Path) -> Path:
        seeded = ["--seed", str(seed)] if seed is not None else []
        return train(train_args([*flags, *seeded, "--checkpoint-dir", str(out)])) / "best.pt"

    if len(args.seeds) == 1:
        return run(args.seeds[0], Path(args.out))
    runs = [run(seed, Path(args.out) / f"seed-{seed}") for seed in args.seeds]
    return average_checkpoints(runs, Path(args.out) / "soup.pt", seeds=",".join(map(str, args.seeds)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a MUSDB18 folder (train/ and test/), e.g. the 7-second preview")
    p.add_argument("--minutes", type=float, default=60.0, help="training budget")
    p.add_argument("--checkpoint", help="score this model instead of training one")
    p.add_argument("--skip-training", action="store_true", help="score the shipped model and the oracles only")
    p.add_argument("--out", default="checkpoints/musdb", help="where the trained checkpoints go")
    p.add_argument("--set", action="append", default=[], help="training override, e.g. train.loss=magnitude")
    p.add_argument("--init", help="start from this model's weights (train.py --init)")
    p.add_argument("--seeds", type=seed_list, default=[None],
                   help="one run per seed (e.g. 42,7), their weights averaged (unet_model.average_checkpoints)")
    p.add_argument("--split", choices=["test", "valid"], default="test",
                   help="score musdb's test set, or its validation split (to choose on)")
    p.add_argument("--separate", action="append", default=[], metavar="separation.FIELD=VALUE",
                   help="how the trained model is applied, e.g. separation.mask_power=2")
    p.add_argument("--model-only", action="store_true", help="score the trained model alone (no references)")
    args = p.parse_args()
    checkpoint = args.checkpoint
    if checkpoint is None and not args.skip_training:
        checkpoint = str(train_recipe(args))
    systems: dict[str, Separator] = {}
    if checkpoint:
        systems[f"this recipe ({checkpoint}{''.join(' ' + s for s in args.separate)})"] = \
            model_separator(checkpoint, args.separate)
    if not args.model_only:
        systems["the shipped MIR-1K model"] = model_separator(SHIPPED_MIR1K)
        systems["ideal ratio mask, n_fft 4096 / hop 1024 (oracle)"] = oracle
        systems["the mixture as the estimate of each target"] = lambda mixture, vocals, rate: (mixture, mixture)
    tracks = split_tracks(args.root, args.split)
    rows = {name: scores(separator, tracks) for name, separator in systems.items()}
    print(f"machine: {cpu_name()}; {len(tracks)} {args.split} songs under {args.root}")
    print(table(rows))


if __name__ == "__main__":
    run_script(main)
