"""Separate a test set with a checkpoint and score it.

    python evaluate.py --dataset musdb --root ~/musdb18 --checkpoint checkpoints/best.pt
    python evaluate.py --dataset musdb --root ../shared/data/musdb18-sample --workers 2
    python evaluate.py --dataset mir1k --root ../shared/data/MIR-1K

musdb: museval (BSS Eval v4, 1 s frames) on vocals and accompaniment; keeps museval's
JSON per track, writes tracks.csv (per track and target: median over frames of SDR,
SIR, SAR, ISR), summary.csv (mean, std and median over tracks) and sdr.png.
mir1k: BSS Eval v3 on whole clips (the MIR-1K papers' protocol), tracks.csv per clip
and summary.csv with GNSDR, GSIR, GSAR (length-weighted means; NSDR = SDR(estimate) -
SDR(mixture)). Scores go to OUT (default results/eval/<dataset>-<subset>); a run that
is interrupted resumes without re-scoring finished tracks. --workers scores tracks in
parallel processes while the main process separates the next ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from config import Config, InputError
from data_generator import Track, load_tracks
from inference import load_separator, separate_array
from unet_model import UNet

METRICS = ("SDR", "SIR", "SAR", "ISR")


def separate_track(model: UNet, cfg: Config, mixture: np.ndarray, rate: int) -> dict[str, np.ndarray]:
    """{'vocals', 'accompaniment'} estimates (channels, samples) of one mixture."""
    vocals = separate_array(model, cfg, mixture, rate)
    return {"vocals": vocals, "accompaniment": mixture - vocals}


# ---------------------------------------------------------------- scoring (runs in workers)


def limit_threads() -> None:
    """One BLAS thread per scoring worker, so N workers use N cores."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def score_musdb(name: str, rate: int, references: dict[str, np.ndarray],
                estimates: dict[str, np.ndarray]) -> str:
    """museval's JSON (BSS Eval v4, 1 s windows and hops) for vocals and accompaniment."""
    import museval

    targets = ("vocals", "accompaniment")
    sdr, isr, sir, sar = museval.evaluate([references[t].T for t in targets],
                                          [estimates[t].T for t in targets], win=rate, hop=rate, mode="v4")
    store = museval.TrackStore(win=1.0, hop=1.0, track_name=name)
    for i, target in enumerate(targets):
        store.add_target(target, {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(),
                                  "ISR": isr[i].tolist(), "SAR": sar[i].tolist()})
    return store.json


def bss_eval_v3(references: np.ndarray, estimates: np.ndarray) -> dict[str, np.ndarray]:
    """BSS Eval v3 (bss_eval_sources) on whole mono clips: (sources, samples) in, per source out."""
    from museval.metrics import bss_eval

    sdr, _, sir, sar, _ = bss_eval(references[..., None], estimates[..., None], window=np.inf, hop=np.inf,
                                   compute_permutation=False, bsseval_sources_version=True)
    return {"SDR": sdr.ravel(), "SIR": sir.ravel(), "SAR": sar.ravel()}


def score_mir1k(name: str, rate: int, references: dict[str, np.ndarray],
                estimates: dict[str, np.ndarray]) -> str:
    """Per-clip SDR/SIR/SAR and NSDR for vocals and accompaniment, as JSON."""
    targets = ("vocals", "accompaniment")
    ref = np.concatenate([references[t] for t in targets])
    mixture = ref.sum(0)
    est = bss_eval_v3(ref, np.concatenate([estimates[t] for t in targets]))
    mix = bss_eval_v3(ref, np.stack([mixture, mixture]))
    result: dict[str, Any] = {"name": name, "seconds": ref.shape[1] / rate}
    for i, target in enumerate(targets):
        result[target] = {m: float(est[m][i]) for m in ("SDR", "SIR", "SAR")}
        result[target]["NSDR"] = float(est["SDR"][i] - mix["SDR"][i])
    return json.dumps(result)


# ---------------------------------------------------------------- reading scores back


def musdb_track_rows(name: str, text: str) -> list[dict[str, Any]]:
    """Per target: the median over frames of each metric (NaN frames ignored, as museval does)."""
    rows = []
    for target in json.loads(text)["targets"]:
        values = {m: [f["metrics"][m] for f in target["frames"]] for m in METRICS}
        row = {"track": name, "target": target["name"]}
        for m in METRICS:
            finite = [v for v in values[m] if v is not None and math.isfinite(v)]
            row[m] = float(np.median(finite)) if finite else float("nan")
        rows.append(row)
    return rows


def mir1k_track_rows(name: str, text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    return [{"track": name, "target": t, "seconds": data["seconds"], **data[t]}
            for t in ("vocals", "accompaniment")]


def summarize(rows: list[dict[str, Any]], metrics: tuple[str, ...], weighted: bool) -> list[dict[str, Any]]:
    """Mean, std and median over tracks per target and metric (+ length-weighted mean)."""
    summary = []
    for target in sorted({r["target"] for r in rows}, key=["vocals", "accompaniment"].index):
        chosen = [r for r in rows if r["target"] == target]
        for m in metrics:
            values = np.array([r[m] for r in chosen], dtype=float)
            ok = np.isfinite(values)
            row = {"target": target, "metric": m, "tracks": int(ok.sum()),
                   "mean": float(np.mean(values[ok])) if ok.any() else float("nan"),
                   "std": float(np.std(values[ok])) if ok.any() else float("nan"),
                   "median": float(np.median(values[ok])) if ok.any() else float("nan")}
            if weighted:
                seconds = np.array([r["seconds"] for r in chosen])[ok]
                row["weighted_mean"] = float(np.sum(values[ok] * seconds) / np.sum(seconds))
            summary.append(row)
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    os.replace(tmp, path)


def plot_sdr(path: Path, rows: list[dict[str, Any]], title: str) -> None:
    """Box plot of SDR per target across tracks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t for t in ("vocals", "accompaniment") if any(r["target"] == t for r in rows)]
    data = [[r["SDR"] for r in rows if r["target"] == t and math.isfinite(r["SDR"])] for t in targets]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(targets) + 1), targets)
    ax.set_ylabel("SDR (dB)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the run


def scored_tracks(model: UNet, cfg: Config, tracks: list[Track], score_dir: Path, scorer: Any,
                  workers: int) -> Iterator[tuple[str, str]]:
    """(name, JSON scores) of every track: read back when on disk, else separated and scored."""
    todo = []
    for track in tracks:
        path = score_dir / f"{track.name}.json"
        if path.exists():
            yield track.name, path.read_text()
        else:
            todo.append(track)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max(1, workers), mp_context=context, initializer=limit_threads) as pool:
        pending: list[tuple[str, Path, Future]] = []
        for track in tqdm(todo, desc="separating", leave=False, disable=None):
            mixture, vocals, rate = track.load()
            estimates = separate_track(model, cfg, mixture, rate)
            references = {"vocals": vocals, "accompaniment": mixture - vocals}
            pending.append((track.name, score_dir / f"{track.name}.json",
                            pool.submit(scorer, track.name, rate, references, estimates)))
        for name, path, future in tqdm(pending, desc="scoring", leave=False, disable=None):
            text = future.result()
            tmp = path.with_name(f".{path.name}.partial")
            tmp.write_text(text)
            os.replace(tmp, path)
            yield name, text


def evaluate_model(checkpoint: str | Path, dataset: str, root: str | None, subset: str = "test",
                   is_wav: bool = False, out_dir: str | Path | None = None, workers: int = 1,
                   tracks: int | None = None, device: str = "auto",
                   overrides: list[str] = ()) -> list[dict[str, Any]]:
    """Separate and score a test set; writes the CSVs (and plot) and returns the summary rows."""
    model, cfg = load_separator(str(checkpoint), device, list(overrides))
    out = Path(out_dir or f"results/eval/{dataset}-{subset}")
    selected = load_tracks(dataset, root, subset, is_wav)[:tracks]
    if dataset == "mir1k":
        score_dir, scorer, to_rows = out / "clips", score_mir1k, mir1k_track_rows
        metrics: tuple[str, ...] = ("NSDR", "SDR", "SIR", "SAR")
    else:
        score_dir, scorer, to_rows = out / "museval" / subset, score_musdb, musdb_track_rows
        metrics = METRICS
    try:
        score_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{out}: cannot create output folder ({err.strerror})") from None
    rows = [row for name, text in scored_tracks(model, cfg, selected, score_dir, scorer, workers)
            for row in to_rows(name, text)]
    summary = summarize(rows, metrics, weighted=dataset == "mir1k")
    write_csv(out / "tracks.csv", rows)
    write_csv(out / "summary.csv", summary)
    plot_sdr(out / "sdr.png", rows, f"{dataset} {subset}: {len(selected)} tracks")
    return summary


def format_summary(summary: list[dict[str, Any]]) -> str:
    weighted = "weighted_mean" in summary[0]
    header = f"{'target':<14}{'metric':<7}{'tracks':>7}{'mean':>9}{'std':>8}{'median':>9}"
    lines = [header + (f"{'weighted':>10}" if weighted else "")]
    for r in summary:
        line = f"{r['target']:<14}{r['metric']:<7}{r['tracks']:>7}{r['mean']:>9.2f}{r['std']:>8.2f}{r['median']:>9.2f}"
        lines.append(line + (f"{r['weighted_mean']:>10.2f}" if weighted else ""))
    if weighted:
        g = {(r["target"], r["metric"]): r["weighted_mean"] for r in summary}
        for target in ("vocals", "accompaniment"):
            lines.append(f"{target}: GNSDR {g[target, 'NSDR']:.2f} dB  GSIR {g[target, 'SIR']:.2f} dB  "
                         f"GSAR {g[target, 'SAR']:.2f} dB")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="musdb", choices=["musdb", "mir1k", "stems", "demo"])
    p.add_argument("--root", help="dataset folder (default for musdb: $MUSDB_PATH)")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav) instead of .stem.mp4")
    p.add_argument("--subset", default="test", choices=["train", "test"])
    p.add_argument("--checkpoint", default="checkpoints/best.pt")
    p.add_argument("--out-dir", help="default: results/eval/<dataset>-<subset>")
    p.add_argument("--workers", type=int, default=1, help="parallel scoring processes")
    p.add_argument("--tracks", type=int, help="only the first N tracks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--set", action="append", default=[], metavar="separation.FIELD=VALUE",
                   help="change how the model is applied, e.g. --set separation.overlap=0.5")
    return p.parse_args(argv)


def main() -> None:
    args = parse_args()
    root = args.root or (os.environ.get("MUSDB_PATH") if args.dataset == "musdb" else None)
    try:
        summary = evaluate_model(args.checkpoint, args.dataset, root, args.subset, args.is_wav,
                                 args.out_dir, args.workers, args.tracks, args.device, args.set)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print(format_summary(summary))


if __name__ == "__main__":
    main()
