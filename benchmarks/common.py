"""What the benchmarks share: the machine's name, made-up test sets, process-tree memory."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "benchmarks"
# The project's modules first; this folder last, so that musdb.py here never hides the musdb package.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]

import torch  # noqa: E402

from audio import EPS, STFT  # noqa: E402
from demo_data import synthesize_song  # noqa: E402
from tracks import load_tracks  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "musdb18-sample"
RATE = 44100


def mir1k_figures(summary: list[dict]) -> dict[str, float]:
    """The headline figures of a scored MIR-1K test set (the summary rows of `evaluate`'s
    mir1k_tables), in dB: vocals GNSDR / GSIR / GSAR and accompaniment GNSDR."""
    g = {(r["target"], r["metric"]): r["weighted_mean"] for r in summary}
    return {"GNSDR": g["vocals", "NSDR"], "GSIR": g["vocals", "SIR"], "GSAR": g["vocals", "SAR"],
            "accompaniment_GNSDR": g["accompaniment", "NSDR"]}


def ideal_ratio_mask(transform: STFT, mixture: np.ndarray, vocals: np.ndarray) -> np.ndarray:
    """The oracle's vocals (channels, samples): the mixture masked by |V| / (|V| + |A|), which knows
    the true vocals V and accompaniment A, with the mixture's phase, as a model's mask is applied."""
    mix, voc, acc = transform(torch.from_numpy(np.stack([mixture, vocals, mixture - vocals])))  # (C, bins, T) each
    mask = voc.abs() / (voc.abs() + acc.abs()).clamp_min(EPS)
    return transform.inverse(mask * mix, mixture.shape[-1]).numpy()


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers: a virtual machine may name only
    "AMD EPYC", and CPUs behind that one name have trained this project 1.6x apart."""
    if Path("/proc/cpuinfo").exists():
        fields: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" not in line:
                break  # the first processor's block ends at its blank line
            key, value = (part.strip() for part in line.split(":", 1))
            fields.setdefault(key, value)
        if "model name" in fields:
            return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    return platform.processor() or platform.machine()


def source_songs() -> list[tuple[np.ndarray, np.ndarray]]:
    """(mixture, vocals) pairs at 44.1 kHz stereo to loop tracks from."""
    if SAMPLE.exists():
        return [track.load()[:2] for subset in ("train", "test") for track in load_tracks("musdb", SAMPLE, subset)]
    stems = synthesize_song(np.random.default_rng(0), 20.0, RATE)
    return [(stems["mixture"], stems["vocals"])]


def make_tracks(root: Path, count: int, minutes: float, subset: str = "test") -> Path:
    """`count` tracks of `minutes` in MUSDB18-HQ layout under root/subset."""
    sources = source_songs()
    length = int(minutes * 60 * RATE)
    for i in range(count):
        mixture, vocals = sources[i % len(sources)]
        index = (np.arange(length) + i * 7919) % mixture.shape[1]  # loop, from another offset per track
        folder = root / subset / f"track-{i:02d}"
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
