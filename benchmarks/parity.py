"""The two backends side by side: the same model on torch and on onnxruntime, song by song.

    python benchmarks/parity.py --root ../shared/data/musdb18-preview
    python benchmarks/parity.py --root ~/musdb18 --checkpoint model.onnx   # an exported file against torch

On every song of musdb's test set: the SNR of the onnxruntime vocals against torch's in
float32 (what the float32 graph computes) and against torch's default (bfloat16 where the CPU
computes it natively), and BSS Eval v4 (museval's numbers) of each: the median over songs of the
vocals' and the accompaniment's SDR. The graph is exported in memory from the checkpoint unless
--onnx names a file exported by `inference.py --export-onnx`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import cpu_name  # also puts the project's folder on sys.path

from backends import load_network
from config import run_script
from evaluate import TARGETS, museval_tables, score_musdb
from separation import SHIPPED, separate_array
from tracks import load_tracks


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="a MUSDB18 folder (its test set is separated)")
    p.add_argument("--checkpoint", default=str(SHIPPED), help="the torch model (default: the shipped one)")
    p.add_argument("--onnx", help="an exported .onnx file of that model (default: exported in memory)")
    args = p.parse_args()
    cpu = torch.device("cpu")
    runs = {"torch float32": load_network(args.checkpoint, cpu, "torch", ["separation.bfloat16=false"]),
            "torch default": load_network(args.checkpoint, cpu, "torch"),
            "onnxruntime": load_network(args.onnx or args.checkpoint, cpu, "onnxruntime")}
    jsons: dict[str, dict[str, str]] = {name: {} for name in runs}
    snrs: dict[str, list[float]] = {"torch float32": [], "torch default": []}
    tracks = load_tracks("musdb", args.root, "test")
    for track in tracks:
        mixture, vocals, rate = track.load()
        estimates = {name: separate_array(network, cfg, mixture, rate) for name, (network, cfg) in runs.items()}
        references = {"vocals": vocals, "accompaniment": mixture - vocals}
        for name, estimate in estimates.items():
            jsons[name][track.name] = score_musdb(track.name, rate, references,
                                                  dict(zip(TARGETS, (estimate, mixture - estimate))))
        for name in snrs:
            snrs[name].append(snr_db(estimates[name], estimates["onnxruntime"]))
    print(f"machine: {cpu_name()}; {len(tracks)} test songs under {args.root}; model {args.checkpoint}")
    for name, values in snrs.items():
        print(f"onnxruntime vocals against {name}: SNR min {min(values):.1f} dB, median {np.median(values):.1f} dB")
    print("\n| backend | vocals SDR | accompaniment SDR |\n|---|---:|---:|")
    for name, scores in jsons.items():
        summary = {(r["target"], r["metric"]): r["median"] for r in museval_tables(scores)[1].to_dict("records")}
        print(f"| {name} | {summary['vocals', 'SDR']:.3f} | {summary['accompaniment', 'SDR']:.3f} |")


if __name__ == "__main__":
    run_script(main)
