"""Features shared by training and inference: STFT, patches, blending, normalization, batches, targets."""

import dataclasses
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from audio import STFT, normalize_patches, resample
from augment import (
    AlteredVocals,
    Equalizer,
    ExtraVocals,
    Item,
    RandomGains,
    RemixSources,
    SwapChannels,
    augmentations,
    time_stretch,
)
from config import Config, InputError, apply_overrides
from data_generator import PatchDataset, patch_padding, to_patches
from separation import from_patches
from spectra import spectra_key
from tracks import Track, load_tracks, split_validation, train_valid_tracks
from train import best_bin_gains, mask_loss, oracle_mask, pre_emphasis, waveform_sdr
from unet_model import network_input

PAPER = ["audio.sample_rate=8192", "audio.hop_length=768"]


def tone_440(seconds: float, rate: int) -> np.ndarray:
    """(1, samples) float32: a 440 Hz sine at amplitude 0.3."""
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)


@pytest.mark.parametrize("overrides", [[], PAPER], ids=["default", "paper"])
def test_stft_round_trip_reconstructs_the_signal(overrides):
    cfg = apply_overrides(Config(), overrides).audio
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3 * cfg.sample_rate + 123)).astype("f"))
    transform = STFT(cfg)
    spec = transform(x)
    assert spec.shape[:2] == (2, 513)
    assert spec.shape[-1] == 1 + x.shape[-1] // cfg.hop_length
    assert torch.max(torch.abs(transform.inverse(spec, x.shape[-1]) - x)) < 1e-4


@pytest.mark.parametrize("rate, n_fft, hop", [(16000, 1024, 256), (44100, 2816, 706), (48000, 3072, 768),
                                              (22050, 1408, 353), (8000, 512, 128)])
def test_stft_at_other_rates_keeps_the_models_durations_and_bins(rate, n_fft, hop):
    cfg = Config().audio
    transform = STFT(cfg, rate)
    assert (transform.n_fft, transform.hop) == (n_fft, hop)
    t = np.arange(2 * rate) / rate
    tone = torch.from_numpy((0.5 * np.sin(2 * np.pi * 1000 * t))[None].astype(np.float32))
    spec = transform(tone)
    band = transform.model_band(spec).abs()
    model_band = STFT(cfg).model_band(STFT(cfg)(torch.from_numpy(resample(tone.numpy(), rate, 16000)))).abs()
    assert band.shape[-2] == 513
    assert band[0].mean(-1).argmax() == model_band[0].mean(-1).argmax() == 64  # 1 kHz is the model's bin 64
    assert band[0, 64].mean().item() == pytest.approx(model_band[0, 64].mean().item(), rel=0.02)  # same magnitude scale
    assert torch.max(torch.abs(transform.inverse(spec, tone.shape[-1]) - tone)) < 1e-4


@pytest.mark.parametrize("rate", [16000, 44100])
def test_inst_frequency_reads_where_a_tone_lies_within_its_bin(rate):
    """A tone 0.3 bins above bin 100's centre: per unit of magnitude the channel reads an offset
    of +0.3 bins there and -0.7 in bin 101 (0.5 per bin when the hop is a quarter of the
    window), at any rate; far from the tone it reads about 0."""
    cfg = apply_overrides(Config(), ["model.inst_frequency=true"])
    transform = STFT(cfg.audio, rate)
    t = np.arange(rate) / rate
    tone = torch.from_numpy(np.sin(2 * np.pi * 100.3 * rate / transform.n_fft * t)[None, None].astype(np.float32))
    spec = transform(tone)  # (1, 1, bins, frames)
    features = network_input(spec, transform, cfg.model)
    assert features.shape == (1, 2, *spec.shape[-2:])
    assert torch.allclose(features[:, :1], spec.abs(), rtol=1e-6, atol=0)  # the magnitude, to its last bit
    assert torch.equal(features[0, 1, :, 0], torch.zeros(spec.shape[-2]))  # no frame before the first
    mag = spec.abs()[0, 0, :, 5:-5]  # away from the zero padding at the ends
    per_unit = features[0, 1, :, 5:-5] / mag  # the magnitude is steady, so each frame's weight is its own
    per_bin = 2 * transform.hop / transform.n_fft  # one bin of offset in the channel's unit
    assert torch.allclose(per_unit[100], torch.full_like(per_unit[100], 0.3 * per_bin), atol=1e-3)
    assert torch.allclose(per_unit[101], torch.full_like(per_unit[101], -0.7 * per_bin), atol=1e-3)
    assert features[0, 1, 300:].abs().max() < 1e-4 * mag[100].mean()  # nothing there, nothing read
    magnitudes_only = network_input(spec, transform, Config().model)  # the side and frequency channels off
    assert torch.allclose(magnitudes_only, spec.abs(), rtol=1e-6, atol=0)


def test_stft_of_very_short_input_works():
    for rate in (8000, 16000, 44100):
        transform = STFT(Config().audio, rate)
        for n in (1, 2, 3):
            x = torch.ones(1, n)
            assert transform.inverse(transform(x), n).shape == (1, n)


@pytest.mark.parametrize("frames", [1, 127, 128, 129, 500, 1000])
@pytest.mark.parametrize("hop", [32, 64, 128])
def test_patching_and_unpatching_are_inverse(frames, hop):
    mag = torch.rand(2, 513, frames)
    patches = to_patches(mag, 128, hop)
    assert patches.shape[-2:] == (513, 128)
    left, right = patch_padding(frames, 128, hop)
    assert (left + frames + right - 128) % hop == 0
    assert torch.allclose(from_patches(patches, hop, frames), mag, atol=1e-6)


def test_blending_weights_patch_edges_least():
    """Two patches that disagree: at 50 % overlap, the Hann blend follows each patch where it is central."""
    frames, hop = 256, 64
    patches = to_patches(torch.zeros(1, 1, frames), 128, hop)
    n = patches.shape[-3]
    patches = torch.arange(n, dtype=torch.float32).view(1, n, 1, 1).expand_as(patches).clone()
    blended = from_patches(patches, hop, frames)[0, 0]
    left, _ = patch_padding(frames, 128, hop)
    centre = 1 * hop + 64 - left  # frame at the centre of patch 1: Hann weight 1 there, 0 in its neighbours
    assert blended[centre].item() == pytest.approx(1.0, abs=0.01)  # a plain average would give 1.5
    disjoint = from_patches(to_patches(torch.ones(1, 1, frames), 128, 128), 128, frames)
    assert torch.equal(disjoint, torch.ones(1, 1, frames))  # no overlap: flat weights, no gaps


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


def made_tracks(count, seconds=3.0, rate=16000):
    """Tracks of noise (vocals) and a tone (accompaniment), held in memory."""
    tracks = []
    for i in range(count):
        rng = np.random.default_rng(i)
        vocals = (0.1 * rng.standard_normal((1, int(seconds * rate)))).astype(np.float32)
        accompaniment = (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * np.arange(vocals.shape[1]) / rate))[None]
        mixture = (vocals + accompaniment).astype(np.float32)
        tracks.append(Track(f"t{i}", lambda m=mixture, v=vocals: (m, v, rate), lambda: seconds))
    return tracks


def test_collate_mixes_on_complex_spectra_applies_gains_and_normalizes_by_the_mixture():
    cfg = Config()
    data = PatchDataset(made_tracks(2), cfg)
    item = data[0]
    vocals, accompaniment = item.sources[:, 0]  # (2 re/im, bins, T) each: one channel, the mean
    item.gains = torch.tensor([[2.0], [0.5]])  # (sources, 1): one gain per source
    mix, voc = data.collate([item])
    assert mix.shape == voc.shape == (1, 1, 513, 128) and mix.is_complex()
    assert mix.abs().max().item() == pytest.approx(1.0)  # normalized by the mixture's peak magnitude
    v = torch.complex(vocals[0].float(), vocals[1].float()) * 2.0
    m = v + torch.complex(accompaniment[0].float(), accompaniment[1].float()) * 0.5
    scale = m.abs().max()
    assert torch.allclose(mix[0, 0], m / scale, atol=1e-5)
    assert torch.allclose(voc[0, 0], v / scale, atol=1e-5)


def test_sdr_loss_is_the_waveform_sdr_of_the_masked_mixture():
    """The "sdr" loss equals minus BSS-style SDR computed on the waveforms themselves, and
    prefers the oracle mask to passing or muting the mixture."""
    cfg = Config()
    transform = STFT(cfg.audio)
    data = PatchDataset(made_tracks(2), cfg)
    mix, voc = data.collate([data[i] for i in range(4)])
    oracle = oracle_mask(mix.abs(), voc.abs())
    samples = 127 * cfg.audio.hop_length
    wave = {name: transform.inverse(spec.squeeze(1), samples) for name, spec in
            (("est", oracle * mix), ("ref", voc), ("mix", mix))}
    floor = 1e-4 * wave["mix"].square().sum(-1)
    expected = 10 * torch.log10((wave["ref"].square().sum(-1) + floor)
                                / ((wave["ref"] - wave["est"]).square().sum(-1) + floor))
    loss = mask_loss(oracle, mix, voc, "sdr", transform)
    assert loss.item() == pytest.approx(-expected.mean().item(), abs=1e-3)
    assert loss.item() < -10  # noise vocals over a tone: the oracle mask separates them well
    for mask in (torch.ones_like(oracle), torch.zeros_like(oracle)):
        assert mask_loss(mask, mix, voc, "sdr", transform).item() > loss.item() + 10


def test_sdr_loss_adds_the_weighted_magnitude_l1():
    cfg = Config()
    transform = STFT(cfg.audio)
    data = PatchDataset(made_tracks(2), cfg)
    mix, voc = data.collate([data[i] for i in range(4)])
    mask = torch.full(mix.shape, 0.5)
    sdr, l1 = (mask_loss(mask, mix, voc, kind, transform).item() for kind in ("sdr", "magnitude"))
    assert l1 > 1e-3
    assert mask_loss(mask, mix, voc, "sdr", transform, magnitude_weight=1000).item() == pytest.approx(
        sdr + 1000 * l1, rel=1e-5)
    with pytest.raises(InputError, match="magnitude_weight"):
        apply_overrides(Config(), ["train.loss=magnitude", "train.magnitude_weight=1"]).check()


def test_high_band_loss_adds_the_weighted_sdr_of_the_band_above_8_khz_alone():
    cfg = apply_overrides(Config(), ["audio.sample_rate=32000", "audio.n_fft=2048", "audio.hop_length=512",
                                     "audio.model_bins=1024", "train.high_band_weight=0.5"])
    transform = STFT(cfg.audio)
    first = cfg.audio.bin_at(cfg.train.high_band_hz)
    assert first == 512
    data = PatchDataset(made_tracks(2, rate=32000), cfg)
    mix, voc = data.collate([data[i] for i in range(4)])
    mask = torch.rand(mix.shape, generator=torch.Generator().manual_seed(0))

    def high_sdr(mask):  # the band's SDR from spectra whose lower bins are zeroed, the whole STFT inverted
        above = (torch.arange(mix.shape[-2]) >= first).view(-1, 1)
        return waveform_sdr(transform, mask * mix * above, voc * above, mix * above)

    sdr = mask_loss(mask, mix, voc, "sdr", transform).item()
    high = waveform_sdr(transform, mask[..., first:, :] * mix[..., first:, :], voc[..., first:, :],
                        mix[..., first:, :], first)
    assert torch.allclose(high, high_sdr(mask), atol=1e-3)
    assert mask_loss(mask, mix, voc, "sdr", transform, high_band=(first, 0.5, False)).item() == pytest.approx(
        sdr - 0.5 * high.mean().item(), rel=1e-5)
    changed_below, changed_above = mask.clone(), mask.clone()
    changed_below[..., :first, :] = 1.0
    changed_above[..., first:, :] = 1.0
    assert torch.allclose(high_sdr(changed_below), high_sdr(mask), atol=1e-4)  # the low band plays no part
    assert (high_sdr(changed_above) - high_sdr(mask)).abs().max() > 0.1
    # pooled: one SDR of the batch's summed energies; a patch whose band holds no voice cannot rule it
    def band_sdr(vocals, pooled, patches=slice(None)):
        spectra = (mask[patches] * mix[patches], vocals[patches], mix[patches])
        return waveform_sdr(transform, *(s[..., first:, :] for s in spectra), first, pooled=pooled)

    assert band_sdr(voc, True, slice(0, 1)).item() == pytest.approx(high[0].item(), abs=1e-4)
    assert high.min() - 1e-3 <= band_sdr(voc, True).item() <= high.max() + 1e-3
    silent = voc.clone()
    silent[0, ..., first:, :] = 0  # the first patch's vocals: nothing above 8 kHz
    assert high.mean() - band_sdr(silent, False).mean() > 5  # the mean of patches falls far
    assert abs(band_sdr(voc, True) - band_sdr(silent, True)).item() < 2  # the pooled SDR moves little
    with pytest.raises(InputError, match="high_band_hz"):
        apply_overrides(cfg, ["train.high_band_hz=20000"]).check()
    with pytest.raises(InputError, match="high_band_weight"):
        apply_overrides(cfg, ["train.loss=magnitude"]).check()


def test_emphasis_loss_adds_the_sdr_of_the_pre_emphasized_waveforms():
    cfg = apply_overrides(Config(), ["audio.sample_rate=32000", "audio.n_fft=2048", "audio.hop_length=512",
                                     "audio.model_bins=1024", "train.emphasis_weight=1"])
    transform = STFT(cfg.audio)
    data = PatchDataset(made_tracks(2, rate=32000), cfg)
    mix, voc = data.collate([data[i] for i in range(4)])
    mask = torch.rand(mix.shape, generator=torch.Generator().manual_seed(0))
    gain = pre_emphasis(0.95, 2048, 1024).squeeze(1)
    assert gain[0].item() == pytest.approx(0.05, abs=1e-4)  # 1 - a at 0 Hz
    assert gain[512].item() == pytest.approx((1 + 0.95 ** 2) ** 0.5, rel=1e-4)  # 8 kHz: a quarter turn

    def emphasized_sdr(mask):  # the waveforms themselves filtered by y[n] = x[n] - 0.95 x[n - 1]
        length = (mix.shape[-1] - 1) * transform.hop
        pad = (0, 0, 0, 1)  # the Nyquist bin the model does not see
        est, ref, mixed = (transform.inverse(torch.nn.functional.pad(s, pad), length)
                           for s in (mask * mix, voc, mix))
        est, ref, mixed = (w[..., 1:] - 0.95 * w[..., :-1] for w in (est, ref, mixed))
        floor = 1e-4 * mixed.square().sum((-2, -1))
        return 10 * torch.log10((ref.square().sum((-2, -1)) + floor) / ((ref - est).square().sum((-2, -1)) + floor))

    sdr = mask_loss(mask, mix, voc, "sdr", transform).item()
    tilted = mask_loss(mask, mix, voc, "sdr", transform, emphasis=(0.95, 1.0)).item() - sdr
    assert tilted == pytest.approx(-emphasized_sdr(mask).mean().item(), abs=0.1)  # the bins' gain is the filter's
    assert mask_loss(mask, mix, voc, "sdr", transform, emphasis=(0.95, 0.5)).item() == pytest.approx(
        sdr + 0.5 * tilted, rel=1e-4)
    # an error above 8 kHz weighs more in the tilted SDR, one below 1 kHz less
    oracle = oracle_mask(mix.abs(), voc.abs())
    bins = torch.arange(mix.shape[-2]).view(-1, 1)
    for band, sign in ((bins >= 512, 1), (bins < 64, -1)):
        wrong = torch.where(band, 1 - oracle, oracle)
        plain = waveform_sdr(transform, wrong * mix, voc, mix).mean().item()
        assert sign * (plain - emphasized_sdr(wrong).mean().item()) > 1
    with pytest.raises(InputError, match=r"train\.emphasis="):
        apply_overrides(cfg, ["train.emphasis=1"]).check()
    with pytest.raises(InputError, match="emphasis_weight"):
        apply_overrides(cfg, ["train.loss=magnitude"]).check()


def test_gain_free_loss_forgives_a_level_per_bin_but_not_a_missing_band():
    cfg = apply_overrides(Config(), ["train.gain_free_weight=1"])
    transform = STFT(cfg.audio)
    data = PatchDataset(made_tracks(2), cfg)
    mix, voc = data.collate([data[i] for i in range(4)])
    oracle = oracle_mask(mix.abs(), voc.abs())
    levels = torch.rand(1, 1, mix.shape[-2], 1, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.1
    gains = best_bin_gains(levels * oracle * mix, voc)  # (B, C, bins, 1): undo each bin's level
    assert gains.shape == (*mix.shape[:-1], 1)
    assert torch.allclose((gains * levels * oracle * mix)[voc.abs() > 1e-3], (best_bin_gains(oracle * mix, voc)
                          * oracle * mix)[voc.abs() > 1e-3], atol=1e-4)

    def free(mask):
        return waveform_sdr(transform, best_bin_gains(mask * mix, voc) * mask * mix, voc, mix).mean().item()

    plain = waveform_sdr(transform, levels * oracle * mix, voc, mix).mean().item()
    assert free(levels * oracle) == pytest.approx(free(oracle), abs=0.01)  # the level of each bin is forgiven
    assert free(levels * oracle) - plain > 3  # where the plain SDR counts it as error
    upper = (torch.arange(mix.shape[-2]) >= mix.shape[-2] // 2).view(-1, 1)
    assert free(oracle) - free(oracle * ~upper) > 3  # a band left out is not
    sdr = mask_loss(oracle, mix, voc, "sdr", transform).item()
    assert mask_loss(oracle, mix, voc, "sdr", transform, gain_free_weight=0.5).item() == pytest.approx(
        sdr - 0.5 * free(oracle), rel=1e-4)


def test_pitch_shifted_vocals_are_higher_or_lower_and_drawn_at_their_share():
    rate, seconds = 16000, 3.0
    vocals = tone_440(seconds, rate)
    accompaniment = (0.1 * np.random.default_rng(0).standard_normal(vocals.shape)).astype(np.float32)
    tracks = [Track(f"t{i}", lambda: (vocals + accompaniment, vocals, rate), lambda: seconds) for i in range(2)]
    cfg = apply_overrides(Config(), ["train.pitch_shifts=-12,7", "train.pitch_prob=0.5", "train.remix_prob=0"])
    data = PatchDataset(tracks, cfg, remix=True)
    bin_hz = rate / cfg.audio.n_fft
    for copy, shift in zip(data.altered[0], (-12, 7)):
        assert copy.shape[:3] == (1, 1, 2)  # vocals only, one channel
        assert copy.shape[-1] == pytest.approx(data.specs[0].shape[-1] / 2 ** (shift / 12), rel=0.05)
        power = (copy[0, 0].astype(np.float32) ** 2).sum(0).sum(-1)  # (bins,)
        assert float(np.argmax(power) * bin_hz) == pytest.approx(440 * 2 ** (shift / 12), abs=bin_hz)
    original = (data.specs[0][0, 0].astype(np.float32) ** 2).sum(0).sum(-1)
    peaks = [int(data[i % len(data)].sources[0, 0].float().square().sum((0, 2)).argmax()) for i in range(200)]
    share = np.mean([p != np.argmax(original) for p in peaks])
    assert 0.35 < share < 0.65
    assert PatchDataset(tracks, cfg).altered == [[], []]  # no copies without remixing (validation)
    assert PatchDataset(tracks, apply_overrides(cfg, ["train.pitch_shifts="]), remix=True).altered == [[], []]


@pytest.mark.parametrize("factor", [0.8, 1.25])
def test_time_stretch_changes_the_length_and_keeps_the_pitch(factor):
    """A tone played 0.8 or 1.25 times as fast lasts 1 / factor as long, at the same frequency,
    and stays one clean partial (no smearing into neighbouring bins)."""
    cfg = Config().audio
    rate = cfg.sample_rate
    tone = tone_440(3.0, rate)  # (1, samples)
    out = time_stretch(tone, rate, factor, cfg)
    assert out.shape == (1, round(tone.shape[-1] / factor))
    middle = out[0, rate // 4: -rate // 4]  # away from the edges' half windows
    power = np.abs(np.fft.rfft(middle * np.hanning(len(middle)))) ** 2
    hz = np.fft.rfftfreq(len(middle), 1 / rate)
    assert float(hz[power.argmax()]) == pytest.approx(440, abs=2)
    assert power[np.abs(hz - 440) < 20].sum() > 0.99 * power.sum()
    assert float(np.sqrt(np.mean(middle ** 2))) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


def test_time_stretched_copies_join_the_pitch_shifted_ones():
    rate, seconds = 16000, 3.0
    vocals = tone_440(seconds, rate)
    tracks = [Track(f"t{i}", lambda: (vocals, vocals, rate), lambda: seconds) for i in range(2)]
    cfg = apply_overrides(Config(), ["train.pitch_shifts=7", "train.time_stretches=0.8"])
    data = PatchDataset(tracks, cfg, remix=True)
    shifted, stretched = data.altered[0]
    frames = data.specs[0].shape[-1]
    assert shifted.shape[-1] == pytest.approx(frames / 2 ** (7 / 12), rel=0.05)
    assert stretched.shape[-1] == pytest.approx(frames / 0.8, rel=0.05)
    peak = [int((spec[0, 0].astype(np.float32) ** 2).sum(0).sum(-1).argmax()) for spec in (data.specs[0], stretched)]
    assert peak[0] == peak[1]
    with pytest.raises(InputError, match="time_stretches"):
        apply_overrides(Config(), ["train.time_stretches=3"]).check()


def test_equalizer_gains_are_smooth_bounded_per_source_and_applied_per_bin():
    cfg = apply_overrides(Config(), ["train.eq_db=6", "train.gain_range=1,1"])
    data = PatchDataset(made_tracks(2), cfg, remix=True)
    rng = np.random.default_rng(0)
    curves = torch.stack([Equalizer(6)(Item(data[0].sources, torch.ones(2, 1), 0), data, rng).gains
                          for _ in range(50)])  # (50, 2 sources, 513)
    db = 20 * curves.log10()
    assert db.abs().max() <= 6 + 1e-4 and db.abs().max() > 4  # within +-6 dB, and using the range
    assert (db[:, 0] - db[:, 1]).abs().mean() > 1  # the sources get their own curves
    assert (db[..., 17:] - db[..., 16:-1]).abs().max() < 1.5  # smooth in octaves: from bin 16 (250 Hz)
    # up, under 1.5 dB from bin to bin
    item = data[0]
    (vocals, accompaniment), gains = item.sources[:, 0], item.gains
    assert gains.shape == (2, 513)
    mix, voc = data.collate([item])
    v = torch.complex(vocals[0].float(), vocals[1].float()) * gains[0, :, None]  # (bins, frames)
    m = v + torch.complex(accompaniment[0].float(), accompaniment[1].float()) * gains[1, :, None]
    assert torch.allclose(voc[0, 0], v / m.abs().max(), atol=1e-5)
    assert torch.allclose(mix[0, 0], m / m.abs().max(), atol=1e-5)
    assert PatchDataset(made_tracks(2), cfg)[0].gains.shape == (2, 1)  # validation items: no equalizer


def test_remixing_puts_vocals_over_another_tracks_accompaniment():
    cfg = apply_overrides(Config(), ["train.remix_prob=1", "train.gain_range=1,1"])
    data = PatchDataset(made_tracks(3), cfg, remix=True)
    own = {data.patch(data.specs[t], s)[1].float().sum().item() for t, s in data.index}
    seen = set()
    for i in range(len(data)):
        item = data[i]
        assert torch.equal(item.gains, torch.ones(2, 1))
        seen.add(item.sources[1].float().sum().item())
    assert seen <= own and len(seen) > 1


def test_random_offsets_start_training_patches_anywhere_within_their_hop():
    cfg = apply_overrides(Config(), ["train.remix_prob=0", "train.pitch_shifts=", "train.gain_range=1,1"])
    jittered = apply_overrides(cfg, ["train.random_offsets=true"])

    def offsets(data):  # where item 0 (grid start 0 of track 0) starts, over 100 draws
        windows = [data.patch(data.specs[0], j)[0] for j in range(2 * data.hop)]
        items = [data[0].sources[0] for _ in range(100)]
        return {next(j for j, w in enumerate(windows) if torch.equal(w, item)) for item in items}

    assert offsets(PatchDataset(made_tracks(2), cfg, remix=True)) == {0}
    drawn = offsets(PatchDataset(made_tracks(2), jittered, remix=True))
    assert max(drawn) < 32 and len(drawn) > 20  # 75 % overlap: a hop of 32 frames
    assert offsets(PatchDataset(made_tracks(2), jittered)) == {0}  # validation items stay on the grid


def test_each_channel_of_a_stereo_track_trains_as_a_track_of_its_own():
    """train.channels=each: a stereo track's left and right are two training tracks (twice the
    patches), each the STFT of its own channel; "mean" and validation keep the channels' mean."""
    rate = 16000
    rng = np.random.default_rng(0)
    vocals = (0.1 * rng.standard_normal((2, 3 * rate))).astype(np.float32)  # channels that differ
    mixture = vocals + np.float32(0.3) * np.sin(2 * np.pi * 220 * np.arange(3 * rate) / rate, dtype=np.float32)
    tracks = [Track("stereo", lambda: (mixture, vocals, rate), lambda: 3.0)]
    each = apply_overrides(Config(), ["train.pitch_shifts=", "train.channels=each"])
    mean = apply_overrides(each, ["train.channels=mean"])
    per_channel, averaged = PatchDataset(tracks, each, remix=True), PatchDataset(tracks, mean, remix=True)
    assert (len(per_channel.specs), len(per_channel)) == (2, 2 * len(averaged)) and len(averaged.specs) == 1
    transform = STFT(each.audio, rate)

    def vocals_close_to(spec, signal):  # spec: (sources, 1 channel, 2 re/im, bins, frames) float16, vocals first
        expected = transform(torch.from_numpy(signal))  # (bins, frames) complex
        got = torch.complex(torch.from_numpy(spec[0, 0, 0]).float(), torch.from_numpy(spec[0, 0, 1]).float())
        return torch.allclose(got, expected, atol=2e-3 * expected.abs().max().item())

    assert all(vocals_close_to(spec, vocals[channel]) for channel, spec in enumerate(per_channel.specs))
    assert not vocals_close_to(per_channel.specs[0], vocals[1])
    assert vocals_close_to(averaged.specs[0], vocals.mean(0))
    assert len(PatchDataset(tracks, each).specs) == 1  # validation: the channels' mean


def made_mir1k(root, clips=2, seconds=3.0, rate=16000):
    """A MIR-1K folder of a training singer's clips: left a quiet noise (accompaniment), right a
    1 kHz tone (vocals)."""
    wavfile = root / "Wavfile"
    wavfile.mkdir(parents=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(clips):
        noise = 0.01 * np.random.default_rng(i).standard_normal(t.size)
        sf.write(wavfile / f"abjones_1_{i:02d}.wav", np.stack([noise, 0.3 * np.sin(2 * np.pi * 1000 * t)], 1), rate)
    return root


def test_extra_vocals_sing_over_the_stems_with_nothing_above_their_band_to_learn(tmp_path):
    """MIR-1K's 16 kHz voices in a 32 kHz training set: with train.extra_vocals_prob=1 every item's
    vocals are theirs (a 1 kHz tone, where the set's own vocals are broadband noise) and every
    source is cut at 8 kHz, so the loss does not depend on the mask above 8 kHz; at 0, nothing changes."""
    audio = ["audio.sample_rate=32000", "audio.n_fft=2048", "audio.hop_length=512", "audio.model_bins=1024",
             f"train.extra_vocals={made_mir1k(tmp_path / 'MIR-1K')}", "train.pitch_shifts="]
    cfg = apply_overrides(Config(), [*audio, "train.extra_vocals_prob=1"])
    data = PatchDataset(made_tracks(2, rate=32000), cfg, remix=True)
    assert len(data.extra) == 2 and data.extra_bands == [513, 513]
    items = [data[i] for i in range(6)]
    for item in items:
        power = item.sources[0, 0].float().square().sum((0, 2))  # (bins,) of the vocals
        assert power.argmax() == cfg.audio.bin_at(1000)  # the tone's bin: MIR-1K's vocals
        assert item.sources[..., 513:, :].abs().max() == 0  # every source cut above 8 kHz
    mix, voc = data.collate(items)
    transform = STFT(cfg.audio)
    mask = torch.full(mix.shape, 0.5)
    changed = mask.clone()
    changed[..., 513:, :] = 1.0
    assert mask_loss(changed, mix, voc, "sdr", transform).item() == pytest.approx(
        mask_loss(mask, mix, voc, "sdr", transform).item(), abs=1e-4)
    plain = PatchDataset(made_tracks(2, rate=32000), apply_overrides(Config(), [*audio, "train.extra_vocals_prob=0"]),
                         remix=True)
    item = plain[0]
    assert item.sources[0, ..., 513:, :].abs().max() > 0  # the set's own broadband vocals, uncut
    assert item.sources[0, 0].float().square().sum((0, 2)).argmax() != cfg.audio.bin_at(1000)


def test_augmentations_are_the_configured_steps_in_their_stated_order():
    train = apply_overrides(Config(), ["train.eq_db=3"]).train
    assert [type(step) for step in augmentations(train)] == [AlteredVocals, RemixSources, RandomGains, Equalizer]
    assert [type(step) for step in augmentations(apply_overrides(Config(), ["train.pitch_shifts="]).train)] == \
        [RemixSources, RandomGains]  # no altered copies, no equalizer: those steps are left out
    assert augmentations(apply_overrides(Config(), ["train.remix=false"]).train) == []
    extra = apply_overrides(Config(), ["train.extra_vocals=somewhere"]).train
    assert [type(step) for step in augmentations(extra)] == [AlteredVocals, RemixSources, ExtraVocals, RandomGains]
    stereo = apply_overrides(Config(), ["train.channels=stereo", "train.eq_db=3"]).train
    assert [type(step) for step in augmentations(stereo)] == [AlteredVocals, RemixSources, SwapChannels, RandomGains,
                                                              Equalizer]


def test_split_validation_holds_out_spread_tracks_at_most_a_fifth():
    tracks = made_tracks(20, seconds=0.1)
    train, valid = split_validation(tracks, 10)
    assert len(valid) == 4 and len(train) == 16  # capped at a fifth
    assert [t.name for t in valid] == ["t0", "t6", "t13", "t19"]  # spread, deterministic
    assert not {t.name for t in train} & {t.name for t in valid}
    assert split_validation(tracks[:1], 10) == (tracks[:1], [])


def test_all_tracks_trains_on_the_validation_tracks_too(demo_root):
    cfg = Config().train
    train, valid = train_valid_tracks("demo", demo_root, False, cfg)
    every, same_valid = train_valid_tracks("demo", demo_root, False, dataclasses.replace(cfg, all_tracks=True))
    assert valid and not {t.name for t in train} & {t.name for t in valid}
    assert [t.name for t in same_valid] == [t.name for t in valid]
    assert sorted(t.name for t in every) == sorted(t.name for t in train + valid)


def test_resample_keeps_duration_and_a_tone():
    rate_in, rate_out = 44100, 16000
    t = np.arange(rate_in) / rate_in
    x = np.sin(2 * np.pi * 440 * t)[None].astype(np.float32)
    y = resample(x, rate_in, rate_out)
    assert y.shape == (1, rate_out)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) - 440) <= 1


def stem_folders(root, count, seconds=2.0, rate=44100):
    """`count` made-up songs in the MUSDB18-HQ layout under root/train."""
    for i, track in enumerate(made_tracks(count, seconds, rate)):
        mixture, vocals, _ = track.load()
        folder = root / "train" / f"song{i}"
        folder.mkdir(parents=True)
        sf.write(folder / "mixture.wav", mixture.T, rate, subtype="FLOAT")
        sf.write(folder / "vocals.wav", vocals.T, rate, subtype="FLOAT")
    return load_tracks("stems", root, "train")


def test_spectra_cache_is_memory_mapped_equal_and_reused_until_a_file_or_setting_changes(tmp_path):
    cfg = Config()
    tracks = stem_folders(tmp_path / "songs", 2)
    cache = tmp_path / "cache"
    in_memory = PatchDataset(tracks, cfg)
    cached = PatchDataset(tracks, cfg, cache=cache)
    assert all(isinstance(spec, np.memmap) for spec in cached.specs)
    assert len(list(cache.glob("*.npy"))) == 2 and not list(cache.glob(".*"))  # no temporary file left
    assert cached.index == in_memory.index
    for i in (0, len(cached) - 1):
        assert torch.equal(cached[i].sources, in_memory[i].sources)
    files = sorted(cache.iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    reread = [Track(t.name, lambda: pytest.fail("a cached track was decoded again"), t.seconds, t.files)
              for t in tracks]
    PatchDataset(reread, cfg, cache=cache)
    assert sorted(cache.iterdir()) == files and [f.stat().st_mtime_ns for f in files] == stamps
    key = spectra_key(tracks[0], cfg.audio)
    assert spectra_key(tracks[0], apply_overrides(cfg, ["audio.hop_length=512"]).audio) != key
    os.utime(tracks[0].files[1], ns=(1, 1))  # vocals.wav changed
    assert spectra_key(tracks[0], cfg.audio) != key and spectra_key(tracks[1], cfg.audio) in {f.stem for f in files}


def test_an_unwritable_spectra_cache_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write the spectra cache"):
        PatchDataset(stem_folders(tmp_path / "songs", 1), Config(), cache=blocker / "cache")


def test_side_input_reads_where_a_sound_is_panned():
    """model.side_input: channel 1 is |left - right| / 2 of the pair: 0 for a sound in the middle,
    half its magnitude for one in a single channel, 0 for a mono input; channel 0 stays the
    channels' mean magnitude."""
    cfg = apply_overrides(Config(), ["model.side_input=true", "train.channels=stereo"])
    transform = STFT(cfg.audio)
    rng = np.random.default_rng(0)
    middle = torch.from_numpy(rng.standard_normal(16000).astype(np.float32))
    left_only = torch.from_numpy(rng.standard_normal(16000).astype(np.float32))
    pair = transform(torch.stack([middle + left_only, middle])[None])  # (1, 2, bins, frames)
    features = network_input(pair, transform, cfg.model)
    assert features.shape == (1, 2, *pair.shape[-2:])
    assert torch.allclose(features[:, 0], pair.abs().mean(1))
    assert torch.allclose(features[0, 1], transform(left_only).abs() / 2, atol=1e-4)
    centred = network_input(transform(torch.stack([middle, middle])[None]), transform, cfg.model)
    assert centred[:, 1].abs().max() < 1e-6
    mono = network_input(transform(middle[None, None]), transform, cfg.model)
    assert torch.equal(mono[:, 1], torch.zeros_like(mono[:, 1]))
    with pytest.raises(InputError, match="side_input"):
        apply_overrides(Config(), ["model.side_input=true"])  # trained on one channel: no side to read
    with pytest.raises(InputError, match="side_input"):
        apply_overrides(cfg, ["separation.stereo=each"])


def test_stereo_items_keep_both_channels_swap_them_and_score_their_sum():
    """train.channels=stereo: items hold both channels (training and validation), a mono track in
    both; the batch is normalized by the channels' mean magnitude; with remix each source's
    channels are swapped in about half the items; the SDR loss sums both channels' energies."""
    rate, seconds = 16000, 3.0
    rng = np.random.default_rng(0)
    vocals = (0.1 * rng.standard_normal((2, int(seconds * rate)))).astype(np.float32)
    vocals[1] *= 0.25  # louder on the left
    accompaniment = (0.05 * rng.standard_normal((2, vocals.shape[1]))).astype(np.float32)
    accompaniment[0] *= 0.25  # louder on the right
    stereo = Track("stereo", lambda: (vocals + accompaniment, vocals, rate), lambda: seconds)
    mono = Track("mono", lambda: (vocals[:1] + accompaniment[:1], vocals[:1], rate), lambda: seconds)
    cfg = apply_overrides(Config(), ["train.channels=stereo", "train.pitch_shifts=", "train.remix_prob=0",
                                     "train.gain_range=1,1"])
    data = PatchDataset([stereo, mono], cfg, remix=True)
    assert [spec.shape[:3] for spec in data.specs] == [(2, 2, 2), (2, 2, 2)]  # sources, channels, re/im
    assert np.array_equal(data.specs[1][:, 0], data.specs[1][:, 1])  # mono: the same in both channels
    assert PatchDataset([stereo], cfg).specs[0].shape[:3] == (2, 2, 2)  # validation: both channels too
    louder = [int(item.sources[0, 0].float().square().sum() > item.sources[0, 1].float().square().sum())
              for item in (data[0] for _ in range(200))]
    assert 0.35 < np.mean(louder) < 0.65  # the vocals' louder channel is left about half the time
    mix, voc = data.collate([data[i] for i in range(4)])
    assert mix.shape == voc.shape == (4, 2, 513, 128)
    assert torch.allclose(mix.abs().mean(1).amax((-2, -1)), torch.ones(4))  # the mean magnitude's peak is 1
    transform = STFT(cfg.audio)
    mask = torch.rand(4, 1, 513, 128)

    def energy(spec):  # (4, 2, bins, T) -> (4,): both channels' waveforms
        return transform.inverse(spec, 127 * transform.hop).square().sum((-2, -1))

    floor = 1e-4 * energy(mix)
    expected = 10 * torch.log10((energy(voc) + floor) / (energy(voc - mask * mix) + floor))
    assert torch.allclose(waveform_sdr(transform, mask * mix, voc, mix), expected, atol=1e-3)
    with pytest.raises(InputError, match="mono or stereo"):
        PatchDataset([Track("5.1", lambda: (np.zeros((6, rate), np.float32),) * 2 + (rate,), lambda: 1.0)], cfg)
