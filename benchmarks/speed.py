"""Speed and memory, side by side: our separator's levers against Open-Unmix on the same song.

    python benchmarks/speed.py                                  # deployment, levers, peers, long songs, training
    python benchmarks/speed.py --only deploy                    # whole processes on 3 songs of 3 minutes
    python benchmarks/speed.py --checkpoint pretrained/unet-mir1k.pt --only ours
    python benchmarks/speed.py --only quality --mir1k ../shared/data/MIR-1K   # each lever's quality

--only deploy times whole processes from outside on --songs songs of --minutes (3 and 3):
Open-Unmix's job (the umxhq model's code, vocals and the residual, Wiener niter=1: what its
`umx` command does, less the download of its weights) against `python inference.py` with the
shipped model on each backend and lever, the median of --runs runs, with the peak resident
memory of the largest process; then the streaming separator's latency and real-time factor.
Every other measurement runs in its own process (peak resident memory is that process's
ru_maxrss). "separation s" times read, STFT, network, inverse STFT and write of the whole
song inside the process; "process s" is the whole `python inference.py song.wav` command
from outside (interpreter start, imports, model load included). The song is stereo
44.1 kHz, made by looping ../shared/data/songs/audio_example.mp3 (or a synthetic demo song
where that is absent). Each lever row changes one separation setting of the default.
Open-Unmix uses the shape of its umxhq model with random weights (the same cost as trained
ones): vocals plus the residual (its two-stem use), with its Wiener filter at niter=1 and
without (niter=0), and all four umxhq targets at niter=1 (pip install --no-deps
openunmix). Demucs v4 (HTDemucs, random weights) runs when the `demucs` package imports
(pip install --no-deps demucs==4.0.1 julius einops omegaconf antlr4-python3-runtime==4.9.3
dora-search treetable retrying submitit). --only quality scores each lever with one
checkpoint: MIR-1K GNSDR on the test clips under --mir1k and museval vocals SDR on the
MUSDB18 excerpts in ../shared/data/musdb18-sample. Also measured: training throughput
(patches/s, share of step time spent waiting for data) in the default precision (bfloat16
where the CPU computes it natively, else float32) and in float32, with a DataLoader worker,
and with the network under torch.compile.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import SAMPLE, cpu_name, mir1k_figures

from audio import read_audio, resample
from config import Config, apply_overrides
from demo_data import synthesize_song
from separation import SHIPPED
from unet_model import UNet, load_model, prepare_for_inference

SONG = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "songs" / "audio_example.mp3"
RATE = 44100


def make_song(path: Path, minutes: float, offset: int = 0) -> Path:
    """A stereo 44.1 kHz PCM-16 wav of `minutes`, written block by block (`offset`: another song,
    the source rotated by that many seconds)."""
    if SONG.exists():
        block, rate = read_audio(SONG)
        block = resample(block, rate, RATE)
    else:
        block = synthesize_song(np.random.default_rng(0), 20.0, RATE)["mixture"]
    block = np.roll(block, -offset * RATE, axis=1)
    total = int(minutes * 60 * RATE)
    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16") as f:
        written = 0
        while written < total:
            part = block[:2, : total - written]
            f.write(part.T)
            written += part.shape[1]
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# (name, separation overrides): the default, then one lever changed at a time
LEVERS = [
    ("default", []),
    ("75 % overlap, Hann blend", ["separation.patch_overlap=0.75", "separation.blend=hann"]),
    ("75 % overlap, plain mean (the earlier default)", ["separation.patch_overlap=0.75", "separation.blend=mean"]),
    ("50 % overlap, Hann blend", ["separation.patch_overlap=0.5", "separation.blend=hann"]),
    ("50 % overlap, plain mean", ["separation.patch_overlap=0.5", "separation.blend=mean"]),
    ("no overlap", ["separation.patch_overlap=0"]),
    ("one network pass (default for the shipped model: two, the input moved up 0 and 1 bins)",
     ["separation.bin_shifts=0"]),
    ("a mask per channel (default: one from the channels' mean magnitude)", ["separation.stereo=each"]),
    ("float32 network (default: bfloat16 where native)", ["separation.bfloat16=false"]),
    ("batches of 64 patches (default: 16)", ["separation.batch_size=64"]),
]


def separator(checkpoint: str | None, overrides: list[str]) -> tuple[UNet, Config]:
    if checkpoint:
        model, cfg = load_model(checkpoint)
    else:
        cfg = Config()
        model = prepare_for_inference(UNet(cfg.model))
    return model, apply_overrides(cfg, overrides, sections=("separation",))


class ConstantMask(torch.nn.Module):
    """A network that costs nothing (every bin half vocals): what separation costs around the network."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # TorchNetwork reads the device from the parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x[:, :1], 0.5)


def child_ours(song: Path, overrides: list[str], checkpoint: str | None, network: bool = True) -> dict:
    from inference import separate_file

    model, cfg = separator(checkpoint, overrides)
    if not network:
        model = ConstantMask()
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        separate_file(model, cfg, song, Path(out))
        return {"seconds": time.perf_counter() - started}


def whole_process(song: Path, checkpoint: str) -> float:
    """Wall seconds of `python inference.py song --checkpoint ...`, from outside."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "inference.py", str(song), "--checkpoint", checkpoint, "--out-dir", out],
                       cwd=Path(__file__).resolve().parent.parent, check=True, capture_output=True)
        return time.perf_counter() - started


def startup_seconds() -> float:
    """Wall seconds of `python -c "import inference"` (interpreter start and imports), best of 3."""
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import inference"], cwd=Path(__file__).resolve().parent.parent,
                       check=True)
        runs.append(time.perf_counter() - started)
    return min(runs)


def quality(checkpoint: str, overrides: list[str], mir1k: str | None) -> str:
    """MIR-1K vocals GNSDR (test clips under `mir1k`) and museval vocals SDR on the MUSDB18 excerpts."""
    from evaluate import evaluate_model

    parts = []
    with tempfile.TemporaryDirectory() as out:
        if mir1k:
            summary = evaluate_model(checkpoint, "mir1k", mir1k, out_dir=Path(out) / "mir1k", workers=2,
                                     overrides=overrides)
            parts.append(f"{mir1k_figures(summary)['GNSDR']:.2f}")
        for subset in ("test", "train"):
            summary = evaluate_model(checkpoint, "musdb", str(SAMPLE), subset, out_dir=Path(out) / subset,
                                     workers=2, overrides=overrides)
            sdr = next(r["median"] for r in summary if r["target"] == "vocals" and r["metric"] == "SDR")
            parts.append(f"{sdr:.2f}")
    return " | ".join(parts)


def time_peer(song: Path, vocals_of: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """Wall time of read, `vocals_of` on the (1, channels, samples) mixture, and write of both stems."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        audio, rate = sf.read(str(song), dtype="float32", always_2d=True)
        with torch.inference_mode():
            vocals = vocals_of(torch.from_numpy(audio.T.copy())[None]).numpy().T
        sf.write(os.path.join(out, "vocals.wav"), vocals, rate, subtype="FLOAT")
        sf.write(os.path.join(out, "accompaniment.wav"), audio - vocals, rate, subtype="FLOAT")
        return {"seconds": time.perf_counter() - started}


def child_umx(song: Path, niter: int, targets: int) -> dict:
    # openunmix imports torchaudio at package level; torchaudio cannot load beside this torch,
    # and the separator path used here never calls it, so an empty module stands in for it.
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    from openunmix.model import OpenUnmix, Separator

    names = ["vocals", "drums", "bass", "other"][:targets]
    models = {n: OpenUnmix(nb_bins=4096 // 2 + 1, nb_channels=2, hidden_size=512, max_bin=1487).eval()
              for n in names}
    separator = Separator(models, niter=niter, residual=targets == 1, n_fft=4096, n_hop=1024, nb_channels=2,
                          sample_rate=RATE, filterbank="torch").eval()
    return time_peer(song, lambda mix: separator(mix)[0, 0])


def umx_process(songs: list[Path]) -> None:
    """Open-Unmix's whole job on songs, as its own `umx` command does it with the umxhq model:
    imports, the model (random weights: its pretrained ones are a download), then per song read,
    separate (vocals and the residual, Wiener niter=1) and write. Run as a process of its own."""
    started = time.perf_counter()
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # as in child_umx
    from openunmix.model import OpenUnmix, Separator

    model = OpenUnmix(nb_bins=4096 // 2 + 1, nb_channels=2, hidden_size=512, max_bin=1487).eval()
    separator = Separator({"vocals": model}, niter=1, residual=True, n_fft=4096, n_hop=1024, nb_channels=2,
                          sample_rate=RATE, filterbank="torch").eval()
    for song in songs:
        time_peer(song, lambda mix: separator(mix)[0, 0])
    print(json.dumps({"seconds": time.perf_counter() - started}))


def measured(command: list[str]) -> dict:
    """Wall seconds of a command from outside and its peak resident memory (the largest of its
    processes: RUSAGE_CHILDREN of a process that runs only it)."""
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
               "print(json.dumps({'seconds': time.perf_counter() - t, "
               "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    result = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(result.stdout)


def child_demucs(song: Path) -> dict:
    """Demucs v4 (HTDemucs, default shape, 4 sources, random weights) through its apply_model."""
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # as for Open-Unmix
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    model = HTDemucs(sources=["drums", "bass", "other", "vocals"]).eval()
    return time_peer(song, lambda mix: apply_model(model, mix, overlap=0.25, progress=False)[0, 3])


def child_train(steps: int, workers: int, precision: str, compiled: bool) -> dict:
    """Patches per second, the share of step time spent waiting for data (demo set), and the
    seconds of the first 3 steps (excluded from the rate; with `compiled`, the network's
    torch.compile happens there)."""
    from torch.utils.data import DataLoader

    from data_generator import PatchDataset, worker_seed
    from demo_data import make_demo
    from tracks import load_tracks
    from train import Trainer

    cfg = Config()
    dataset = PatchDataset(load_tracks("demo", make_demo(), "train"), cfg, remix=True)
    loader = DataLoader(dataset, cfg.train.batch_size, shuffle=True, drop_last=True, num_workers=workers,
                        collate_fn=dataset.collate, worker_init_fn=worker_seed, persistent_workers=workers > 0)
    model = UNet(cfg.model).to(memory_format=torch.channels_last)
    trainer = Trainer(cfg, model, torch.device("cpu"), precision)
    if compiled:  # the network only; the loss and the optimizer stay eager
        trainer.model = torch.compile(model)
    waited = done = 0
    started = time.perf_counter()
    while done < steps:
        tick = time.perf_counter()
        for mix, vocals in loader:
            waited += time.perf_counter() - tick
            trainer.step(mix, vocals)
            done += 1
            if done == 3:  # warm-up excluded
                warm_up = time.perf_counter() - started
                waited, started = 0.0, time.perf_counter()
            if done >= steps:
                break
            tick = time.perf_counter()
    seconds = time.perf_counter() - started
    return {"patches_per_second": (steps - 3) * cfg.train.batch_size / seconds, "data_wait": waited / seconds,
            "warm_up_s": warm_up, "precision": str(trainer.dtype or torch.float32).removeprefix("torch.")}


def run_child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    kind = args.child[0]
    if kind in ("ours", "floor"):
        checkpoint = args.child[3] if len(args.child) > 3 else None
        result = child_ours(Path(args.child[1]), json.loads(args.child[2]), checkpoint, network=kind == "ours")
    elif kind == "umx":
        result = child_umx(Path(args.child[1]), int(args.child[2]), int(args.child[3]))
    elif kind == "demucs":
        result = child_demucs(Path(args.child[1]))
    elif kind == "umx-process":
        umx_process([Path(song) for song in args.child[1:]])
        return
    elif kind == "stream":
        result = child_stream(Path(args.child[1]), args.child[2] if len(args.child) > 2 else None)
    else:
        result = child_train(int(args.child[1]), int(args.child[2]), args.child[3], args.child[4] == "1")
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def row(name: str, result: dict, seconds: float, extra: str = "") -> str:
    if "error" in result:
        return f"| {name} | failed: {result['error'][:80]} | | | |"
    return (f"| {name} | {result['seconds']:.2f} | {seconds / result['seconds']:.0f}x | "
            f"{result['peak_rss_mb']:.0f} | {extra} |")


def print_quality(checkpoint: str | None, mir1k: str | None) -> None:
    if not checkpoint:
        raise SystemExit("--only quality needs --checkpoint")
    print("\n| lever | MIR-1K vocals GNSDR |" * bool(mir1k) + " museval vocals SDR, test excerpt | "
          "train excerpt |\n|---|---|---|" + "---|" * bool(mir1k))
    for name, overrides in LEVERS:
        print(f"| {name} | {quality(checkpoint, overrides, mir1k)} |", flush=True)


def time_ours(song: Path, minutes: float, checkpoint: str | None, tmp: Path) -> dict:
    """Each separation lever on the song, the floor without the network, the whole process; the default's result."""
    seconds, ckpt = minutes * 60, [checkpoint] if checkpoint else []
    print(f"\n{minutes:g}-minute stereo 44.1 kHz song\n\n| separator | separation s | real time | "
          "peak RSS MB | notes |\n|---|---|---|---|---|")
    ours = None
    for name, overrides in LEVERS:
        result = run_child("ours", str(song), json.dumps(overrides), *ckpt)
        ours = ours or result
        print(row(f"this U-Net, {name}", result, seconds), flush=True)
    if not checkpoint:
        from unet_model import save_checkpoint

        checkpoint = str(tmp / "random.pt")
        save_checkpoint(checkpoint, UNet(Config().model), Config())
    floor = run_child("floor", str(song), "[]", *ckpt)
    print(row("everything but the network (a constant mask in its place)", floor, seconds), flush=True)
    process = whole_process(song, checkpoint)
    print(f"\nwhole process, `python inference.py song.wav` (default): {process:.2f} s, "
          f"{seconds / process:.0f}x real time")
    startup = startup_seconds()
    print(f"interpreter start and imports (`python -c 'import inference'`): {startup:.2f} s; with them, "
          f"everything but the network takes {startup + floor['seconds']:.2f} s, "
          f"{seconds / (startup + floor['seconds']):.0f}x real time at most")
    return ours


def time_peers(song: Path, minutes: float, ours: dict | None) -> None:
    def versus(result: dict) -> str:
        return f"{result['seconds'] / ours['seconds']:.1f}x the time of ours" if ours and "seconds" in result else ""

    for niter, targets, name in ((1, 1, "Open-Unmix umxhq vocals+residual, niter=1"),
                                 (0, 1, "Open-Unmix umxhq vocals+residual, niter=0"),
                                 (1, 4, "Open-Unmix umxhq 4 targets, niter=1")):
        umx = run_child("umx", str(song), str(niter), str(targets))
        print(row(name, umx, minutes * 60, versus(umx)), flush=True)
    demucs = run_child("demucs", str(song))
    print(row("Demucs v4 (HTDemucs default shape, 4 sources)", demucs, minutes * 60, versus(demucs)), flush=True)


def time_long_songs(long_minutes: list[float], checkpoint: str | None, tmp: Path) -> None:
    for minutes in long_minutes:
        long_song = make_song(tmp / "long.wav", minutes)
        result = run_child("ours", str(long_song), "[]", *([checkpoint] if checkpoint else []))
        print(row(f"this U-Net, default, {minutes:g}-minute song", result, minutes * 60), flush=True)
        long_song.unlink()


# (name, inference.py flags): the default path, each backend, the levers that keep the scores
DEPLOYMENTS = [
    ("torch (default)", []),
    ("onnxruntime", ["--backend", "onnxruntime"]),
    ("torch, one network pass (no bin shift)", ["--set", "separation.bin_shifts=0"]),
    ("onnxruntime, one network pass", ["--backend", "onnxruntime", "--set", "separation.bin_shifts=0"]),
    ("torch, no patch overlap", ["--set", "separation.patch_overlap=0"]),
    ("onnxruntime, no patch overlap", ["--backend", "onnxruntime", "--set", "separation.patch_overlap=0"]),
    ("torch, float32 (no bfloat16)", ["--set", "separation.bfloat16=false"]),
]


def time_deployment(count: int, minutes: float, checkpoint: str | None, tmp: Path, runs: int) -> None:
    """Whole processes on `count` songs of `minutes`: Open-Unmix's job, then `inference.py` on
    each backend and lever, run after run in turn; the median of `runs` runs each, ratios against
    Open-Unmix."""
    songs = [make_song(tmp / f"song{i}.wav", minutes, offset=i) for i in range(count)]
    ckpt = ["--checkpoint", checkpoint] if checkpoint else []
    print(f"\nwhole process, {count} stereo 44.1 kHz songs of {minutes:g} minutes (median of {runs} runs)\n\n"
          "| separator | seconds | x Open-Unmix's speed | real time | peak RSS MB |\n|---|---:|---:|---:|---:|")
    rows = [("Open-Unmix umxhq, vocals + residual, Wiener niter=1 (its model code)",
             [sys.executable, __file__, "--child", "umx-process", *map(str, songs)])]
    rows += [(f"this U-Net, {name}", [sys.executable, "inference.py", *map(str, songs), "--out-dir",
                                      str(tmp / "out"), *ckpt, *flags]) for name, flags in DEPLOYMENTS]
    timings: dict[str, list[dict]] = {name: [] for name, _ in rows}
    for _ in range(runs):  # each run of every row in turn: the machine's drift over minutes falls on all alike
        for name, command in rows:
            timings[name].append(measured(command))
    reference = None
    for name, results in timings.items():
        if any("error" in r for r in results):
            print(f"| {name} | failed: {next(r['error'] for r in results if 'error' in r)[:80]} | | | |")
            continue
        seconds = float(np.median([r["seconds"] for r in results]))
        reference = reference or seconds
        print(f"| {name} | {seconds:.2f} | {reference / seconds:.1f}x | {count * minutes * 60 / seconds:.0f}x | "
              f"{max(r['peak_rss_mb'] for r in results):.0f} |", flush=True)
    stream = run_child("stream", str(songs[0]), *([checkpoint] if checkpoint else []))
    if "error" in stream:
        print(f"\nstreaming: failed: {stream['error'][:120]}")
    else:
        print(f"\nstreaming (`separation.StreamSeparator`, blocks of {stream['block']} samples, torch): latency "
              f"{stream['latency_s']:.3f} s, {stream['real_time_factor']:.3f} x real time (seconds per second of "
              f"audio), slowest block {stream['slowest_block_ms']:.0f} ms of {stream['block_ms']:.0f} ms, "
              f"vocals {stream['snr_db']:.0f} dB SNR against the file path, peak RSS {stream['peak_rss_mb']:.0f} MB")
    for song in songs:
        song.unlink()


def child_stream(song: Path, checkpoint: str | None, block: int = 4096) -> dict:
    """`StreamSeparator` on a song fed in blocks: its latency, real-time factor, slowest block,
    and how near its vocals are to the file path's."""
    from separation import StreamSeparator, separate_array

    model, cfg = separator(checkpoint, [])
    audio, rate = read_audio(song)
    stream = StreamSeparator(model, cfg, rate, audio.shape[0])
    pieces, slowest = [], 0.0
    started = time.perf_counter()
    for i in range(0, audio.shape[1], block):
        tick = time.perf_counter()
        pieces.append(stream.process(audio[:, i:i + block])[0])
        slowest = max(slowest, time.perf_counter() - tick)
    pieces.append(stream.flush()[0])
    seconds = time.perf_counter() - started
    vocals = np.concatenate(pieces, axis=1)[:, stream.latency:]
    whole = separate_array(model, cfg, audio, rate)
    snr = float(10 * np.log10(np.sum(whole ** 2, dtype=np.float64) / max(np.sum((whole - vocals) ** 2), 1e-30)))
    return {"latency_s": stream.latency / rate, "real_time_factor": seconds / (audio.shape[1] / rate),
            "slowest_block_ms": slowest * 1000, "block_ms": block / rate * 1000, "block": block, "snr_db": snr}


def time_training() -> None:
    print("\ntraining throughput (CPU, demo set, batch 16)\n\n| precision | network | DataLoader workers | "
          "patches/s | data wait | first 3 steps s |\n|---|---|---|---|---|---|")
    for precision, workers, compiled in (("auto", 0, 0), ("auto", 1, 0), ("float32", 0, 0), ("auto", 0, 1)):
        r = run_child("train", "40", str(workers), precision, str(compiled))
        shown = f"default ({r['precision']})" if precision == "auto" else "float32 (--precision float32)"
        print(f"| {shown} | {'torch.compile' if compiled else 'eager'} | "
              f"{workers} | {r['patches_per_second']:.1f} | {r['data_wait']:.1%} | {r['warm_up_s']:.1f} |",
              flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--long-minutes", type=float, nargs="*", default=[30.0, 60.0], help="long songs (none: skip)")
    p.add_argument("--checkpoint", help="our model (default: random weights, the same cost)")
    p.add_argument("--only", choices=["ours", "peers", "train", "quality", "deploy"], action="append")
    p.add_argument("--songs", type=int, default=3, help="songs of --minutes for the whole-process comparison")
    p.add_argument("--runs", type=int, default=3, help="runs of each whole process (their median)")
    p.add_argument("--mir1k", help="MIR-1K folder, for --only quality")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main(args)
        return
    only = set(args.only or ["deploy", "ours", "peers", "train"])
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    tmp = Path(tempfile.mkdtemp(prefix="speed-"))
    if "quality" in only:
        print_quality(args.checkpoint, args.mir1k)
    if "deploy" in only:
        time_deployment(args.songs, args.minutes, args.checkpoint or str(SHIPPED), tmp, args.runs)
    song = make_song(tmp / "song.wav", args.minutes)
    ours = time_ours(song, args.minutes, args.checkpoint, tmp) if "ours" in only else None
    if "peers" in only:
        time_peers(song, args.minutes, ours)
    song.unlink()
    if "ours" in only:
        time_long_songs(args.long_minutes, args.checkpoint, tmp)
    if "train" in only:
        time_training()


if __name__ == "__main__":
    main()
