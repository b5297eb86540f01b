"""The U-Net of Jansson et al., "Singing Voice Separation with Deep U-Net
Convolutional Networks" (ISMIR 2017), and its checkpoints.

Input: mixture patches as `network_input` gives them, (batch, 1, 513, 128) magnitudes (with
`model.side_input` and `model.inst_frequency`, more channels: the side signal's magnitude,
each bin's instantaneous frequency); output: a vocal mask (batch, 1, 513, 128) in [0, 1].
Six encoder layers (Conv2d 5x5 stride 2, BatchNorm, LeakyReLU 0.2) halve both axes down to
8 x 2; six decoder layers (ConvTranspose2d 5x5 stride 2, BatchNorm, ReLU, dropout 0.5 on the
first three) grow them back, each fed the matching encoder output (skip connection); the
last one ends in a sigmoid.

The 513th (Nyquist) bin: six stride-2 layers need a height divisible by 64, so the
network sees bins 0..511, as in the paper, and the Nyquist bin takes the mask of bin
511 (it holds almost no energy at these rates).

    python unet_model.py                                   # the parameter count
    python unet_model.py --export checkpoints/best.pt pretrained/unet-mir1k.pt --note data=MIR-1K
    python unet_model.py --average checkpoints/seed42/best.pt checkpoints/seed7/best.pt --out checkpoints/soup.pt
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audio import STFT, channel_mean, magnitude, normalize_patches
from config import Config, InputError, ModelConfig, ModelFileError, apply_overrides, run_script
from outputs import atomic_path

CHECKPOINT_FORMAT = 1


def network_input(spec: torch.Tensor, transform: STFT, model: ModelConfig) -> torch.Tensor:
    """What the network sees of (normalized) spectra (N, C, bins, T) of C channels (1, or a
    stereo pair), complex (magnitudes do where the phase is not read): (N, 1 to 3, bins, T).

    Channel 0 is the channels' mean magnitude. With `model.side_input`, the next is the
    magnitude of the side signal, (left - right) / 2 (0 for one channel): a sound panned to
    the middle, as vocals mostly are, has none, one spread across the stereo field has much.
    With `model.inst_frequency`, the last is where each bin's frequency lies against the bin's
    centre, read from the channels' sum: the phase advance from the frame before, less the
    advance of a tone at the centre (2 pi k hop / n_fft), wrapped to (-pi, pi] and divided by
    pi, times the smaller magnitude of the two frames (0 in a patch's first frame). A steady
    partial reads the same in every frame, a voice's vibrato and glides move, and bins with
    nothing in them read about 0 instead of noise; magnitudes alone cannot say where within a
    bin a partial lies (Muth et al., "Improving DNN-based music source separation using phase
    features", 2018).
    """
    mag = channel_mean(magnitude(spec), 1)  # (N, 1, bins, T)
    features = [mag]
    if model.side_input:
        pair = spec.shape[1] == 2
        features.append((spec[:, :1] - spec[:, 1:]).abs() / 2 if pair else torch.zeros_like(mag))
    if model.inst_frequency:
        features.append(instantaneous_frequency(spec.sum(1, keepdim=True), mag, transform))
    return torch.cat(features, dim=1) if len(features) > 1 else mag


def instantaneous_frequency(spec: torch.Tensor, mag: torch.Tensor, transform: STFT) -> torch.Tensor:
    """(N, 1, bins, T) complex -> (N, 1, bins, T): `network_input`'s frequency channel, weighted by `mag`."""
    advance = spec[..., 1:] * spec[..., :-1].conj()  # (N, 1, bins, T - 1): phase step between frames
    bins = torch.arange(spec.shape[-2], device=spec.device)
    centre = torch.polar(torch.ones(spec.shape[-2], device=spec.device),  # (bins, 1): one step of each centre
                         -2 * math.pi * transform.hop / transform.n_fft * bins).unsqueeze(-1)
    deviation = (advance * centre).angle() / math.pi  # (N, 1, bins, T - 1) in (-1, 1]
    weighted = deviation * torch.minimum(mag[..., 1:], mag[..., :-1])  # quiet bins: about 0
    return torch.nn.functional.pad(weighted, (1, 0))  # (N, 1, bins, T)


def input_features(model: ModelConfig) -> list[str]:
    """The network's input channels in order: the mixture's magnitude, then each optional
    feature `model` turns on (`network_input`'s, then the bin position `UNet.forward` adds)."""
    optional = ("side_input", "inst_frequency", "bin_position")
    return ["magnitude", *(name for name in optional if getattr(model, name))]


def input_channels(model: ModelConfig) -> int:
    """How many channels the network's first layer reads."""
    return len(input_features(model))


def top_tilt(bins: int, top_db: float, like: torch.Tensor) -> torch.Tensor:
    """(bins, 1) gains: 1 over the lower half of the band, from there rising linearly in dB to
    `top_db` at the top bin."""
    rise = torch.linspace(0, 1, bins - bins // 2, device=like.device, dtype=like.dtype) * top_db
    db = torch.cat([torch.zeros(bins // 2, device=like.device, dtype=like.dtype), rise])  # (bins,)
    return (10 ** (db / 20)).view(bins, 1)


class UNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k, pad = cfg.kernel_size, cfg.kernel_size // 2
        widths = (input_channels(cfg), *cfg.channels)  # input channels first
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=2, padding=pad),
                          nn.BatchNorm2d(c_out), nn.LeakyReLU(cfg.leaky_slope))
            for c_in, c_out in itertools.pairwise(widths))
        self.decoder = nn.ModuleList()
        depth = len(cfg.channels)
        for i in range(depth):
            c_in = widths[depth - i] * (1 if i == 0 else 2)  # deeper layers also get the skip
            c_out = widths[depth - i - 1] if i < depth - 1 else 1
            layer = [nn.ConvTranspose2d(c_in, c_out, k, stride=2, padding=pad, output_padding=1)]
            if i < depth - 1:
                layer += [nn.BatchNorm2d(c_out), nn.ReLU()]
                if i < cfg.dropout_layers:
                    layer.append(nn.Dropout(cfg.dropout))
            self.decoder.append(nn.Sequential(*layer))
        self.multiple = cfg.multiple
        self.input_power = cfg.input_power
        self.magnitudes = 1 + cfg.side_input  # the channels input_power applies to
        self.bin_position = cfg.bin_position
        self.top_tilt_db = cfg.top_tilt_db

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, 1 to 3, bins, frames) `network_input` of the mixture (channel 0: its magnitude)
        -> vocal mask (batch, 1, bins, frames)."""
        usable = features.shape[-2] - features.shape[-2] % self.multiple
        x = features[..., :usable, :]  # (B, 1 to 3, 512, T)
        if self.input_power != 1.0:
            m = self.magnitudes
            x = torch.cat([x[:, :m].clamp_min(0).pow(self.input_power), x[:, m:]], dim=1)
        if self.top_tilt_db:
            x = x * top_tilt(usable, self.top_tilt_db, x)  # (B, F, 512, T): magnitudes and features alike
        if self.bin_position:  # convolutions are blind to where they are in frequency: tell them
            height = torch.linspace(0, 1, usable, device=x.device, dtype=x.dtype).view(1, 1, usable, 1)
            x = torch.cat([x, height.expand(x.shape[0], 1, usable, x.shape[-1])], dim=1)  # (B, 2 to 4, 512, T)
        skips = []
        for layer in self.encoder:
            x = layer(x)  # (B, C_i, 512 / 2^i, T / 2^i): 16 x 256 x 64 ... 512 x 8 x 2
            skips.append(x)
        for i, layer in enumerate(self.decoder):
            x = layer(x if i == 0 else torch.cat([x, skips[-1 - i]], dim=1))  # skip: channels doubled
        mask = torch.sigmoid(x)  # (B, 1, 512, T)
        rest = features.shape[-2] - usable  # the Nyquist bin: copy the top mask row
        return torch.cat([mask, mask[..., -1:, :].expand(*mask.shape[:-2], rest, -1)], dim=-2)  # (B, 1, 513, T)


class MaskEstimator(nn.Module):
    """The U-Net behind its input's normalization: `network_input` features of patches as the
    STFT gives them (N, F, bins, T) -> vocal mask (N, 1, bins, T). Each patch is divided by the
    peak of its channels' mean magnitude (channel 0; `audio.normalization`), as training divides
    its batches; every feature scales with the magnitudes, so one scale serves them all. What
    separation runs, on either backend: the ONNX export is this module's graph."""

    def __init__(self, unet: UNet, normalization: str) -> None:
        super().__init__()
        self.unet = unet
        self.normalization = normalization

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        _, scale = normalize_patches(features[:, :1], self.normalization)  # (N, 1, 1, 1)
        weights = next(self.unet.parameters()).dtype  # float32, or bfloat16 where separation runs in it
        return self.unet((features / scale).to(weights))  # (N, 1, bins, T)


def fuse_batchnorm(model: UNet) -> UNet:
    """Fold every BatchNorm into the convolution before it (eval mode only): same output, less work."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in [*model.encoder, *model.decoder]:
        if len(block) > 1 and isinstance(block[1], nn.BatchNorm2d):
            transpose = isinstance(block[0], nn.ConvTranspose2d)
            block[0] = fuse_conv_bn_eval(block[0], block[1], transpose=transpose)
            block[1] = nn.Identity()
    return model


class SubPixelUpsampling(nn.Module):
    """A `ConvTranspose2d` of stride 2 (odd kernel, padding kernel // 2, output padding 1) as an
    ordinary convolution with four outputs per channel, one per output phase, and a pixel shuffle
    (Shi et al., "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
    Convolutional Neural Network", 2016): the same function, computed by the convolution kernels
    oneDNN makes fastest. Output row 2m + r of the transposed convolution sums the input rows
    m + d with kernel taps r + padding - 2d; each phase's taps, zero where the kernel has none,
    make one 3x3 (for a 5x5 kernel) convolution's output channel."""

    def __init__(self, transposed: nn.ConvTranspose2d) -> None:
        super().__init__()
        k, pad = transposed.kernel_size[0], transposed.padding[0]
        if (transposed.kernel_size != (k, k) or k % 2 == 0 or transposed.stride != (2, 2)
                or transposed.padding != (k // 2, k // 2) or transposed.output_padding != (1, 1)):
            raise ValueError(f"not a stride-2 'same' transposed convolution: {transposed}")
        reach = (pad + 1) // 2  # input rows m - reach .. m + reach feed output rows 2m and 2m + 1
        taps = torch.tensor([[r + pad - 2 * d for d in range(-reach, reach + 1)] for r in (0, 1)])  # (phase, offset)
        valid = (taps >= 0) & (taps < k)
        weight = transposed.weight.detach()  # (in, out, k, k)
        padded = nn.functional.pad(weight, (0, 1, 0, 1))  # (in, out, k + 1, k + 1): index k reads 0
        taps = taps.where(valid, k)
        phases = padded[:, :, taps][..., taps]  # (in, out, 2, 2r+1, 2, 2r+1): rows, then columns
        kernel = phases.permute(1, 2, 4, 0, 3, 5)  # (out, row phase, column phase, in, 2r+1, 2r+1)
        c_in, c_out = weight.shape[:2]
        self.conv = nn.Conv2d(c_in, 4 * c_out, 2 * reach + 1, padding=reach, bias=transposed.bias is not None,
                              device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.reshape(4 * c_out, c_in, 2 * reach + 1, 2 * reach + 1))
            if transposed.bias is not None:
                self.conv.bias.copy_(transposed.bias.detach().repeat_interleave(4))  # channel o * 4 + phase

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.conv(x), 2)  # (B, 4 C, H, W) -> (B, C, 2H, 2W)


def with_subpixel_upsampling(model: UNet, layers: list[int]) -> UNet:
    """`model` with the transposed convolutions of these decoder layers as `SubPixelUpsampling`
    (in place; the same function)."""
    for i in layers:
        model.decoder[i][0] = SubPixelUpsampling(model.decoder[i][0])
    return model


def prepare_for_inference(model: UNet, device: str | torch.device = "cpu") -> UNet:
    """Eval mode, BatchNorm folded, channels-last on `device`: the form separation runs in."""
    return fuse_batchnorm(model.eval()).to(device, memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save_checkpoint(path: str | os.PathLike, model: nn.Module, cfg: Config, **state: Any) -> None:
    """Write model weights, config and training state atomically (write, then rename)."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    write_checkpoint(path, cfg, model.state_dict(), **state)


def write_checkpoint(path: str | os.PathLike, cfg: Config, weights: dict[str, torch.Tensor], **extra: Any) -> Path:
    """A checkpoint file (format, config, weights and `extra`), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "config": cfg.to_dict(), "model": weights, **extra}, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents; InputError if it is missing, corrupt or not ours."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: checkpoint not found (train one with train.py)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # torch raises many types for truncated or foreign files
        raise ModelFileError(f"{path}: not a valid checkpoint (corrupt, truncated or another format)") from None
    if not isinstance(payload, dict) or not {"config", "model"} <= payload.keys():
        raise ModelFileError(f"{path}: not a checkpoint of this project (no config/model)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: checkpoint format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    return payload


def load_starting_weights(model: UNet, cfg: ModelConfig, start: ModelConfig, weights: dict[str, torch.Tensor]) -> None:
    """Load the weights of a checkpoint (trained with `start`) to train `model` (`cfg`) from. An
    input feature `cfg` adds (`model.side_input`, `model.inst_frequency`, `model.bin_position`)
    gets its first layer's weights at 0: the model starts out computing exactly what the
    checkpoint did, and learns to use the feature from there."""
    theirs, ours = input_features(start), input_features(cfg)
    dropped = [name for name in theirs if name not in ours]
    if dropped:
        raise InputError(f"the checkpoint reads model.{dropped[0]}; this model does not")
    first = weights["encoder.0.0.weight"]  # (16, len(theirs), 5, 5)
    columns = [first[:, theirs.index(name)] if name in theirs else torch.zeros_like(first[:, 0]) for name in ours]
    model.load_state_dict({**weights, "encoder.0.0.weight": torch.stack(columns, dim=1)})  # (16, len(ours), 5, 5)


def checkpoint_config(payload: dict[str, Any], path: str | os.PathLike) -> Config:
    """The config a checkpoint read from `path` (`read_checkpoint`) carries; ModelFileError if it
    cannot be understood."""
    try:
        return Config.from_dict(payload["config"])
    except (InputError, TypeError) as err:
        raise ModelFileError(f"{path}: checkpoint config not understood ({err})") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, Config]:
    """The trained model (eval mode, BatchNorm folded, on device) and the config it was trained with."""
    payload = read_checkpoint(path, device)
    cfg = checkpoint_config(payload, path)
    model = UNet(cfg.model)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError:
        raise ModelFileError(f"{path}: weights do not match the checkpoint's model config") from None
    return prepare_for_inference(model, device), cfg


def export_model(source: str | os.PathLike, target: str | os.PathLike, separation: list[str] = (),
                 **provenance: Any) -> Path:
    """The compact form of a trained model, as the project ships it: float16 weights (float32
    BatchNorm statistics, a few kB), its config (with `separation` overrides, how it is to be
    applied) and `provenance`; no optimizer state."""
    payload = read_checkpoint(source)
    cfg = apply_overrides(checkpoint_config(payload, source), list(separation), sections=("separation",))
    state = {name: value.half() if value.is_floating_point() and "running" not in name else value
             for name, value in payload["model"].items()}
    return write_checkpoint(target, cfg, state, provenance=provenance)


def average_checkpoints(sources: list[str | os.PathLike], target: str | os.PathLike, **provenance: Any) -> Path:
    """One model whose weights (and BatchNorm statistics) are the mean of the `sources`', in
    float32, with the first's config and `provenance`: a weight soup. Runs fine-tuned from the
    same start stay close enough that their mean is a model of its own, as good as an ensemble
    of them at the cost of one network. InputError unless every source has the same network
    (`model` and `audio` config)."""
    payloads = [read_checkpoint(path) for path in sources]
    first = checkpoint_config(payloads[0], sources[0])
    for path, payload in zip(sources[1:], payloads[1:]):
        other = checkpoint_config(payload, path)
        if (other.model, other.audio) != (first.model, first.audio):
            raise InputError(f"{path}: another network than {sources[0]}'s (model or audio config differs)")
    weights = {}
    for name, value in payloads[0]["model"].items():
        if value.is_floating_point():
            weights[name] = torch.stack([p["model"][name].float() for p in payloads]).mean(0)
        else:
            weights[name] = value  # BatchNorm's batch counter
    return write_checkpoint(target, first, weights, provenance=provenance)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "TARGET"), help="write the compact (float16) form")
    p.add_argument("--average", nargs="+", metavar="CHECKPOINT", help="average these models' weights into --out")
    p.add_argument("--out", help="with --average: the averaged checkpoint")
    p.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                   help="provenance stored with --export or --average")
    p.add_argument("--set", action="append", default=[], metavar="separation.FIELD=VALUE",
                   help="with --export: how the exported model is applied")
    args = p.parse_args()
    notes = dict(note.partition("=")[::2] for note in args.note)
    if args.average:
        if not args.out:
            p.error("--average needs --out")
        path = average_checkpoints(args.average, args.out, averaged=" ".join(args.average), **notes)
        print(f"{path}: the mean of {len(args.average)} models")
        return
    if args.export:
        path = export_model(*args.export, args.set, **notes)
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
        return
    cfg = Config()
    net = UNet(cfg.model).eval()
    x = torch.rand(1, 1, cfg.audio.n_bins, cfg.audio.patch_frames)
    with torch.no_grad():
        y = net(x)
    print(f"input {tuple(x.shape)} -> mask {tuple(y.shape)}, {count_parameters(net):,} parameters")


if __name__ == "__main__":
    run_script(main)
