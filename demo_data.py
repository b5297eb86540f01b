"""The synthetic demo set: small, offline, NOT music.

Voice-like stems (harmonic tones with vibrato, formants and syllable gaps, sibilant noise
bursts above 5 kHz at syllable onsets, breath noise) over drums, a bass line and chords,
written in the MUSDB18-HQ layout (`<subset>/<song>/{mixture,vocals}.wav`) at 44.1 kHz, so
that the project trains, separates and tests without any dataset, full band included.

    python demo_data.py   # writes data/demo
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

DEMO_ROOT = Path(__file__).resolve().parent / "data" / "demo"
DEMO_VERSION = "2: 44.1 kHz, sibilants"  # a folder written by another version is rebuilt
DEMO_RATE = 44100


def make_demo(root: Path = DEMO_ROOT, n_train: int = 12, n_test: int = 3, seconds: float = 8.0,
              rate: int = DEMO_RATE) -> Path:
    """Write the synthetic demo set once (mixture and vocals per song); returns its root."""
    done = root / ".complete"
    if done.exists() and done.read_text() == DEMO_VERSION:
        return root
    for subset, count, offset in (("train", n_train, 0), ("test", n_test, 1000)):
        for i in range(count):
            stems = synthesize_song(np.random.default_rng(offset + i), seconds, rate)
            folder = root / subset / f"demo-{subset}-{i:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for name in ("mixture", "vocals"):
                sf.write(folder / f"{name}.wav", stems[name].T, rate, subtype="FLOAT")
    done.write_text(DEMO_VERSION)
    return root


def synthesize_song(rng: np.random.Generator, seconds: float, rate: int) -> dict[str, np.ndarray]:
    """Stereo stems {mixture, drums, bass, other, vocals} of one synthetic song, (2, samples) each."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    beat = 60.0 / rng.uniform(90, 130)
    root_hz = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    stems = {"vocals": synth_voice(rng, t, rate, root_hz), "drums": synth_drums(rng, t, rate, beat),
             "bass": synth_bass(rng, t, rate, root_hz, beat),
             "other": synth_chords(rng, t, rate, root_hz, beat)}
    pans = {"vocals": 0.0, "drums": 0.1, "bass": 0.0, "other": rng.uniform(-0.4, 0.4)}
    out = {name: np.stack([x * (1 - pans[name]), x * (1 + pans[name])]).astype(np.float32) * 0.25
           for name, x in stems.items()}
    out["mixture"] = sum(out.values())
    return out


def smooth(x: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Moving average over `seconds`."""
    width = max(1, int(seconds * rate))
    return np.convolve(x, np.ones(width) / width, mode="same")


def synth_voice(rng: np.random.Generator, t: np.ndarray, rate: int, root_hz: float) -> np.ndarray:
    """Sung notes with glides and vibrato, three formants, syllable gaps, sibilants and breath."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    note_len = rng.uniform(0.25, 0.5)
    notes = scale[rng.integers(0, len(scale), size=int(t[-1] / note_len) + 2)]
    f0 = smooth(2 * root_hz * 2 ** (notes[(t / note_len).astype(int)] / 12), rate, 0.025)  # glides
    f0 *= 1 + 0.012 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t)  # vibrato
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = rng.uniform([500, 1200, 2500], [900, 1800, 3200])
    voice = sum(np.sin(k * phase) / k * formant_gain(k * f0, formants) for k in range(1, 16))
    syllables = (np.sin(2 * np.pi * t / (2 * note_len) + rng.uniform(0, 6)) > -0.6).astype(float)
    envelope = smooth(syllables, rate, 0.02)
    breath = 0.02 * rng.standard_normal(len(t)) * envelope
    return (voice * envelope + breath + sibilants(rng, syllables, rate)) / 2


def sibilants(rng: np.random.Generator, syllables: np.ndarray, rate: int) -> np.ndarray:
    """An 's'-like burst of noise above 5 kHz (80 ms, decaying) at every syllable onset."""
    spectrum = np.fft.rfft(rng.standard_normal(len(syllables)))
    spectrum[np.fft.rfftfreq(len(syllables), 1 / rate) < 5000] = 0
    hiss = np.fft.irfft(spectrum, len(syllables))
    hiss /= hiss.std() + 1e-12
    onsets = np.flatnonzero(np.diff(syllables) > 0)
    burst = np.exp(-np.arange(int(0.08 * rate)) / (0.03 * rate))
    gate = np.zeros(len(syllables))
    for i in onsets:
        part = burst[: len(gate) - i]
        gate[i:i + len(part)] = np.maximum(gate[i:i + len(part)], part)
    return 0.25 * hiss * gate


def formant_gain(freq: np.ndarray, formants: np.ndarray) -> np.ndarray:
    return 0.2 + sum(np.exp(-((freq - f) / 200.0) ** 2) for f in formants)


def synth_drums(rng: np.random.Generator, t: np.ndarray, rate: int, beat: float) -> np.ndarray:
    out = np.zeros_like(t)
    hit = np.arange(int(0.3 * rate)) / rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-hit * 30)) * hit) * np.exp(-hit * 12)
    snare = rng.standard_normal(len(hit)) * np.exp(-hit * 25) * 0.5
    hat = np.diff(rng.standard_normal(len(hit) + 1)) * np.exp(-hit * 80) * 0.2
    for k, start in enumerate(np.arange(0, t[-1], beat / 2)):
        i = int(start * rate)
        sound = hat + (kick if k % 4 == 0 else snare if k % 4 == 2 else 0)
        out[i:i + len(hit)] += sound[: len(out) - i]
    return out


def synth_bass(rng: np.random.Generator, t: np.ndarray, rate: int, root_hz: float, beat: float) -> np.ndarray:
    notes = rng.choice([0, 5, 7, 3], size=int(t[-1] / (2 * beat)) + 2)
    f = root_hz / 2 * 2 ** (notes[(t / (2 * beat)).astype(int)] / 12)
    phase = 2 * np.pi * np.cumsum(f) / rate
    return 0.8 * (np.sin(phase) + 0.3 * np.sin(2 * phase))


def synth_chords(rng: np.random.Generator, t: np.ndarray, rate: int, root_hz: float,
                 beat: float) -> np.ndarray:
    chords = [(0, 4, 7), (5, 9, 12), (7, 11, 14), (-3, 0, 4)]
    order = rng.integers(0, len(chords), size=int(t[-1] / (4 * beat)) + 2)
    which = order[(t / (4 * beat)).astype(int)]
    out = np.zeros_like(t)
    for voice in range(3):
        semis = np.array([c[voice] for c in chords])[which]
        f = 2 * root_hz * 2 ** (semis / 12)
        phase = 2 * np.pi * np.cumsum(f) / rate
        out += sum(np.sin(k * phase) * 0.5 ** k for k in range(1, 5))
    return 0.4 * out


if __name__ == "__main__":
    print(f"demo set in {make_demo()}")
