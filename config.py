"""Every setting of the separator, in one place.

A `Config` is four dataclasses (audio features, model, training, separation). Command-line
flags and `--set section.field=value` override fields; every checkpoint stores
`Config.to_dict()`, so inference and evaluation rebuild features exactly as
training computed them.

    from config import Config
    cfg = Config()
    cfg = apply_overrides(cfg, ["audio.hop_length=256", "train.lr=3e-4"])
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent  # the project's folder: pretrained/ and checkpoints/ lie in it


class InputError(Exception):
    """A problem with what the user gave us (file, dataset, checkpoint, flag).

    Scripts print it as one line on stderr and exit with `status`, without a traceback (`run_script`).
    """

    status = 1


class ModelFileError(InputError):
    """A model file (checkpoint or ONNX) that cannot be used: missing, broken, foreign, mismatched."""

    status = 2


class Interrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM arrived while `run_script` ran a script's main().

    A BaseException, like KeyboardInterrupt, so that `except Exception` never swallows it and
    cleanup written for any exit (`except BaseException`) runs. A script that knows what its
    run has kept so far sets `kept` (e.g. "2 songs written to results/separated") on the way out.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.kept = ""

    @property
    def status(self) -> int:
        """The shell's exit status for death by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@contextlib.contextmanager
def on_stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """`handler` takes SIGINT and SIGTERM inside the block; the previous handlers come back after
    it (in threads other than the main one, where no handler can be set, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def run_script(main: Callable[[], None]) -> None:
    """Run a script's main(): an InputError ends it with one line on stderr and exit status 1 (2 for
    a model file that cannot be used);
    SIGINT or SIGTERM with one line saying what was interrupted and kept, and status 130 or 143."""
    try:
        with on_stop_signals(raise_interrupted):
            main()
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.status)
    except Interrupted as stop:
        print(f"interrupted by {stop}" + (f": {stop.kept}" if stop.kept else ""), file=sys.stderr)
        sys.exit(stop.status)


@dataclass
class AudioConfig:
    """Waveform -> magnitude spectrogram -> patches. Shared by training and inference."""

    sample_rate: int = 16000  # the model's rate: other rates get an STFT of the same durations
    n_fft: int = 1024  # 513 frequency bins
    hop_length: int = 256
    patch_frames: int = 128  # time frames per network input
    model_bins: int = 0  # the lowest STFT bins the network sees (e.g. 1024 of 2049 at 44.1 kHz); 0: all
    normalization: str = "patch"  # "patch": divide each patch by its peak; "none"

    @property
    def n_bins(self) -> int:
        """Bins the network sees: `model_bins`, or every bin of the STFT (n_fft // 2 + 1)."""
        return self.model_bins or self.n_fft // 2 + 1

    def bin_at(self, hz: float) -> int:
        """The STFT bin nearest a frequency."""
        return round(hz * self.n_fft / self.sample_rate)

    def patch_hop(self, overlap: float) -> int:
        """Frames between the starts of consecutive patches at the given overlap."""
        return max(1, round(self.patch_frames * (1.0 - overlap)))

    def check(self) -> None:
        positive("audio", sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
                 patch_frames=self.patch_frames)
        if self.hop_length > self.n_fft:
            raise InputError(f"audio.hop_length={self.hop_length} is longer than audio.n_fft={self.n_fft}")
        if not 0 <= self.model_bins <= self.n_fft // 2 + 1:
            raise InputError(f"audio.model_bins={self.model_bins}: must be within [0, n_fft / 2 + 1]")
        one_of("audio.normalization", self.normalization, ("patch", "none"))


@dataclass
class ModelConfig:
    """The U-Net of Jansson et al. 2017 (see unet_model.py)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    kernel_size: int = 5
    leaky_slope: float = 0.2
    dropout: float = 0.5
    dropout_layers: int = 3  # the first decoder layers that use dropout
    input_power: float = 1.0  # the network sees magnitude ** input_power (< 1 compresses loud against quiet bins)
    side_input: bool = False  # an input channel: the magnitude of the side signal (left - right) / 2,
    # where a sound is panned (vocals mostly in the middle); needs training on both channels together
    # (`train.channels=stereo`) and one mask for both (`separation.stereo=shared`); a mono song's side is 0
    top_tilt_db: float = 0.0  # the upper half of the network's band lifted before it reads it, by a gain rising
    # linearly in dB from 0 at the band's middle to this at its top (0: off): on music the mixture falls about
    # 11 dB from 8 to 16 kHz, and a band the starting model never heard (MIR-1K stops at 8 kHz) comes in quieter
    bin_position: bool = False  # an input channel: each bin's height in the band (0 at DC, 1 at the top)
    inst_frequency: bool = False  # an input channel: where each bin's frequency lies against the bin's
    # centre (the phase advance between frames), weighted by its magnitude (unet_model.network_input)

    def check(self, audio: AudioConfig) -> None:
        positive("model", kernel_size=self.kernel_size, input_power=self.input_power,
                 **{f"channels[{i}]": c for i, c in enumerate(self.channels)})
        if not self.channels:
            raise InputError("model.channels is empty")
        fraction("model.dropout", self.dropout)
        if audio.patch_frames % self.multiple or audio.n_bins < self.multiple:
            raise InputError(f"{len(self.channels)} encoder layers need audio.patch_frames divisible by "
                             f"{self.multiple} and at least {self.multiple} bins (audio.n_fft, audio.model_bins)")

    @property
    def multiple(self) -> int:
        """What the patch's frames and bins are multiples of: every encoder layer halves both axes,
        so the strides' grid repeats every `multiple` bins."""
        return 2 ** len(self.channels)


@dataclass
class TrainConfig:
    """Optimisation and augmentation."""

    epochs: int = 40  # with --max-minutes and no --epochs, the budget alone decides (0: no epoch limit)
    patch_overlap: float = 0.75  # overlap of consecutive training patches
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0  # decoupled (AdamW): each step shrinks the weights by lr * weight_decay
    lr_schedule: str = "cosine"  # "cosine" (over epochs or --max-minutes) or "constant"
    ema: float = 0.0  # decay per step of an average of the weights, validated and saved instead (0: off)
    loss: str = "sdr"  # "sdr": minus the SDR of the masked mixture's waveform (inverse STFT, the
    # mixture's phase); "magnitude": L1(mask * mix, vocals) (Jansson); "mask": L1(mask, oracle mask)
    magnitude_weight: float = 0.0  # with loss "sdr": plus this weight times the "magnitude" L1 (0: off)
    high_band_weight: float = 0.0  # with loss "sdr": plus this weight times minus the SDR of the band above (0: off)
    high_band_hz: float = 8000.0  # this frequency (the whole patch's SDR is ruled by the loud band below it)
    high_band_pooled: bool = False  # that band's SDR of the whole batch (energies summed over its patches, as a
    # song's SDR sums its frames), not a mean of each patch's (where a patch without voice there asks for silence)
    emphasis_weight: float = 0.0  # with loss "sdr": plus this weight times minus the SDR of the spectra
    # pre-emphasized (0: off), each bin's error weighed by |1 - a e^(-i w)|, a = `emphasis`: +6 dB an octave
    emphasis: float = 0.95  # that filter's coefficient a (0: no tilt; 0.95: -26 dB at 0 Hz, +6 dB at Nyquist)
    gain_free_weight: float = 0.0  # with loss "sdr": plus this weight times minus the SDR after each bin of the
    # estimate takes its best complex gain over the patch (a level a song-long filter fixes; 0: off)
    remix: bool = True  # vocals of one track over the accompaniment of another
    remix_prob: float = 0.5
    remix_stems: bool = False  # with remix, the stems a dataset keeps apart (MUSDB18: drums, bass, other) are
    # sources of their own, each remixed from its own track and place with its own gain (source augmentation)
    channels: str = "mean"  # training sources from the channels' mean ("mean"), from each channel of
    # a stereo track as a track of its own ("each": twice the mixes; validation stays on the mean), or
    # from both channels together ("stereo": the network sees what separation shows it, the loss is the
    # SDR over both channels, and with remix each source's channels are swapped half the time)
    random_offsets: bool = False  # with remix, training patches start anywhere within their hop, not on a grid
    gain_range: tuple[float, float] = (0.5, 1.5)  # random gain per source when remixing
    eq_db: float = 0.0  # when remixing, a random equalizer per source: smooth gains within +-eq_db dB (0: off)
    pitch_shifts: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0)  # semitones: resampled copies of each
    # track's vocals (with remix); they triple the training spectra's memory (`train.pitch_shifts=`: none)
    time_stretches: tuple[float, ...] = ()  # tempo factors (1.25: a quarter faster): copies of each track's
    # vocals played faster or slower at the same pitch (a phase vocoder), with remix, beside the pitch shifts
    pitch_prob: float = 0.5  # share of items whose vocals come from one of those copies (shifted or stretched)
    extra_vocals: str = ""  # a MIR-1K folder: with remix, its training singers' voices sing over the
    # training set's stems; their 16 kHz recordings hold nothing above 8 kHz, so such an item loses every
    # source above 8 kHz (the loss learns nothing there from it, not that voices stop at 8 kHz)
    extra_vocals_prob: float = 0.25  # share of items whose vocals come from `extra_vocals`
    valid_tracks: int = 10  # held-out training tracks when the dataset has no valid split
    all_tracks: bool = False  # train on the validation tracks too (a final model, once every choice is made
    # on them): validation then measures tracks it trained on, so the last epoch is kept as best.pt too
    samples_per_epoch: int = 0  # 0: one pass over all training patches
    shuffle: bool = True
    data_workers: int = -1  # DataLoader worker processes; -1: none on CPU, 4 on CUDA
    seed: int = 42

    def check(self) -> None:
        if self.epochs < 0:
            raise InputError(f"train.epochs={self.epochs}: must be >= 0 (0: the --max-minutes budget decides)")
        positive("train", batch_size=self.batch_size, lr=self.lr)
        fraction("train.patch_overlap", self.patch_overlap)
        for name in ("weight_decay", "magnitude_weight", "high_band_weight", "emphasis_weight",
                     "gain_free_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"train.{name}={getattr(self, name)}: must be >= 0")
        fraction("train.ema", self.ema)
        one_of("train.lr_schedule", self.lr_schedule, ("cosine", "constant"))
        one_of("train.loss", self.loss, ("magnitude", "mask", "sdr"))
        one_of("train.channels", self.channels, ("mean", "each", "stereo"))
        fraction("train.emphasis", self.emphasis)
        for name in ("magnitude_weight", "high_band_weight", "emphasis_weight",
                     "gain_free_weight"):
            if getattr(self, name) and self.loss != "sdr":
                raise InputError(f"train.{name}={getattr(self, name)} adds to the \"sdr\" loss only "
                                 f"(train.loss={self.loss})")
        for name in ("remix_prob", "pitch_prob", "extra_vocals_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"train.{name}={getattr(self, name)}: must be within [0, 1]")
        if any(not -12 <= s <= 12 for s in self.pitch_shifts):
            raise InputError(f"train.pitch_shifts={self.pitch_shifts}: semitones within [-12, 12]")
        if any(not 0.5 <= f <= 2 for f in self.time_stretches):
            raise InputError(f"train.time_stretches={self.time_stretches}: tempo factors within [0.5, 2]")
        if len(self.gain_range) != 2 or not 0 < self.gain_range[0] <= self.gain_range[1]:
            raise InputError(f"train.gain_range={self.gain_range}: expected two gains 0 < low <= high")
        if not 0 <= self.eq_db <= 40:
            raise InputError(f"train.eq_db={self.eq_db}: must be within [0, 40] dB")
        if self.samples_per_epoch < 0 or self.valid_tracks < 0:
            raise InputError("train.samples_per_epoch and train.valid_tracks must be >= 0")


# The rules for the mask above the model's band (`separation.high_band`); separation.HIGH_BAND
# computes each.
HIGH_BAND_RULES = ("top-octave", "whole-band", "top-bins", "top-bin", "none")


@dataclass
class SeparationConfig:
    """How a trained model is applied; the only section inference may override (--set)."""

    patch_overlap: float = 0.5  # overlap of inference patches; the masks of overlapping patches are blended
    blend: str = "mean"  # "mean": overlapping masks averaged; "hann": weighted by a Hann window
    stereo: str = "shared"  # "shared": one mask from the channels' mean magnitude; "each": a mask per channel
    high_band: str = "top-octave"  # the mask above the model's band (separation.HIGH_BAND): "top-octave",
    # "whole-band" (the vocal share of the energy in that part of the model's band, per frame),
    # "top-bins" (the mean mask of the model's top 32 bins), "top-bin", "none" (band-limited vocals)
    mask_power: float = 1.0  # vocal mask m^p / (m^p + (1-m)^p): 1 = the network's mask, 2 = Wiener-like
    high_mask_power: float = 1.0  # the vocal mask from high_mask_hz up raised to this power (< 1: more of that
    # band to the vocals, where the network's mask falls short of the voice's sibilants and air); 1: unchanged
    high_mask_hz: float = 8000.0
    bin_shifts: tuple[int, ...] = (0,)  # the mask is the mean of the network's masks of its input shifted up by
    # each of these bins (0, 1: two passes): a strided encoder's output depends on where a partial falls on
    # its grid of strides, and two phases of that grid average out much of it (`separation.patch_masks`)
    batch_size: int = 16  # patches per forward pass
    bfloat16: bool = True  # bfloat16 autocast where the device computes it natively (AMX/AVX512-BF16, CUDA)

    def check(self) -> None:
        fraction("separation.patch_overlap", self.patch_overlap)
        one_of("separation.blend", self.blend, ("hann", "mean"))
        one_of("separation.stereo", self.stereo, ("shared", "each"))
        one_of("separation.high_band", self.high_band, HIGH_BAND_RULES)
        positive("separation", mask_power=self.mask_power, batch_size=self.batch_size,
                 high_mask_power=self.high_mask_power, high_mask_hz=self.high_mask_hz)
        if not self.bin_shifts:
            raise InputError("separation.bin_shifts is empty (0: one pass on the input as it is)")


@dataclass
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    separation: SeparationConfig = field(default_factory=SeparationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """InputError (one line) for an unknown choice or an impossible value."""
        self.audio.check()
        self.model.check(self.audio)
        self.train.check()
        self.separation.check()
        if any(not 0 <= shift < self.model.multiple for shift in self.separation.bin_shifts):  # beyond: the same phase
            raise InputError(f"separation.bin_shifts={self.separation.bin_shifts}: shifts within [0, "
                             f"{self.model.multiple}) bins, the period of {len(self.model.channels)} encoder strides")
        if self.model.side_input and (self.train.channels != "stereo" or self.separation.stereo != "shared"):
            raise InputError("model.side_input needs train.channels=stereo and separation.stereo=shared "
                             "(a channel alone has no side)")
        if self.train.high_band_weight and not 0 < self.audio.bin_at(self.train.high_band_hz) < self.audio.n_bins:
            raise InputError(f"train.high_band_hz={self.train.high_band_hz:g}: not within the model's band "
                             f"(0 to {self.audio.n_bins * self.audio.sample_rate / self.audio.n_fft:g} Hz)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild and check a config; unknown sections or fields are an InputError."""
        data = renamed_fields(data)
        sections = {}
        for f in dataclasses.fields(cls):
            section_cls = f.default_factory  # type: ignore[misc]
            values = dict(data.get(f.name, {}))
            known = {g.name: g for g in dataclasses.fields(section_cls)}
            unknown = set(values) - set(known)
            if unknown:
                raise InputError(f"unknown config fields in '{f.name}': {sorted(unknown)}")
            for name, value in values.items():
                if isinstance(value, list):
                    values[name] = tuple(value)
            sections[f.name] = section_cls(**values)
        cfg = cls(**sections)
        cfg.check()
        return cfg


@dataclass(frozen=True)
class Recipe:
    """How `train.py --dataset NAME` trains unless told otherwise: `overrides` go onto the defaults
    before the command's own flags and --set, and training starts from the weights of `init`."""

    overrides: tuple[str, ...] = ()
    init: str = ""  # a model in pretrained/ (a path from the project's folder); "": random weights

    def sets(self, sections: tuple[str, ...]) -> list[str]:
        """The overrides of these config sections."""
        return [o for o in self.overrides if o.partition(".")[0] in sections]


# The recipe behind each shipped model (benchmarks/README.md measures every choice); datasets not
# named here train on the defaults above. MUSDB18: the MIR-1K model's 15.6 Hz bins and 16 ms frames
# (at 44.1 kHz an STFT of 2816 / 706), widened to 1024 bins (up to 16 kHz; the rule above it);
# every stem a source of its own; each channel a track of its own; a weight average validated and
# kept; 3 epochs (5,280 patches of the 7-second preview) in batches of 8 (twice the steps of 16:
# +0.4 dB above 8 kHz): on so few songs longer runs overfit; the mask from 8 kHz up raised to
# the power 0.7 when the model separates (+0.9 dB there).
RECIPES: dict[str, Recipe] = {
    "musdb": Recipe(overrides=("audio.sample_rate=32000", "audio.n_fft=2048", "audio.hop_length=512",
                               "audio.model_bins=1024", "train.remix_stems=true", "train.channels=each",
                               "train.ema=0.99", "train.epochs=3", "train.batch_size=8",
                               "separation.high_mask_power=0.7", "separation.bin_shifts=0,1"),
                    init="pretrained/unet-mir1k.pt"),
}


# Fields that moved or were renamed: (old section, old name) -> (new section, new name).
# Checkpoints written before the move still load.
RENAMED = {("audio", "patch_overlap"): ("train", "patch_overlap"),
           ("separation", "overlap"): ("separation", "patch_overlap"),
           ("train", "num_workers"): ("train", "data_workers")}


# Fields added with a default that differs from what checkpoints written before them used:
# (section, name) -> the value such a checkpoint's config means.
ADDED = {("train", "pitch_shifts"): ()}


def renamed_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a config dict with fields of older versions under their current names, and
    fields added since then at the value those versions used."""
    data = {section: dict(values) for section, values in data.items()}
    for (old_section, old), (new_section, new) in RENAMED.items():
        if old in data.get(old_section, {}):
            data.setdefault(new_section, {})[new] = data[old_section].pop(old)
    for (section, name), value in ADDED.items():
        if section in data:
            data[section].setdefault(name, value)
    return data


def positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise InputError(f"{section}.{name}={value}: must be > 0")


def fraction(name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise InputError(f"{name}={value}: must be within [0, 1)")


def one_of(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} '{value}' (expected {' or '.join(choices)})")


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if isinstance(current, tuple):  # "a,b,c"; "" is the empty tuple (e.g. train.pitch_shifts= : none)
        kind = type(current[0]) if current else float
        return tuple(kind(part) for part in text.split(",")) if text.strip() else ()
    return type(current)(text)


def apply_overrides(cfg: Config, overrides: list[str], sections: tuple[str, ...] | None = None) -> Config:
    """Return a copy of cfg with `section.field=value` overrides applied (only to `sections`)."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, text = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in data or name not in data[section]:
            raise InputError(f"bad override '{item}': expected section.field=value, e.g. train.lr=3e-4")
        if sections is not None and section not in sections:
            raise InputError(f"override '{item}': only {', '.join(sections)} settings can change here")
        current = getattr(getattr(cfg, section), name)
        try:
            data[section][name] = _parse_value(text, current)
        except ValueError:
            raise InputError(f"bad value in override '{item}'") from None
    return Config.from_dict(data)
