"""Features shared by training and inference: STFT, patches, normalization, targets."""

import numpy as np
import pytest
import torch

from config import Config, apply_overrides
from data_generator import (
    from_patches,
    istft,
    normalize_patches,
    oracle_mask,
    patch_padding,
    resample,
    stft,
    to_patches,
)
from train import mask_loss

PAPER = ["audio.sample_rate=8192", "audio.hop_length=768"]


@pytest.mark.parametrize("overrides", [[], PAPER], ids=["default", "paper"])
def test_stft_round_trip_reconstructs_the_signal(overrides):
    cfg = apply_overrides(Config(), overrides).audio
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3 * cfg.sample_rate + 123)).astype("f"))
    spec = stft(x, cfg)
    assert spec.shape[:2] == (2, 513)
    assert spec.shape[-1] == 1 + x.shape[-1] // cfg.hop_length
    y = istft(spec, cfg, x.shape[-1])
    assert torch.max(torch.abs(y - x)) < 1e-4


def test_stft_of_very_short_input_works():
    cfg = Config().audio
    x = torch.ones(1, 1)
    assert istft(stft(x, cfg), cfg, 1).shape == (1, 1)


@pytest.mark.parametrize("frames", [1, 127, 128, 129, 500, 1000])
@pytest.mark.parametrize("hop", [32, 64, 128])
def test_patching_and_unpatching_are_inverse(frames, hop):
    mag = torch.rand(2, 513, frames)
    patches = to_patches(mag, 128, hop)
    assert patches.shape[-2:] == (513, 128)
    left, right = patch_padding(frames, 128, hop)
    assert (left + frames + right - 128) % hop == 0
    assert torch.allclose(from_patches(patches, hop, frames), mag)


def test_every_frame_is_covered_by_the_same_number_of_patches():
    left, right = patch_padding(1000, 128, 32)
    counts = np.zeros(left + 1000 + right)
    for start in range(0, len(counts) - 127, 32):
        counts[start:start + 128] += 1
    assert set(counts[left:left + 1000]) == {4}


def test_patch_normalization_scales_to_peak_one_and_keeps_silence_finite():
    mag = torch.rand(3, 1, 513, 128) * torch.tensor([0.0, 1.0, 50.0]).view(3, 1, 1, 1)
    normed, scale = normalize_patches(mag, "patch")
    assert torch.isfinite(normed).all()
    assert normed[0].max() == 0
    assert torch.allclose(normed[1:].amax(dim=(-2, -1)), torch.ones(2, 1))
    assert torch.allclose(normed * scale, mag)


def test_oracle_mask_is_clipped_ratio_and_losses_vanish_at_it():
    mix = torch.rand(4, 1, 513, 128) + 0.1
    vocals = mix * torch.rand_like(mix)
    target = oracle_mask(mix, vocals)
    assert torch.allclose(target, vocals / mix)
    assert mask_loss(target, mix, vocals, "mask").item() == 0
    assert mask_loss(target, mix, vocals, "magnitude").item() < 1e-7
    louder = oracle_mask(mix, 2 * mix)
    assert torch.all(louder == 1)
    assert mask_loss(torch.zeros_like(mix), mix, vocals, "mask").item() > 0.1


def test_resample_keeps_duration_and_a_tone():
    rate_in, rate_out = 44100, 16000
    t = np.arange(rate_in) / rate_in
    x = np.sin(2 * np.pi * 440 * t)[None].astype(np.float32)
    y = resample(x, rate_in, rate_out)
    assert y.shape == (1, rate_out)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) - 440) <= 1
