"""Helpers shared by the tests: paths, made-up songs, running a script's main() in-process."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
# Half the default width: a quarter of the arithmetic, for trainings that test behaviour
# (the demo checkpoint, stopping, full-band masks, DDP), not the default model's quality.
HALF_WIDTH = ["--set", "model.channels=8,16,32,64,128,256"]


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; skip if it is absent, but fail under CI."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing, and CI must have ../shared/data")
        pytest.skip(f"{path} is absent (it lives beside the checkout, in ../shared/data)")
    return path


def write_wav(path: Path, audio: np.ndarray, rate: int, subtype: str = "FLOAT") -> Path:
    """audio: (channels, samples)."""
    sf.write(str(path), audio.T, rate, subtype=subtype)
    return path


def song(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    """A short deterministic test signal: harmonic tone plus noise, (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 6))
    audio = 0.2 * tone + 0.05 * rng.standard_normal((channels, len(t)))
    return audio.astype(np.float32)


def run_main(main: Callable[[], None], argv: list[str]) -> tuple[int, str, str]:
    """Run a script's main() in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["prog", *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def demo_gain_db(checkpoint: Path, demo_root: Path) -> float:
    """Mean SDR gain (BSS Eval v3, dB) of the separated vocals over the mixture on the demo test tracks."""
    from evaluate import bss_eval_v3
    from separation import separate_array
    from tracks import load_tracks
    from unet_model import load_model

    model, cfg = load_model(checkpoint)
    gains = []
    for track in load_tracks("demo", demo_root, "test"):
        mixture, vocals, rate = track.load()
        references = np.stack([vocals.mean(0), (mixture - vocals).mean(0)])
        vocals = separate_array(model, cfg, mixture, rate).mean(0)
        mixture = mixture.mean(0)
        separated = bss_eval_v3(references, np.stack([vocals, mixture - vocals]))["SDR"][0]
        unprocessed = bss_eval_v3(references, np.stack([mixture, mixture]))["SDR"][0]
        gains.append(separated - unprocessed)
    return float(np.mean(gains))


def high_pass(audio: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    """(channels, samples) with every frequency below `cutoff` Hz removed (FFT brick wall)."""
    spectrum = np.fft.rfft(audio, axis=-1)
    spectrum[..., np.fft.rfftfreq(audio.shape[-1], 1 / rate) < cutoff] = 0
    return np.fft.irfft(spectrum, audio.shape[-1], axis=-1)
