"""The network behind separation, on either backend (torch or onnxruntime), and its ONNX export.

A `Network` maps `network_input` features of patches as the STFT gives them (N, F, bins, T) to
the vocal mask (N, 1, bins, T): `unet_model.MaskEstimator`, the patch normalization, the U-Net
and its sigmoid. On torch it runs as that module (eval mode, BatchNorm folded, bfloat16 where
the device computes it natively); on onnxruntime as the graph `export_onnx` makes of the same
module (float32), whose metadata carries the model's whole config, so that the .onnx file alone
separates a song. The STFT, the patches, the mask above the model's band and the inverse STFT
stay outside the graph, in torch (separation.py), the same for both backends.

    network, cfg = load_network("model.onnx", torch.device("cpu"))          # runs on onnxruntime
    network, cfg = load_network("pretrained/unet-musdb.pt", torch.device("cpu"), "onnxruntime")
    export_onnx(*load_model("pretrained/unet-musdb.pt"), "model.onnx")
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from config import Config, InputError, ModelFileError, apply_overrides
from devices import autocast, autocast_dtype
from outputs import atomic_path
from unet_model import MaskEstimator, UNet, input_channels, load_model, with_subpixel_upsampling

BACKENDS = ("torch", "onnxruntime")
OPSET = 17
ONNX_FORMAT = "1"  # the metadata layout `export_onnx` writes and `load_onnx` reads


class Network(Protocol):
    """Features (N, F, bins, T) float32 on the CPU -> vocal mask (N, 1, bins, T) float32 on the CPU."""

    backend: str

    def __call__(self, features: torch.Tensor) -> torch.Tensor: ...

    def identity(self) -> Iterator[bytes]:
        """What tells this network's weights from any other's (evaluate.py digests it)."""


class TorchNetwork:
    """`MaskEstimator` of a trained U-Net on its device, in bfloat16 where the device computes it
    natively and `separation.bfloat16` allows it: on a CPU a bfloat16 copy of the weights (made
    once; 10 % faster than autocast on an AMX Xeon), on CUDA autocast. On a CPU the decoder
    layers that compute faster so run as sub-pixel convolutions (`faster_as_subpixel`)."""

    backend = "torch"

    def __init__(self, model: nn.Module, cfg: Config) -> None:
        self.model = model  # float32: what `identity` digests
        self.device = next(model.parameters()).device
        self.dtype = autocast_dtype(self.device, "auto" if cfg.separation.bfloat16 else "float32")
        self.cast_weights = self.dtype == torch.bfloat16 and self.device.type == "cpu"
        network = copy.deepcopy(model).to(torch.bfloat16 if self.cast_weights else None)
        if self.device.type == "cpu" and isinstance(network, UNet):
            network = with_subpixel_upsampling(network, faster_as_subpixel(network, self.dtype))
            network = network.to(memory_format=torch.channels_last)
        for layer in network.modules():  # its own copy: activations may overwrite their input (5 % faster)
            if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
                layer.inplace = True
        self.estimator = MaskEstimator(network, cfg.audio.normalization)

    @torch.inference_mode()
    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = features.to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, None if self.cast_weights else self.dtype):
            return self.estimator(x).float().cpu()

    def identity(self) -> Iterator[bytes]:
        for name, value in self.model.state_dict().items():
            yield name.encode()
            yield value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def faster_as_subpixel(model: UNet, dtype: torch.dtype | None) -> list[int]:
    """The decoder layers whose transposed convolution runs faster on a CPU as a sub-pixel
    convolution (`unet_model.SubPixelUpsampling`, the same function). Measured per layer, batches
    of 16 patches of the MUSDB18 model, 2-core AMX Xeon: in bfloat16 those reading 256 channels or
    more (2.5x-3.5x: oneDNN's transposed kernels are slow on the few rows and frames there) and
    the last, one channel out (1.5x); the others 10-65 % slower. In float32 the last layer only
    (2.3x; the others 15-80 % slower)."""
    last = len(model.decoder) - 1
    if dtype is None:
        return [last]
    return [i for i, block in enumerate(model.decoder) if i == last or block[0].in_channels >= 256]


class OnnxNetwork:
    """An exported graph (`export_onnx`'s bytes) in an onnxruntime session: every graph
    optimization on, `threads` intra-op threads (0: as many as torch uses), on CUDA where the
    device is one and onnxruntime has the provider, else on the CPU."""

    backend = "onnxruntime"

    def __init__(self, graph: bytes, device: torch.device | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1  # one graph at a time: its operators run in turn
        options.log_severity_level = 3  # errors only: a warning would break the one-line outputs
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(graph, options, providers=providers)
        self.graph = graph

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(features.numpy(), dtype=np.float32)
        (mask,) = self.session.run(["mask"], {"features": x})
        return torch.from_numpy(mask)

    def identity(self) -> Iterator[bytes]:
        yield self.graph

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)


def as_network(model: nn.Module | Network, cfg: Config) -> Network:
    """A network to separate with: a torch module (a U-Net from `load_model`) runs as `TorchNetwork`."""
    return TorchNetwork(model, cfg) if isinstance(model, nn.Module) else model


def export_onnx(model: nn.Module, cfg: Config, target: str | os.PathLike | None = None,
                provenance: dict[str, Any] | None = None) -> bytes:
    """The ONNX graph (opset 17) of `MaskEstimator` around `model`, float32, with dynamic batch and
    frame axes (frames: a multiple of 2 ** encoder layers), and in its metadata the config (all of
    it, as a checkpoint carries it), the STFT sizes, the bins, the rate and `provenance`. Written
    atomically to `target` when given; returned as bytes."""
    import onnx

    unet = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format)  # the caller's stays as is
    estimator = MaskEstimator(unet, cfg.audio.normalization).eval()
    example = torch.rand(2, input_channels(cfg.model), cfg.audio.n_bins, cfg.audio.patch_frames)
    axes = {0: "batch", 3: "frames"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's notes on traced shapes: the graph is checked by the tests
        warnings.simplefilter("ignore")
        torch.onnx.export(estimator, (example,), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["features"], output_names=["mask"],
                          dynamic_axes={"features": axes, "mask": axes})
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, onnx_metadata(cfg, provenance or {}))
    data = graph.SerializeToString()
    if target is not None:
        with atomic_path(target) as tmp:
            Path(tmp).write_bytes(data)
    return data


def onnx_metadata(cfg: Config, provenance: dict[str, Any]) -> dict[str, str]:
    """What an exported graph says of itself: the config, and at the top level what a runtime
    outside this project needs to compute the graph's input and use its output."""
    audio = cfg.audio
    return {"separator_format": ONNX_FORMAT, "config": json.dumps(cfg.to_dict()),
            "provenance": json.dumps(provenance), "sample_rate": str(audio.sample_rate),
            "n_fft": str(audio.n_fft), "hop_length": str(audio.hop_length), "bins": str(audio.n_bins),
            "patch_frames": str(audio.patch_frames), "normalization": audio.normalization,
            "input": "features (batch, channels, bins, frames): the channels' mean STFT magnitude "
                     "(Hann window, centred frames) of the lowest `bins` bins, not normalized",
            "output": "mask (batch, 1, bins, frames): the vocals' share of each bin, in [0, 1]"}


def load_onnx(path: str | os.PathLike, device: torch.device) -> tuple[OnnxNetwork, Config]:
    """An exported model and its config; ModelFileError (one line) for a file that is not ONNX,
    an ONNX model this project did not export, or one whose graph does not match its config."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        network = OnnxNetwork(path.read_bytes(), device)
    except Exception:  # onnxruntime raises its own types for truncated or foreign files
        raise ModelFileError(f"{path}: not a valid ONNX model (corrupt, truncated or another format)") from None
    metadata = network.metadata()
    if metadata.get("separator_format") != ONNX_FORMAT or "config" not in metadata:
        raise ModelFileError(f"{path}: an ONNX model, but not one this project exported (no separator metadata)")
    try:
        cfg = Config.from_dict(json.loads(metadata["config"]))
    except (InputError, TypeError, ValueError) as err:
        raise ModelFileError(f"{path}: the ONNX model's config is not understood ({err})") from None
    shape = network.session.get_inputs()[0].shape  # [batch, channels, bins, frames]
    if list(shape[1:3]) != [input_channels(cfg.model), cfg.audio.n_bins]:
        raise ModelFileError(f"{path}: the ONNX graph reads {shape[1:3]} (channels, bins), its config says "
                             f"{[input_channels(cfg.model), cfg.audio.n_bins]}")
    return network, cfg


def load_network(path: str | os.PathLike, device: torch.device, backend: str = "torch",
                 overrides: list[str] = ()) -> tuple[Network, Config]:
    """The model in `path` and its config (with `separation` overrides): a .onnx file runs on
    onnxruntime; a checkpoint on `backend`, where onnxruntime runs its graph exported in memory."""
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}' (expected {' or '.join(BACKENDS)})")
    exported = Path(path).suffix.lower() == ".onnx"
    model, cfg = load_onnx(path, device) if exported else load_model(path, device)
    cfg = apply_overrides(cfg, list(overrides), sections=("separation",))
    if exported:
        return model, cfg
    if backend == "torch":
        return TorchNetwork(model, cfg), cfg
    return OnnxNetwork(export_onnx(model, cfg), device), cfg
