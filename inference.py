"""Separate songs into vocals and accompaniment with a trained checkpoint.

    python inference.py song.mp3
    python inference.py                     # a synthetic demo song, to try it out
    python inference.py songs/ other.flac --checkpoint checkpoints/best.pt --out-dir results/separated
    python inference.py song.wav --format flac --bits 24 --plot
    python inference.py song.wav --backend onnxruntime       # the network on onnxruntime
    python inference.py --export-onnx model.onnx             # the shipped model as ONNX (opset 17)
    python inference.py song.wav --checkpoint model.onnx     # an exported model: onnxruntime

For each input writes OUT/<file stem>/vocals.wav and accompaniment.wav at the input's
sample rate and channel count (accompaniment = input - vocals, so the two add up to
the input). The STFT runs at the input's own rate with the model's window and hop
durations, so the full band is kept: the model masks its band, and the mask is
extended above it from what the model hears near its top. One mask, predicted from
the channels' mean magnitude, serves every channel. The song is processed in
overlapping chunks that are cross-faded, so memory does not grow with its length.
Features come from the checkpoint's config, through the same code as training
(audio.py, data_generator.py). Without --checkpoint: checkpoints/best.pt when you have trained
one, else the shipped model in pretrained/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from audio import AudioFile, find_audio_files
from backends import BACKENDS, OPSET, Network, export_onnx
from config import Config, InputError, Interrupted, apply_overrides, run_script
from demo_data import make_demo
from devices import large_buffers_reused
from outputs import pyplot, save_figure
from separation import SUBTYPES, TRAINED, OutputFiles, default_checkpoint, load_separator, separate_stream
from unet_model import UNet, load_model, read_checkpoint


def demo_song() -> Path:
    """A synthetic demo song (not music), separated when no input is given."""
    song = make_demo() / "test" / "demo-test-00" / "mixture.wav"
    print(f"no input given: separating {song} (a SYNTHETIC demo song; pass your own files)", file=sys.stderr)
    return song


def separate_file(model: UNet | Network, cfg: Config, path: Path, out_dir: Path, fmt: str = "wav",
                  bits: str = "32f", plot: bool = False) -> list[Path]:
    """Separate one audio file into OUT/<stem>/{vocals,accompaniment}.<fmt>; returns the paths."""
    views: dict[str, Any] | None = {} if plot else None  # the first chunk's spectra, for the plot
    peak = 0.0
    with AudioFile(path) as audio, OutputFiles(out_dir / path.stem, audio.rate, audio.channels, fmt, bits) as out, \
            tqdm(total=audio.frames, unit="s", unit_scale=1 / audio.rate, desc=path.name, leave=False,
                 disable=None) as bar:
        for mixture, vocals in separate_stream(model, cfg, audio.read, audio.frames, audio.rate, views):
            out.write(mixture, vocals)
            peak = max(peak, float(np.abs(mixture).max(initial=0.0)))
            bar.update(mixture.shape[1])
    paths = list(out.final)
    if peak == 0.0:
        print(f"warning: {path}: input is silent, so are its outputs", file=sys.stderr)
    if plot:
        paths.append(plot_separation(views, out_dir / path.stem / "separation.png", path.name))
    return paths


def plot_separation(views: dict[str, Any], target: Path, title: str) -> Path:
    """Mixture spectrogram, predicted mask and vocal spectrogram over the input's full band
    (first channel, first chunk), on a log-frequency axis where the voice's harmonics show."""
    import librosa.display

    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    panels = (("mixture", "mixture magnitude (dB)"), ("mask", "predicted vocal mask"),
              ("vocals", "vocal magnitude (dB)"))
    top = max(float(20 * np.log10(max(views["mixture"][0].max().item(), 1e-5))), -60.0)
    for ax, (key, label) in zip(axes, panels):
        data = views[key][0].numpy()
        shown = dict(cmap="viridis", vmin=0, vmax=1) if key == "mask" else \
            dict(cmap="magma", vmin=top - 80, vmax=top)
        if key != "mask":
            data = 20 * np.log10(np.maximum(data, 1e-5))
        image = librosa.display.specshow(data, sr=views["rate"], hop_length=views["hop"], n_fft=views["n_fft"],
                                         x_axis="time", y_axis="log", ax=ax, **shown)
        ax.set_title(label)
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, target, dpi=80)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="audio files or folders of them (none: a synthetic demo song, to try it out)")
    p.add_argument("--checkpoint", help=f"default: {TRAINED} when it exists, else the shipped model")
    p.add_argument("--out-dir", default="results/separated")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--format", default="wav", choices=["wav", "flac"])
    p.add_argument("--bits", choices=list(SUBTYPES), help="16, 24 or 32f (float); default 32f for wav, 24 for flac")
    p.add_argument("--plot", action="store_true", help="also write separation.png per song")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="what runs the network (a .onnx --checkpoint always runs on onnxruntime)")
    p.add_argument("--export-onnx", metavar="MODEL.onnx",
                   help="write the checkpoint's network (normalization, U-Net, mask) as ONNX and stop")
    p.add_argument("--set", action="append", default=[], metavar="separation.FIELD=VALUE",
                   help="change how the model is applied, e.g. --set separation.mask_power=2")
    return p.parse_args(argv)


def export(args: argparse.Namespace) -> None:
    """Write the ONNX graph of --checkpoint's network (default: the model songs separate with)."""
    source = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    if source.suffix.lower() == ".onnx":
        raise InputError(f"{source}: already an ONNX model; --export-onnx reads a .pt checkpoint")
    if Path(args.export_onnx).suffix.lower() != ".onnx":
        raise InputError(f"{args.export_onnx}: an ONNX model's name ends in .onnx")
    model, cfg = load_model(source)
    cfg = apply_overrides(cfg, args.set, sections=("separation",))
    provenance = {**read_checkpoint(source).get("provenance", {}), "exported_from": str(source)}
    try:
        graph = export_onnx(model, cfg, args.export_onnx, provenance)
    except OSError as err:
        raise InputError(f"{args.export_onnx}: cannot write ({err.strerror})") from None
    print(f"{source} -> {args.export_onnx} ({len(graph) / 2**20:.1f} MiB, float32, opset {OPSET})")


def separate_files(args: argparse.Namespace) -> None:
    """Separate every input the flags name; exit status 1 when any of them could not be."""
    model, cfg = load_separator(args.checkpoint, args.device, args.set, backend=args.backend)
    files = find_audio_files(args.inputs or [str(demo_song())])
    bits = args.bits or ("24" if args.format == "flac" else "32f")
    written, failures = 0, 0
    with large_buffers_reused():
        for path in tqdm(files, desc="songs", disable=True if len(files) < 2 else None):
            try:
                paths = separate_file(model, cfg, path, Path(args.out_dir), args.format, bits, args.plot)
                print(f"{path} -> {paths[0].parent}")
                written += 1
            except InputError as err:
                print(f"error: {err}", file=sys.stderr)
                failures += 1
            except Interrupted as stop:
                stop.kept = (f"{path} was being separated and nothing of it was written; "
                             f"{written} of {len(files)} songs are complete in {args.out_dir}")
                raise
    if failures:
        sys.exit(1)


def run(args: argparse.Namespace) -> None:
    if args.export_onnx and args.inputs:
        raise InputError("--export-onnx writes a model and separates nothing: give it no INPUT")
    (export if args.export_onnx else separate_files)(args)


def main() -> None:
    run_script(lambda: run(parse_args()))


if __name__ == "__main__":
    main()
