"""Deployment: the ONNX export, the onnxruntime backend, and the streaming separator."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import REPO, run_main, shared_path, song, write_wav

import devices
import inference
import separation
from audio import STFT, read_audio
from backends import OPSET, OnnxNetwork, TorchNetwork, export_onnx, load_network, load_onnx
from config import Config, InputError, ModelFileError, apply_overrides
from separation import SHIPPED, StreamSeparator, separate_array, stream_latency
from unet_model import load_model

FLOAT32 = ["separation.bfloat16=false"]  # torch in float32: what the float32 graph computes


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference ** 2) / max(np.sum((reference - estimate) ** 2), 1e-30)))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    """The demo-trained model exported by the command a user runs."""
    target = tmp_path_factory.mktemp("onnx") / "model.onnx"
    code, out, err = run_main(inference.main, ["--export-onnx", str(target), "--checkpoint", str(checkpoint)])
    assert code == 0, err
    assert "opset 17" in out and target.stat().st_size > 1e6
    return target


def test_export_holds_normalization_and_mask_and_its_config(checkpoint, exported):
    model, cfg = load_model(checkpoint)
    graph = onnx.load(str(exported))
    assert graph.opset_import[0].version >= OPSET
    ops = {node.op_type for node in graph.graph.node}
    assert {"ReduceMax", "Div", "Conv", "ConvTranspose", "Sigmoid"} <= ops  # normalization, U-Net, mask
    meta = {p.key: p.value for p in graph.metadata_props}
    assert Config.from_dict(json.loads(meta["config"])) == cfg
    assert (int(meta["sample_rate"]), int(meta["n_fft"]), int(meta["hop_length"]), int(meta["bins"])) == \
        (cfg.audio.sample_rate, cfg.audio.n_fft, cfg.audio.hop_length, cfg.audio.n_bins)
    assert json.loads(meta["provenance"])["exported_from"] == str(checkpoint)
    # dynamic batch and frame axes; un-normalized input: the graph divides each patch by its peak
    onnx_net, _ = load_onnx(exported, torch.device("cpu"))
    torch_net = TorchNetwork(model, apply_overrides(cfg, FLOAT32))
    for batch, frames in ((1, 128), (3, 64), (5, 256)):
        features = torch.rand(batch, 1, cfg.audio.n_bins, frames) * 40
        expected = torch_net(features)
        assert torch.allclose(onnx_net(features), expected, atol=1e-5)
        assert torch.allclose(onnx_net(features / 40), expected, atol=1e-5)  # the scale is normalized away


def test_onnxruntime_separates_as_torch_does_from_the_command_line(checkpoint, exported, tmp_path):
    mix = song(3.0, 44100, 2)
    path = write_wav(tmp_path / "song.wav", mix, 44100)
    runs = {"torch": ["--checkpoint", str(checkpoint), "--set", *FLOAT32],
            "onnxruntime": ["--checkpoint", str(checkpoint), "--backend", "onnxruntime"],
            "exported": ["--checkpoint", str(exported)]}
    vocals = {}
    for name, flags in runs.items():
        code, _, err = run_main(inference.main, [str(path), "--out-dir", str(tmp_path / name), *flags])
        assert code == 0, err
        vocals[name], _ = read_audio(tmp_path / name / "song" / "vocals.wav")
    assert snr_db(vocals["torch"], vocals["onnxruntime"]) > 60
    assert snr_db(vocals["torch"], vocals["exported"]) > 60
    assert snr_db(mix, vocals["torch"]) < 20  # it separated something: not the mixture itself


def test_foreign_and_broken_onnx_files_get_one_line_and_exit_2(tmp_path):
    path = write_wav(tmp_path / "song.wav", song(1.0, 16000, 2), 16000)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a protobuf at all" * 50)
    identity = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                      [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                      [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    foreign = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(identity, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(foreign))
    for bad, words in ((broken, "not a valid ONNX model"), (foreign, "not one this project exported"),
                       (tmp_path / "missing.onnx", "not found")):
        code, _, err = run_main(inference.main, [str(path), "--checkpoint", str(bad), "--out-dir", str(tmp_path / "o")])
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and words in err, err
        assert bad.name in err
    assert not (tmp_path / "o").exists()
    code, _, err = run_main(inference.main, ["--export-onnx", str(tmp_path / "x.onnx"), "--checkpoint", str(foreign)])
    assert code == 1 and "already an ONNX model" in err
    with pytest.raises(ModelFileError):
        load_network(broken, torch.device("cpu"))


def test_shipped_model_exports_with_its_whole_config(tmp_path):
    graph = export_onnx(*load_model(SHIPPED), tmp_path / "shipped.onnx", {"note": "test"})
    network, cfg = load_network(tmp_path / "shipped.onnx", torch.device("cpu"))
    assert isinstance(network, OnnxNetwork) and network.graph == graph
    shipped_cfg = load_model(SHIPPED)[1]
    assert cfg == shipped_cfg and cfg.audio.n_bins == 1024 and cfg.audio.sample_rate == 32000
    meta = network.metadata()
    assert json.loads(meta["provenance"]) == {"note": "test"}
    assert network.session.get_inputs()[0].shape[1:3] == [1, 1024]


def test_shipped_model_on_onnxruntime_matches_torch_on_a_real_preview():
    track = shared_path("musdb18-preview", "test")
    from tracks import load_tracks

    mixture, _, rate = load_tracks("musdb", track.parent, "test")[0].load()
    (torch_net, cfg), (onnx_net, _) = (load_network(SHIPPED, torch.device("cpu"), backend, FLOAT32)
                                       for backend in ("torch", "onnxruntime"))
    assert snr_db(separate_array(torch_net, cfg, mixture, rate), separate_array(onnx_net, cfg, mixture, rate)) > 60


@pytest.mark.parametrize("rate, channels, settings, blocks", [
    (44100, 2, [], (4096, 1001)), (16000, 1, [], (4096,)),
    (22050, 2, ["separation.stereo=each", "separation.patch_overlap=0"], (4096,))])
def test_stream_equals_the_file_path_block_by_block(checkpoint, monkeypatch, rate, channels, settings, blocks):
    monkeypatch.setattr(separation, "CHUNK_SECONDS", 5.0)  # the file path cross-fades chunks of 8 s here
    model, cfg = load_model(checkpoint)
    cfg = apply_overrides(cfg, settings)
    audio = song(20.0, rate, channels)
    audio[:, : rate // 2] = 0  # silence, then the song
    assert len(separation.chunk_bounds(audio.shape[1], rate, cfg)[0]) == 3  # two chunks, one cross-fade
    whole = separate_array(model, cfg, audio, rate)
    for block in blocks:
        stream = StreamSeparator(model, cfg, rate, channels)
        assert stream.latency == stream_latency(STFT(cfg.audio, rate), cfg.audio.patch_frames,
                                                cfg.audio.patch_hop(cfg.separation.patch_overlap))
        pieces = [stream.process(audio[:, i:i + block]) for i in range(0, audio.shape[1], block)]
        assert all(v.shape == a.shape == (channels, min(block, audio.shape[1] - i))
                   for (v, a), i in zip(pieces, range(0, audio.shape[1], block)))
        pieces.append(stream.flush())
        vocals, accompaniment = (np.concatenate(part, axis=1) for part in zip(*pieces))
        assert vocals.shape[1] == audio.shape[1] + stream.latency
        assert np.abs(vocals[:, :stream.latency]).max() == 0  # the latency: silence first
        vocals, accompaniment = vocals[:, stream.latency:], accompaniment[:, stream.latency:]
        assert snr_db(whole, vocals) > 40
        assert np.abs(vocals + accompaniment - audio).max() < 1e-5


def test_stream_latency_is_about_one_patch_and_bad_blocks_are_refused(checkpoint):
    model, cfg = load_model(SHIPPED)
    stream = StreamSeparator(model, cfg, 44100, 2)
    patch_seconds = cfg.audio.patch_frames * cfg.audio.hop_length / cfg.audio.sample_rate
    assert patch_seconds < stream.latency / 44100 < patch_seconds + 0.1
    with pytest.raises(InputError, match="expected \\(2 channels"):
        stream.process(np.zeros((1, 4096), np.float32))


def test_backend_names_are_checked():
    with pytest.raises(InputError, match="unknown backend"):
        load_network(REPO / "pretrained" / "unet-musdb.pt", torch.device("cpu"), "tensorrt")


# Run in a fresh interpreter: in a process that has run other tests, glibc may serve a 64 MiB
# buffer from a hole its heap already holds, and then nothing goes back on freeing it.
GLIBC_PROBE = """
import json, os, sys, numpy as np, devices

def resident():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def released(size):  # resident bytes given back when a buffer of size bytes, written whole, is freed
    buffer = np.ones(size // 8)
    held = resident()
    del buffer
    return held - resident()

size = int(sys.argv[1])
outside = released(size)
with devices.large_buffers_reused():
    inside = released(size)
    held = resident()
returned = held - resident()
print(json.dumps(dict(outside=outside, inside=inside, returned=returned, after=released(size))))
"""


@pytest.mark.skipif(devices.glibc() is None or not Path("/proc/self/statm").exists(), reason="glibc on Linux")
def test_large_buffers_are_reused_inside_the_block_and_not_after():
    """A freed 64 MiB buffer: outside the block glibc unmaps it (its pages, small or huge, go back
    to the kernel, and the next one is faulted in afresh); inside it the heap keeps them for the
    next allocation; on leaving, the kept memory is returned and glibc behaves as before."""
    size = 2**26
    probe = subprocess.run([sys.executable, "-c", GLIBC_PROBE, str(size)], cwd=REPO, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    bytes_back = json.loads(probe.stdout)
    outside, inside, after = bytes_back["outside"], bytes_back["inside"], bytes_back["after"]
    assert inside < size / 4 < size * 3 / 4 < min(outside, after), bytes_back
    assert bytes_back["returned"] > size * 3 / 4, bytes_back
