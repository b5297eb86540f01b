"""The U-Net and its checkpoints."""

import re

import pytest
import torch

from config import Config, InputError, apply_overrides
from unet_model import (
    SubPixelUpsampling,
    UNet,
    average_checkpoints,
    count_parameters,
    fuse_batchnorm,
    load_model,
    load_starting_weights,
    read_checkpoint,
    save_checkpoint,
    with_subpixel_upsampling,
)


def test_unet_maps_513_by_128_patches_to_a_mask_in_0_1():
    net = UNet(Config().model).eval()
    x = torch.rand(3, 1, 513, 128) * 10
    with torch.no_grad():
        mask = net(x)
    assert mask.shape == x.shape
    assert mask.min() >= 0 and mask.max() <= 1
    assert torch.equal(mask[..., 512, :], mask[..., 511, :])  # Nyquist bin copies bin 511


def test_unet_has_the_papers_parameter_count():
    assert 9.7e6 < count_parameters(UNet(Config().model)) < 9.9e6


def test_width_is_a_setting():
    cfg = apply_overrides(Config(), ["model.channels=8,16,32,64,128,256"])
    net = UNet(cfg.model)
    assert count_parameters(net) < 3e6
    assert net(torch.rand(2, 1, 513, 128)).shape == (2, 1, 513, 128)


def test_input_power_compresses_what_the_network_sees():
    """model.input_power p: the network's first layer sees magnitude ** p; p = 1 is the identity."""
    x = torch.rand(2, 1, 513, 128)
    nets = {p: UNet(apply_overrides(Config(), [f"model.input_power={p}"]).model).eval() for p in (1.0, 0.5)}
    nets[0.5].load_state_dict(nets[1.0].state_dict())
    with torch.no_grad():
        assert torch.allclose(nets[0.5](x), nets[1.0](x.sqrt()), atol=1e-6)
        assert not torch.allclose(nets[0.5](x), nets[1.0](x), atol=1e-3)


def test_top_tilt_lifts_the_upper_half_of_the_band_rising_to_its_top():
    """model.top_tilt_db: the first layer sees the band's upper half lifted by a gain rising
    linearly in dB from 0 at the middle to top_tilt_db at the top bin; the lower half as it is."""
    plain = UNet(Config().model).eval()
    tilted = UNet(apply_overrides(Config(), ["model.top_tilt_db=12"]).model).eval()
    tilted.load_state_dict(plain.state_dict())
    seen = []
    tilted.encoder[0][0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.rand(2, 1, 513, 128)
    with torch.no_grad():
        tilted(x)
        gain_db = 20 * torch.log10(seen[0][0, 0] / x[0, 0, :512])  # (512, T)
        assert torch.allclose(gain_db[:256], torch.zeros(256, 128), atol=1e-4)
        assert torch.allclose(gain_db[-1], torch.full((128,), 12.0), atol=1e-4)
        steps = gain_db[257:, 0] - gain_db[256:-1, 0]
        assert torch.allclose(steps, torch.full_like(steps, 12 / 255), atol=1e-4)  # linear in dB
        quiet_top = torch.cat([x[..., :256, :], torch.zeros_like(x[..., 256:, :])], dim=-2)
        assert torch.allclose(tilted(quiet_top), plain(quiet_top), atol=1e-6)  # nothing up there: no change
        assert not torch.allclose(tilted(x), plain(x), atol=1e-3)


def test_bin_position_is_a_second_input_channel_from_0_at_dc_to_1_at_the_top():
    """model.bin_position: the first layer also sees each bin's height in the band; with that
    channel's weights at zero the network is the one without it."""
    plain = UNet(Config().model).eval()
    placed = UNet(apply_overrides(Config(), ["model.bin_position=true"]).model).eval()
    weights = plain.state_dict()
    weights["encoder.0.0.weight"] = torch.cat([weights["encoder.0.0.weight"],
                                               torch.zeros_like(weights["encoder.0.0.weight"])], dim=1)
    placed.load_state_dict(weights)
    seen = []
    placed.encoder[0][0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.rand(2, 1, 513, 128)
    with torch.no_grad():
        assert torch.allclose(placed(x), plain(x), atol=1e-6)
        height = seen[0][:, 1]  # (B, 512, T)
        assert torch.equal(seen[0][:, :1], x[..., :512, :])
        assert torch.equal(height[:, 0], torch.zeros(2, 128)) and torch.equal(height[:, -1], torch.ones(2, 128))
        assert (height[:, 1:] > height[:, :-1]).all()  # rising with frequency, the same in every frame
        placed.encoder[0][0].weight[:, 1].normal_()
        assert not torch.allclose(placed(x), plain(x), atol=1e-3)


@pytest.mark.parametrize("added", [["model.inst_frequency=true"], ["model.bin_position=true"],
                                   ["model.inst_frequency=true", "model.bin_position=true"]])
def test_an_input_feature_added_to_a_trained_model_starts_at_zero_weights(added):
    """Fine-tuning with a new input channel (`load_starting_weights`): the new channel's first-layer
    weights are 0, so the mask equals the trained model's whatever the channel holds; a model
    that reads a feature does not load into one that does not."""
    plain_cfg, rich_cfg = Config(), apply_overrides(Config(), added)
    plain = UNet(plain_cfg.model)
    torch.nn.init.normal_(plain.decoder[-1][0].weight, std=0.05)  # a mask that varies with the input
    rich = UNet(rich_cfg.model)
    load_starting_weights(rich, rich_cfg.model, plain_cfg.model, plain.state_dict())
    mag = torch.rand(2, 1, 513, 64)
    extra = torch.randn(2, rich_cfg.model.inst_frequency, 513, 64)  # the frequency channel, if any
    with torch.no_grad():
        expected, got = plain.eval()(mag), rich.eval()(torch.cat([mag, extra], dim=1))
    assert expected.std() > 0.01 and torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(InputError, match=re.escape(added[0].split("=")[0])):
        load_starting_weights(UNet(plain_cfg.model), plain_cfg.model, rich_cfg.model, rich.state_dict())


def test_checkpoint_round_trip_restores_config_and_weights(tmp_path):
    cfg = apply_overrides(Config(), ["audio.hop_length=512", "train.lr=3e-4"])
    net = UNet(cfg.model).eval()
    save_checkpoint(tmp_path / "m.pt", net, cfg, epoch=3)
    loaded, loaded_cfg = load_model(tmp_path / "m.pt")
    assert loaded_cfg == cfg
    assert read_checkpoint(tmp_path / "m.pt")["epoch"] == 3
    x = torch.rand(1, 1, 513, 128)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)  # BatchNorm folded into the convolutions
    assert not list(tmp_path.glob(".*partial"))  # atomic write leaves no temporary file


def test_averaged_checkpoints_hold_the_mean_of_their_weights_and_statistics(tmp_path):
    """A weight soup: every float tensor (BatchNorm statistics too) the mean of the sources',
    the first's config; sources of another network are refused in one line."""
    cfg = apply_overrides(Config(), ["model.channels=8,16,32,64,128,256"])
    nets = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = UNet(cfg.model)
        net.train()(torch.rand(4, 1, 513, 128))  # moves the BatchNorm statistics off their start
        save_checkpoint(tmp_path / f"s{seed}.pt", net, cfg)
        nets.append(net.state_dict())
    average_checkpoints([tmp_path / "s1.pt", tmp_path / "s2.pt"], tmp_path / "soup.pt", note="two seeds")
    soup = read_checkpoint(tmp_path / "soup.pt")
    assert Config.from_dict(soup["config"]) == cfg and soup["provenance"] == {"note": "two seeds"}
    for name, value in soup["model"].items():
        if value.is_floating_point():
            assert torch.allclose(value, (nets[0][name] + nets[1][name]) / 2, atol=1e-7), name
    assert not torch.equal(nets[0]["encoder.0.1.running_mean"], nets[1]["encoder.0.1.running_mean"])
    load_model(tmp_path / "soup.pt")  # a model like any other
    wider = Config()
    save_checkpoint(tmp_path / "wide.pt", UNet(wider.model), wider)
    with pytest.raises(InputError, match=r"wide\.pt: another network"):
        average_checkpoints([tmp_path / "s1.pt", tmp_path / "wide.pt"], tmp_path / "bad.pt")
    assert not (tmp_path / "bad.pt").exists()


def test_bad_checkpoints_raise_one_clear_error(tmp_path):
    cfg = Config()
    good = tmp_path / "good.pt"
    save_checkpoint(good, UNet(cfg.model), cfg)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint")
    other = tmp_path / "other.pt"
    payload = torch.load(good, weights_only=True)
    payload["config"]["model"]["channels"] = [8, 16, 32, 64, 128, 256]
    torch.save(payload, other)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    cases = {tmp_path / "missing.pt": "not found", truncated: "not a valid checkpoint",
             text: "not a valid checkpoint", other: "do not match", foreign: "not a checkpoint of this project"}
    for path, message in cases.items():
        with pytest.raises(InputError, match=message):
            load_model(path)


def test_folding_batchnorm_keeps_the_output():
    torch.manual_seed(0)
    net = UNet(Config().model)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.bias.data.uniform_(-0.3, 0.3)
    net.eval()
    x = torch.rand(2, 1, 513, 128)
    with torch.no_grad():
        before = net(x)
        after = fuse_batchnorm(net)(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_subpixel_upsampling_computes_the_transposed_convolution(kernel):
    torch.manual_seed(kernel)
    transposed = torch.nn.ConvTranspose2d(6, 3, kernel, stride=2, padding=kernel // 2, output_padding=1)
    transposed.bias.data.uniform_(-1, 1)
    x = torch.randn(2, 6, 8, 5)
    with torch.no_grad():
        expected = transposed(x)  # (2, 3, 16, 10)
        got = SubPixelUpsampling(transposed)(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5 < expected.abs().max()
    with pytest.raises(ValueError, match="not a stride-2"):
        SubPixelUpsampling(torch.nn.ConvTranspose2d(6, 3, kernel, stride=2, padding=kernel // 2))


def test_a_unet_with_subpixel_decoder_layers_keeps_its_output():
    torch.manual_seed(0)
    net = UNet(apply_overrides(Config(), ["model.channels=4,8,8,16,16,32"]).model).eval()
    x = torch.rand(2, 1, 513, 128)
    with torch.no_grad():
        before = net(x)
        after = with_subpixel_upsampling(net, [0, 3, 5])(x)
    assert sum(isinstance(m, SubPixelUpsampling) for m in net.modules()) == 3
    assert torch.allclose(before, after, atol=1e-5)


@pytest.mark.parametrize("override, words", [
    ("train.loss=l2", "unknown train.loss 'l2'"),
    ("train.lr_schedule=step", "unknown train.lr_schedule"),
    ("audio.normalization=global", "unknown audio.normalization"),
    ("separation.patch_overlap=1", "within [0, 1)"),
    ("train.patch_overlap=-0.5", "within [0, 1)"),
    ("audio.patch_frames=100", "divisible by 64"),
    ("audio.hop_length=0", "must be > 0"),
    ("audio.hop_length=2048", "longer than audio.n_fft"),
    ("train.lr=-1", "must be > 0"),
    ("train.gain_range=1.5,0.5", "low <= high"),
    ("train.eq_db=-3", "train.eq_db=-3.0: must be within [0, 40] dB"),
    ("model.dropout=1.5", "within [0, 1)"),
    ("model.input_power=0", "must be > 0"),
])
def test_impossible_settings_fail_where_the_config_is_built(override, words):
    with pytest.raises(InputError, match=re.escape(words)):
        apply_overrides(Config(), [override])


def test_configs_of_older_checkpoints_load_under_the_current_names():
    old = Config().to_dict()
    old["audio"]["patch_overlap"] = old["train"].pop("patch_overlap")
    old["separation"]["overlap"] = 0.25
    del old["separation"]["patch_overlap"]
    old["train"]["num_workers"] = old["train"].pop("data_workers")
    del old["train"]["pitch_shifts"]  # a checkpoint from before pitch shifts was trained without them
    cfg = Config.from_dict(old)
    assert cfg.separation.patch_overlap == 0.25 and cfg.train.patch_overlap == Config().train.patch_overlap
    assert cfg.train.pitch_shifts == () != Config().train.pitch_shifts
    assert not hasattr(Config(), "audio_key")
