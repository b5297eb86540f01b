"""Full-band vocals: how much of the voice above 8 kHz comes back, and what it costs below.

    python benchmarks/fullband.py --checkpoint pretrained/unet-mir1k.pt
    python benchmarks/fullband.py --checkpoint checkpoints/demo44/best.pt --demo
    python benchmarks/fullband.py --write-songs /tmp/songs     # the mixtures as wav, for another separator
    python benchmarks/fullband.py --estimates OUT              # score OUT/<song>/vocals.wav instead
    python benchmarks/fullband.py --checkpoint pretrained/unet-mir1k.pt --oracles   # what a rule could reach
    python benchmarks/fullband.py --vocal-bands ../shared/data/MIR-1K   # where the training voices have energy

Songs: the MUSDB18 excerpts in ../shared/data/musdb18-sample (44.1 kHz, true stems known),
or with --demo the synthetic demo test songs (44.1 kHz, sibilants above 5 kHz). For each
way of covering the band above the model's (`separation.high_band`: the default
"top-octave", and the simpler rules it was chosen over), per song: vocals SDR above 8 kHz (both the true and the
estimated vocals high-passed at 8 kHz; 0 dB = nothing recovered), below 8 kHz (the
model's band: must not change), and museval's full-band vocals SDR (BSS Eval v4, median
over 1 s frames).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from common import SAMPLE

import separation
from audio import STFT, read_audio
from config import HIGH_BAND_RULES, Config, apply_overrides
from tracks import load_tracks
from unet_model import UNet, load_model


def band_sdr(reference: np.ndarray, estimate: np.ndarray, rate: int, low: float, high: float) -> float:
    """SDR in dB of the band [low, high) Hz of (channels, samples) signals: 10 log10(|s|^2 / |s - e|^2)."""
    freqs = np.fft.rfftfreq(reference.shape[-1], 1 / rate)
    keep = (freqs >= low) & (freqs < high)
    s, e = np.fft.rfft(reference, axis=-1)[..., keep], np.fft.rfft(estimate, axis=-1)[..., keep]
    return float(10 * np.log10(np.sum(np.abs(s) ** 2) / max(np.sum(np.abs(s - e) ** 2), 1e-20)))


def museval_sdr(reference: np.ndarray, estimate: np.ndarray, mixture: np.ndarray, rate: int) -> float:
    import museval

    sdr, _, _, _ = museval.evaluate([reference.T, (mixture - reference).T], [estimate.T, (mixture - estimate).T],
                                    win=rate, hop=rate, mode="v4")
    return float(np.nanmedian(sdr[0]))


# The rules measured (`separation.high_band`), as the table names them.
RULE_NAMES = {"none": "nothing above the model's band", "top-bin": "top bin copied",
              "top-bins": "mean of the top 32 bins", "whole-band": "voicing share, whole band",
              "top-octave": "voicing share, top octave"}


def rule_name(rule: str) -> str:
    """The table's name of a `separation.high_band` rule (a rule without one shows as itself)."""
    name = RULE_NAMES.get(rule, rule)
    return f"{name} (default)" if rule == Config().separation.high_band else name


def oracles(model: UNet, cfg: Config, measured: list[tuple[str, np.ndarray, np.ndarray, int]]) -> None:
    """Per song, vocals SDR above the model's band for two masks that know the true vocals V
    (X: the mixture): the ideal ratio mask |V| / (|V| + |X - V|), and the best gain per frame
    shared by every bin up there (least squares, in [0, 1]: the most any per-frame rule such
    as `separation.high_band` can reach); and how closely the default rule's per-frame vocal share
    follows that best gain (correlation over frames)."""
    print("| song | ideal ratio mask | best gain per frame | correlation of the default rule with it |")
    print("|---|---|---|---|")
    for song, mixture, vocals, rate in measured:
        transform = STFT(cfg.audio, rate)
        x, v = transform(torch.from_numpy(mixture)), transform(torch.from_numpy(vocals))  # (C, bins, frames)
        high = slice(transform.model_bins, None)
        ratio = v[:, high].abs() / (v[:, high].abs() + (x - v)[:, high].abs()).clamp_min(1e-9)  # (C, high bins, T)
        best = ((v[:, high] * x[:, high].conj()).real.sum((0, 1))
                / x[:, high].abs().square().sum((0, 1)).clamp_min(1e-12)).clamp(0, 1)  # (T,)
        share = separation.full_band_mask(model, cfg, transform, x)[0, transform.model_bins]  # default rule: (T,)
        sdr = []
        for gain in (ratio, best.expand_as(ratio)):
            full = torch.cat([torch.zeros_like(x[:, : transform.model_bins].real), gain], dim=1)  # (C, bins, T)
            estimate = transform.inverse(x * full, mixture.shape[1]).numpy()
            sdr.append(band_sdr(vocals, estimate, rate, 8000, rate / 2 + 1))
        print(f"| {song} | {sdr[0]:.2f} | {sdr[1]:.2f} | {np.corrcoef(share.numpy(), best.numpy())[0, 1]:.2f} |")


BANDS_HZ = (0, 1000, 2000, 4000, 5500, 7000, 8000, 12000, 16000)


def band_energies(mixture: np.ndarray, vocals: np.ndarray, rate: int) -> np.ndarray:
    """Energy of the vocals and of the rest (2, bands) in each band of BANDS_HZ (0 from Nyquist up)."""
    freqs = np.fft.rfftfreq(mixture.shape[-1], 1 / rate)
    power = np.abs(np.fft.rfft(np.stack([vocals, mixture - vocals]), axis=-1)) ** 2  # (2, C, freqs)
    return np.stack([power[..., (freqs >= low) & (freqs < min(high, rate / 2))].sum((-2, -1))
                     for low, high in itertools.pairwise(BANDS_HZ)], axis=-1)  # (2, bands)


def vocal_bands(mir1k: str, measured: list[tuple[str, np.ndarray, np.ndarray, int]]) -> None:
    """Per band, the vocals' share of the energy in MIR-1K's training clips (all together) and
    in each song measured: a model learns to give a band to the vocals only where its
    training voices had energy."""
    training = sum(band_energies(*track.load()) for track in load_tracks("mir1k", mir1k, "train"))
    rows = [("MIR-1K training clips", training)]
    rows += [(song, band_energies(mixture, vocals, rate)) for song, mixture, vocals, rate in measured]
    print("| vocals' share of the energy | "
          + " | ".join(f"{low / 1000:g}-{high / 1000:g} kHz" for low, high in itertools.pairwise(BANDS_HZ)) + " |")
    print("|---" * len(BANDS_HZ) + "|")
    for name, energy in rows:
        total = energy.sum(0)
        print(f"| {name} | " + " | ".join(f"{v / t:.2f}" if t > 0 else "" for v, t in zip(energy[0], total)) + " |")


def songs(demo: bool) -> list[tuple[str, np.ndarray, np.ndarray, int]]:
    """(name, mixture, vocals, rate) of the songs measured."""
    if demo:
        tracks = load_tracks("demo", None, "test")
    else:
        tracks = load_tracks("musdb", SAMPLE, "test") + load_tracks("musdb", SAMPLE, "train")
    return [(t.name, *t.load()) for t in tracks]


def report(name: str, song: str, mixture: np.ndarray, vocals: np.ndarray, estimate: np.ndarray, rate: int) -> None:
    print(f"| {name} | {song} | {band_sdr(vocals, estimate, rate, 8000, rate / 2 + 1):.2f} | "
          f"{band_sdr(vocals, estimate, rate, 0, 8000):.2f} | {museval_sdr(vocals, estimate, mixture, rate):.2f} |",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint")
    p.add_argument("--demo", action="store_true", help="the synthetic demo test songs instead of MUSDB18")
    p.add_argument("--estimates", help="score OUT/<song>/vocals.wav (another separator's output)")
    p.add_argument("--write-songs", help="write each mixture to DIR/<song>.wav and stop")
    p.add_argument("--oracles", action="store_true", help="what masks that know the true vocals reach above 8 kHz")
    p.add_argument("--vocal-bands", metavar="MIR1K_ROOT",
                   help="the vocals' share of the energy per band, MIR-1K's training clips against the songs")
    args = p.parse_args()
    measured = songs(args.demo)
    if args.vocal_bands:
        vocal_bands(args.vocal_bands, measured)
        return
    if args.write_songs:
        for song, mixture, _, rate in measured:
            Path(args.write_songs).mkdir(parents=True, exist_ok=True)
            sf.write(str(Path(args.write_songs) / f"{song}.wav"), mixture.T, rate, subtype="FLOAT")
        return
    if args.oracles:
        oracles(*load_model(args.checkpoint), measured)
        return
    print("| high band | song | vocals SDR > 8 kHz | vocals SDR < 8 kHz | museval vocals SDR |\n|---|---|---|---|---|")
    if args.estimates:
        for song, mixture, vocals, rate in measured:
            estimate, _ = read_audio(Path(args.estimates) / song / "vocals.wav")
            report(args.estimates, song, mixture, vocals, estimate, rate)
        return
    model, cfg = load_model(args.checkpoint)
    for rule in reversed(HIGH_BAND_RULES):  # every rule config.py knows, so none is left out
        ruled = apply_overrides(cfg, [f"separation.high_band={rule}"], sections=("separation",))
        for song, mixture, vocals, rate in measured:
            report(rule_name(rule), song, mixture, vocals, separation.separate_array(model, ruled, mixture, rate), rate)


if __name__ == "__main__":
    main()
