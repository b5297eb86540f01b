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

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


class InputError(Exception):
    """A problem with what the user gave us (file, dataset, checkpoint, flag).

    Scripts print it as one line on stderr and exit non-zero, without a traceback.
    """


@dataclass
class AudioConfig:
    """Waveform -> magnitude spectrogram -> patches. Shared by training and inference."""

    sample_rate: int = 16000  # the model's rate; inputs are resampled to it
    n_fft: int = 1024  # 513 frequency bins
    hop_length: int = 256
    patch_frames: int = 128  # time frames per network input
    patch_overlap: float = 0.75  # overlap of training patches
    normalization: str = "patch"  # "patch": divide each patch by its peak; "none"

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def patch_hop(self, overlap: float) -> int:
        """Frames between the starts of consecutive patches at the given overlap."""
        return max(1, round(self.patch_frames * (1.0 - overlap)))


@dataclass
class ModelConfig:
    """The U-Net of Jansson et al. 2017 (see unet_model.py)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    kernel_size: int = 5
    leaky_slope: float = 0.2
    dropout: float = 0.5
    dropout_layers: int = 3  # the first decoder layers that use dropout


@dataclass
class TrainConfig:
    """Optimisation and augmentation."""

    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"  # "cosine" (over epochs or --max-minutes) or "constant"
    loss: str = "magnitude"  # "magnitude": L1(mask * mix, vocals) (Jansson); "mask": L1(mask, oracle mask)
    remix: bool = True  # vocals of one track over the accompaniment of another
    remix_prob: float = 0.5
    gain_range: tuple[float, float] = (0.5, 1.5)  # random gain per source when remixing
    valid_tracks: int = 10  # held-out training tracks when the dataset has no valid split
    samples_per_epoch: int = 0  # 0: one pass over all training patches
    shuffle: bool = True
    num_workers: int = -1  # DataLoader worker processes; -1: none on CPU, 4 on CUDA
    seed: int = 42


@dataclass
class SeparationConfig:
    """How a trained model is applied; the only section inference may override (--set)."""

    overlap: float = 0.75  # overlap of inference patches; the masks of overlapping patches are averaged
    mask_power: float = 1.0  # vocal mask m^p / (m^p + (1-m)^p): 1 = the network's mask, 2 = Wiener-like
    batch_size: int = 16  # patches per forward pass
    bfloat16: bool = True  # bfloat16 autocast where the device computes it natively (AMX/AVX512-BF16, CUDA)


@dataclass
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    separation: SeparationConfig = field(default_factory=SeparationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Rebuild a config; unknown sections or fields are an InputError."""
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
        return cls(**sections)

    def audio_key(self) -> str:
        """A short hash of the feature settings, for naming feature caches."""
        blob = json.dumps(dataclasses.asdict(self.audio), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if isinstance(current, tuple):
        kind = type(current[0]) if current else float
        return tuple(kind(part) for part in text.split(","))
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
