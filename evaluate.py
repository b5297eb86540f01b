"""Separate a test set with a checkpoint and score it.

    python evaluate.py --dataset musdb --root ~/musdb18                 # the shipped model, or checkpoints/best.pt
    python evaluate.py --dataset musdb --root ~/musdb18hq --is-wav --workers 0 --save-estimates
    python evaluate.py --dataset mir1k --root ../shared/data/MIR-1K --checkpoint checkpoints/best.pt

musdb / stems / demo: BSS Eval v4 (museval's, 1 s frames) on vocals and accompaniment; keeps
museval's JSON per track (OUT/museval/<subset>/<track>.json), writes tracks.csv (per track
and target: median over frames) and summary.csv (median, mean and std over tracks), both
aggregated by museval's own EvalStore, and sdr.png.
mir1k: BSS Eval v3 on whole clips (the MIR-1K papers' protocol), tracks.csv per clip
and summary.csv with GNSDR, GSIR, GSAR (length-weighted means; NSDR = SDR(estimate) -
SDR(mixture)).

How the work flows: the main process separates one track at a time and writes its
estimates to OUT/estimates/<track>/; --workers processes score them (each scorer is
single-threaded), each writing the track's JSON as soon as it is done. The network gets
the cores no scorer is busy on (at least one), so two busy threads rarely share a core.
At most workers + 1 tracks are in flight, so memory does not grow with the number of
tracks; an interrupted run resumes without re-separating (estimates on disk) or
re-scoring (JSON on disk) what is done, and refuses to when OUT holds the work of another
model, other settings or another scorer (OUT/scored-with.json names the checkpoint and
the scorer, and keeps a digest of the weights and config). --scorer fast (the default)
computes museval's BSS Eval v4 numbers with bsseval.py in under a tenth of museval's
time and a sixth of its memory (a scoring process needs about 0.5 GB for 4 minutes of
44.1 kHz stereo, against 3.4 GB); --scorer museval runs museval itself. --workers 0
takes one scoring process per core, as many as fit in the available memory
(BYTES_PER_SAMPLE).
--save-estimates keeps the separated audio.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from audio import read_audio
from backends import BACKENDS, Network
from bsseval import bss_eval_v4
from config import Config, InputError, Interrupted, run_script
from devices import large_buffers_reused
from outputs import atomic_path, pyplot, save_figure, write_text
from separation import OutputFiles, default_checkpoint, load_separator, separate_array
from tracks import Track, load_tracks

METRICS = ("SDR", "SIR", "SAR", "ISR")
TARGETS = ("vocals", "accompaniment")
# Peak memory of a scoring process per sample and channel of a track, two sources, its audio
# included (benchmarks/evaluation.py: for a 4-minute 44.1 kHz stereo track, museval 3.4 GB; the
# fast scorer holds the track's five signals in float32 and about 0.13 GB more: 48 leaves room).
BYTES_PER_SAMPLE = {"fast": 48, "museval": 160, "mir1k": 160}


# ---------------------------------------------------------------- scoring (runs in workers)


def init_scorer(parent: int) -> None:
    """A scoring process: one BLAS thread, so N processes use N cores; Ctrl-C left to evaluate.py
    (a terminal sends it to the whole process group; evaluate.py stops the scorers itself); and
    on Linux it ends with evaluate.py even when that is killed outright (else it would linger)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)


def score_musdb(name: str, rate: int, references: dict[str, np.ndarray], estimates: dict[str, np.ndarray],
                fast: bool = True) -> str:
    """museval's JSON (BSS Eval v4, 1 s windows and hops) for vocals and accompaniment, scored by
    bsseval.py (`fast`) or by museval itself."""
    import museval

    refs, ests = [references[t].T for t in TARGETS], [estimates[t].T for t in TARGETS]  # (samples, channels)
    if fast:
        sdr, isr, sir, sar = bss_eval_v4(refs, ests, window=rate, hop=rate)
    else:
        sdr, isr, sir, sar = museval.evaluate(refs, ests, win=rate, hop=rate, mode="v4")
    store = museval.TrackStore(win=1.0, hop=1.0, track_name=name)
    for i, target in enumerate(TARGETS):
        store.add_target(target, {"SDR": sdr[i].tolist(), "SIR": sir[i].tolist(),
                                  "ISR": isr[i].tolist(), "SAR": sar[i].tolist()})
    return store.json


def bss_eval_v3(references: np.ndarray, estimates: np.ndarray) -> dict[str, np.ndarray]:
    """BSS Eval v3 (bss_eval_sources) on whole mono clips: (sources, samples) in, per source out."""
    from museval.metrics import bss_eval

    sdr, _, sir, sar, _ = bss_eval(references[..., None], estimates[..., None], window=np.inf, hop=np.inf,
                                   compute_permutation=False, bsseval_sources_version=True)
    return {"SDR": sdr.ravel(), "SIR": sir.ravel(), "SAR": sar.ravel()}


def score_mir1k(name: str, rate: int, references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> str:
    """Per-clip SDR/SIR/SAR and NSDR for vocals and accompaniment, as JSON."""
    ref = np.concatenate([references[t] for t in TARGETS])  # (2 sources, samples): clips are mono
    mixture = ref.sum(0)
    est = bss_eval_v3(ref, np.concatenate([estimates[t] for t in TARGETS]))
    mix = bss_eval_v3(ref, np.stack([mixture, mixture]))
    result: dict[str, Any] = {"name": name, "seconds": ref.shape[1] / rate}
    for i, target in enumerate(TARGETS):
        result[target] = {m: float(est[m][i]) for m in ("SDR", "SIR", "SAR")}
        result[target]["NSDR"] = float(est["SDR"][i] - mix["SDR"][i])
    return json.dumps(result)


# How a track is scored, by the name evaluate.py records in scored-with.json.
SCORERS = {"fast": score_musdb, "museval": partial(score_musdb, fast=False), "mir1k": score_mir1k}
SCORER_NAMES = {"fast": "BSS Eval v4 by bsseval.py (museval's numbers)", "museval": "BSS Eval v4 by museval",
                "mir1k": "BSS Eval v3 on whole clips (museval's bss_eval)"}


@dataclass
class Job:
    """One track to score: its reference loader and where its estimates and scores live."""

    track: Track
    estimates: Path  # folder holding vocals.wav and accompaniment.wav
    scores: Path  # the track's JSON


def score_job(job: Job, scorer: str, keep_estimates: bool) -> str:
    """Score one track's estimates against its references and write its JSON (atomically);
    the estimates are removed afterwards unless they are to be kept."""
    mixture, vocals, rate = job.track.load()
    references = {"vocals": vocals, "accompaniment": mixture - vocals}
    estimates = {t: read_audio(job.estimates / f"{t}.wav")[0] for t in TARGETS}
    text = SCORERS[scorer](job.track.name, rate, references, estimates)
    write_text(job.scores, text)
    if not keep_estimates:
        shutil.rmtree(job.estimates, ignore_errors=True)
    return text


# ---------------------------------------------------------------- the run


def separate_to_disk(model: Network, cfg: Config, job: Job) -> None:
    """Separate a track and write its vocals and accompaniment (float wav, renamed when complete)."""
    mixture, _, rate = job.track.load()
    vocals = separate_array(model, cfg, mixture, rate)
    with OutputFiles(job.estimates, rate, mixture.shape[0], "wav", "32f") as out:
        out.write(mixture, vocals)


def run_jobs(model: Network, cfg: Config, jobs: list[Job], scorer: str, workers: int,
             keep_estimates: bool) -> Iterator[str]:
    """Separate (here) and score (in `workers` processes) every job; yields each JSON when done.

    At most workers + 1 jobs are submitted and not finished: while every scorer is busy the
    next track is separated, so it is ready when a scorer frees up, and no more wait.
    """
    context = multiprocessing.get_context("spawn")
    cores = torch.get_num_threads()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_scorer, initargs=(os.getpid(),)) as pool:
        pending: set[Future] = set()
        try:
            for job in jobs:
                if not (job.estimates / "vocals.wav").exists():
                    with torch_threads(max(1, cores - len(pending))), large_buffers_reused():  # cores no scorer uses
                        separate_to_disk(model, cfg, job)
                pending.add(pool.submit(score_job, job, scorer, keep_estimates))
                while len(pending) > workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (future.result() for future in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (future.result() for future in done)
        except Interrupted:
            stop_scorers(pool, jobs[0].scores.parent)
            raise


def stop_scorers(pool: ProcessPoolExecutor, score_dir: Path) -> None:
    """End the scoring processes now, instead of waiting for the tracks they are on, and remove
    what they had begun to write (every JSON is written to a temporary name, then renamed)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.kill()
        child.join()
        for leftover in score_dir.glob(f".*.{child.pid}.partial"):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op threads set to `count` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def available_memory() -> int:
    """Bytes of memory available to new processes (MemAvailable), or 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def scoring_workers(asked: int, tracks: list[Track], scorer: str, channels: int = 2, rate: int = 44100) -> int:
    """How many scoring processes to run: `asked` (0: one per core), at most as many as there are
    tracks, and no more than fit in the available memory (a one-line warning says so)."""
    workers = asked or os.cpu_count() or 1
    workers = max(1, min(workers, len(tracks)))
    longest = max((t.seconds() for t in tracks), default=0.0)
    need = BYTES_PER_SAMPLE[scorer] * channels * longest * rate
    free = available_memory()
    if need and free and workers * need > free:
        fit = max(1, int(free // need))
        print(f"warning: {workers} scoring processes need ~{workers * need / 2**30:.1f} GB for the longest track "
              f"({longest / 60:.1f} min) but {free / 2**30:.1f} GB is available: using {fit}", file=sys.stderr)
        workers = min(workers, fit)
    return workers


def model_fingerprint(network: Network, cfg: Config) -> str:
    """A digest of the weights and the settings that separate and score."""
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for part in network.identity():
        digest.update(part)
    return digest.hexdigest()


def claim_output(out: Path, score_dir: Path, checkpoint: str, fingerprint: str, scorer: str) -> None:
    """Record in OUT/scored-with.json which model separates into OUT and which scorer scores;
    InputError when OUT already holds estimates or scores of another model, other settings or
    another scorer, or of a model it has no record of (resuming from them would mix two models'
    or two scorers' scores in one table)."""
    record = out / "scored-with.json"
    earlier = json.loads(record.read_text()) if record.is_file() else None
    scored = any(score_dir.glob("*.json"))
    done = scored or any((out / "estimates").glob("*/*.wav"))
    if done and earlier is None:
        raise InputError(f"{out}: holds scores with no record of the model that made them ({record.name}); "
                         "choose another --out-dir or delete it")
    if done and earlier["fingerprint"] != fingerprint:
        raise InputError(f"{out}: holds scores of another model or other settings ({earlier['checkpoint']}); "
                         "choose another --out-dir or delete it")
    earlier_scorer = earlier.get("scorer", "museval") if earlier else scorer  # records before --scorer: museval
    if scored and earlier_scorer != scorer:
        raise InputError(f"{out}: holds scores made by the {earlier_scorer} scorer, not {scorer}; "
                         f"use --scorer {earlier_scorer}, another --out-dir, or delete it")
    try:
        score_dir.mkdir(parents=True, exist_ok=True)
        write_text(record, json.dumps({"checkpoint": checkpoint, "fingerprint": fingerprint, "scorer": scorer}))
    except OSError as err:
        raise InputError(f"{out}: cannot create output folder ({err.strerror})") from None


def scores_of(model: Network, cfg: Config, tracks: list[Track], out: Path, score_dir: Path, scorer: str,
              workers: int, keep_estimates: bool) -> dict[str, str]:
    """JSON scores of every track by name: read back when on disk, else separated and scored."""
    jobs = [Job(t, out / "estimates" / t.name, score_dir / f"{t.name}.json") for t in tracks]
    todo = []
    for job in jobs:
        if not job.scores.exists():
            todo.append(job)
        elif not keep_estimates:  # a run stopped between scoring a track and removing its estimates
            shutil.rmtree(job.estimates, ignore_errors=True)
    if todo:
        workers = scoring_workers(workers, [job.track for job in todo], scorer)
        try:
            with tqdm(total=len(todo), desc="tracks", unit="track", disable=None) as bar:
                for _ in run_jobs(model, cfg, todo, scorer, workers, keep_estimates):
                    bar.update()
        except Interrupted as stop:
            done = sum(job.scores.exists() for job in jobs)
            stop.kept = f"{done} of {len(jobs)} tracks are scored in {score_dir}; the same command resumes"
            raise
    with contextlib.suppress(OSError):
        (out / "estimates").rmdir()  # only when empty: nothing was kept
    return {job.track.name: job.scores.read_text() for job in jobs}


# ---------------------------------------------------------------- reading scores back


def museval_tables(scores: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per track and target, the median over frames (tracks); per target and metric, the median,
    mean and std over tracks (summary). Medians and means are museval's own: EvalStore on the JSONs."""
    import museval
    from museval.aggregate import json2df

    stores = {agg: museval.EvalStore(frames_agg="median", tracks_agg=agg) for agg in ("median", "mean")}
    for name, text in scores.items():
        frame_scores = json2df(json.loads(text), name)
        for store in stores.values():
            store.add_track(frame_scores)
    order = pd.MultiIndex.from_product([list(scores), TARGETS], names=["track", "target"])
    tracks = stores["median"].agg_frames_scores().unstack("metric").reindex(index=order, columns=list(METRICS))
    per_metric = tracks.stack(future_stack=True).groupby(["target", "metric"], sort=False)  # over tracks
    summary = pd.DataFrame({"tracks": per_metric.count(),
                            "median": stores["median"].agg_frames_tracks_scores(),
                            "mean": stores["mean"].agg_frames_tracks_scores(),
                            "std": per_metric.std(ddof=0)})
    summary = summary.reindex(pd.MultiIndex.from_product([TARGETS, METRICS], names=["target", "metric"]))
    return tracks.reset_index().rename_axis(columns=None), summary.reset_index()


def mir1k_tables(scores: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per clip and target, SDR/SIR/SAR/NSDR; per target and metric, the length-weighted mean
    (GNSDR, GSIR, GSAR), mean, std and median over clips."""
    rows = []
    for name, text in scores.items():
        data = json.loads(text)
        rows += [{"track": name, "target": t, "seconds": data["seconds"], **data[t]} for t in TARGETS]
    clips = pd.DataFrame(rows)
    long = clips.melt(id_vars=["track", "target", "seconds"], value_vars=["NSDR", "SDR", "SIR", "SAR"],
                      var_name="metric")
    long["weighted"] = long["value"] * long["seconds"]
    groups = long.groupby(["target", "metric"], sort=False)
    summary = pd.DataFrame({"tracks": groups["value"].count(),
                            "weighted_mean": groups["weighted"].sum() / groups["seconds"].sum(),
                            "mean": groups["value"].mean(), "std": groups["value"].std(ddof=0),
                            "median": groups["value"].median()})
    return clips, summary.reset_index()


def write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.4f")


def plot_sdr(path: Path, tracks: pd.DataFrame, title: str) -> None:
    """Box plot of SDR per target across tracks."""
    plt = pyplot()
    data = [tracks.loc[tracks["target"] == t, "SDR"].dropna().to_numpy() for t in TARGETS]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(TARGETS) + 1), TARGETS)
    ax.set_ylabel("SDR (dB)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def evaluate_model(checkpoint: str | Path | None, dataset: str, root: str | None, subset: str = "test",
                   is_wav: bool = False, out_dir: str | Path | None = None, workers: int = 1,
                   tracks: int | None = None, device: str = "auto", overrides: list[str] = (),
                   keep_estimates: bool = False, scorer: str = "fast", backend: str = "torch") -> list[dict[str, Any]]:
    """Separate (on `backend`) and score a test set (MUSDB18-like sets by `scorer`: "fast" or
    "museval"; MIR-1K by BSS Eval v3); writes the CSVs (and plot) and returns the summary rows."""
    model, cfg = load_separator(checkpoint, device, list(overrides), dataset, backend)
    out = Path(out_dir or f"results/eval/{dataset}-{subset}")
    selected = load_tracks(dataset, root, subset, is_wav)[:tracks]
    scorer = "mir1k" if dataset == "mir1k" else scorer
    score_dir = out / "clips" if scorer == "mir1k" else out / "museval" / subset  # museval's layout
    claim_output(out, score_dir, str(checkpoint or default_checkpoint(dataset)), model_fingerprint(model, cfg), scorer)
    scores = scores_of(model, cfg, selected, out, score_dir, scorer, workers, keep_estimates)
    tracks_table, summary = (mir1k_tables if scorer == "mir1k" else museval_tables)(scores)
    write_csv(out / "tracks.csv", tracks_table)
    write_csv(out / "summary.csv", summary)
    plot_sdr(out / "sdr.png", tracks_table, f"{dataset} {subset}: {len(selected)} tracks")
    return summary.to_dict("records")


def commit() -> str:
    """The short commit of the code that scored, with '+' if it has uncommitted changes ('' outside git)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+" if head and dirty else "")


def format_summary(summary: list[dict[str, Any]]) -> str:
    weighted = "weighted_mean" in summary[0]
    header = f"{'target':<14}{'metric':<7}{'tracks':>7}{'median':>9}{'mean':>9}{'std':>8}"
    lines = [header + (f"{'weighted':>10}" if weighted else "")]
    for r in summary:
        line = f"{r['target']:<14}{r['metric']:<7}{r['tracks']:>7}{r['median']:>9.2f}{r['mean']:>9.2f}{r['std']:>8.2f}"
        lines.append(line + (f"{r['weighted_mean']:>10.2f}" if weighted else ""))
    if weighted:
        g = {(r["target"], r["metric"]): r["weighted_mean"] for r in summary}
        for target in TARGETS:
            lines.append(f"{target}: GNSDR {g[target, 'NSDR']:.2f} dB  GSIR {g[target, 'SIR']:.2f} dB  "
                         f"GSAR {g[target, 'SAR']:.2f} dB")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="musdb", choices=["musdb", "mir1k", "stems", "demo"])
    p.add_argument("--root", help="dataset folder (default for musdb: $MUSDB_PATH)")
    p.add_argument("--is-wav", action="store_true", help="MUSDB18-HQ (wav) instead of .stem.mp4")
    p.add_argument("--subset", default="test", choices=["train", "test"])
    p.add_argument("--checkpoint", help="default: checkpoints/best.pt when it exists, else the shipped model")
    p.add_argument("--out-dir", help="default: results/eval/<dataset>-<subset>")
    p.add_argument("--workers", type=int, default=1,
                   help="scoring processes (0: one per core, as many as fit in memory)")
    p.add_argument("--save-estimates", action="store_true", help="keep OUT/estimates/<track>/*.wav")
    p.add_argument("--tracks", type=int, help="only the first N tracks")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="what runs the network (a .onnx --checkpoint always runs on onnxruntime)")
    p.add_argument("--scorer", default="fast", choices=["fast", "museval"],
                   help="BSS Eval v4 by bsseval.py (the same numbers, about 20x faster) or by museval itself "
                        "(musdb, stems, demo; MIR-1K is always scored with BSS Eval v3)")
    p.add_argument("--set", action="append", default=[], metavar="separation.FIELD=VALUE",
                   help="change how the model is applied, e.g. --set separation.patch_overlap=0.5")
    return p.parse_args(argv)


def report(args: argparse.Namespace) -> None:
    """Evaluate as the flags say and print the summary, the scorer, the checkpoint and the commit."""
    root = args.root or (os.environ.get("MUSDB_PATH") if args.dataset == "musdb" else None)
    checkpoint = args.checkpoint or str(default_checkpoint(args.dataset))
    if args.workers < 0:
        raise InputError(f"--workers {args.workers}: expected 0 (auto) or more")
    summary = evaluate_model(checkpoint, args.dataset, root, args.subset, args.is_wav, args.out_dir, args.workers,
                             args.tracks, args.device, args.set, args.save_estimates, args.scorer, args.backend)
    print(format_summary(summary))
    scorer = "mir1k" if args.dataset == "mir1k" else args.scorer
    print(f"scores: {SCORER_NAMES[scorer]}; checkpoint: {checkpoint}; "
          f"code: commit {commit() or 'unknown (not a git checkout)'}")


def main() -> None:
    run_script(lambda: report(parse_args()))


if __name__ == "__main__":
    main()
