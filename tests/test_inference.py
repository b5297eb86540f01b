"""inference.py and separation.py: outputs people get, and the bad-input matrix."""

import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import REPO, demo_gain_db, high_pass, run_main, shared_path, song, write_wav

import inference
import separation
from audio import STFT
from config import HIGH_BAND_RULES, Config, InputError, apply_overrides
from separation import chunk_bounds, separate_array
from tracks import load_tracks
from unet_model import (
    UNet,
    count_parameters,
    load_model,
    load_starting_weights,
    prepare_for_inference,
    read_checkpoint,
    save_checkpoint,
)


def separate(checkpoint, out_dir, *inputs, extra=()):
    return run_main(inference.main, [*map(str, inputs), "--checkpoint", str(checkpoint), "--out-dir", str(out_dir),
                                     "--device", "cpu", *extra])


def outputs(out_dir, stem, fmt="wav"):
    vocals, rate = sf.read(out_dir / stem / f"vocals.{fmt}", always_2d=True)
    accompaniment, _ = sf.read(out_dir / stem / f"accompaniment.{fmt}", always_2d=True)
    return vocals.T, accompaniment.T, rate


def assert_no_partial_files(folder):
    assert not [p for p in folder.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


@pytest.mark.parametrize("channels", [1, 2, 6])
@pytest.mark.parametrize("rate", [8000, 22050, 48000, 96000])
def test_outputs_match_input_length_rate_channels_and_add_up(checkpoint, tmp_path, channels, rate):
    mix = song(1.3, rate, channels)
    path = write_wav(tmp_path / "in.wav", mix, rate)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 0, err
    vocals, accompaniment, out_rate = outputs(tmp_path / "out", "in")
    assert out_rate == rate
    assert vocals.shape == accompaniment.shape == mix.shape
    assert np.abs(vocals + accompaniment - mix).max() < 1e-5
    assert np.isfinite(vocals).all() and np.abs(vocals).max() > 0


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_integer_and_float_wavs_are_read(checkpoint, tmp_path, subtype):
    mix = song(1.0, 16000, 2)
    path = write_wav(tmp_path / "in.wav", mix, 16000, subtype)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 0, err
    vocals, accompaniment, _ = outputs(tmp_path / "out", "in")
    assert np.abs(vocals + accompaniment - sf.read(path, always_2d=True)[0].T).max() < 1e-5


@pytest.mark.parametrize("rate", [16000, 44100])
def test_chunked_separation_equals_one_piece_away_from_the_cross_fades(checkpoint, monkeypatch, rate):
    model, cfg = load_model(checkpoint)
    mix = song(150.0, rate, 1, seed=3) * np.linspace(0.2, 1.0, int(150.0 * rate), dtype=np.float32)
    bounds, _, fade, _ = chunk_bounds(mix.shape[1], rate, cfg)
    assert len(bounds) > 2  # really chunked
    chunked = separate_array(model, cfg, mix, rate)
    monkeypatch.setattr(separation, "CHUNK_SECONDS", 1e9)
    whole = separate_array(model, cfg, mix, rate)
    assert chunked.shape == whole.shape == mix.shape
    away = np.ones(mix.shape[1], bool)
    for b in bounds[1:-1]:
        away[b - fade:b + fade] = False
    assert np.abs(chunked - whole)[:, away].max() < 1e-4 * np.abs(whole).max()
    assert np.abs(chunked - whole).max() < 0.1 * np.abs(whole).max()  # the cross-fades blend two close estimates


def test_mp3_and_flac_inputs_and_flac_24_bit_output(checkpoint, tmp_path):
    mp3 = shared_path("songs", "audio_example.mp3")
    flac = tmp_path / "song.flac"
    sf.write(str(flac), song(1.0, 44100, 2).T, 44100, format="FLAC", subtype="PCM_16")
    code, _, err = separate(checkpoint, tmp_path / "out", mp3, flac, extra=["--format", "flac", "--bits", "24"])
    assert code == 0, err
    info = sf.info(str(tmp_path / "out" / "audio_example" / "vocals.flac"))
    assert (info.samplerate, info.channels, info.subtype) == (44100, 2, "PCM_24")
    assert info.frames == sf.info(str(mp3)).frames


def test_pcm_output_clips_instead_of_wrapping(checkpoint, tmp_path):
    mix = np.clip(song(1.0, 16000, 1) * 8, -1, 1)  # full-scale: accompaniment may exceed 1
    path = write_wav(tmp_path / "loud.wav", mix, 16000)
    code, _, err = separate(checkpoint, tmp_path / "out", path, extra=["--bits", "16"])
    assert code == 0, err
    vocals, accompaniment, _ = outputs(tmp_path / "out", "loud")
    exact = mix - vocals
    assert np.abs(accompaniment).max() <= 1.0
    big = np.abs(exact) > 0.9  # where the exact value is near full scale, the sign survives
    assert np.all(np.sign(accompaniment[big]) == np.sign(exact[big]))


def test_silence_in_gives_silence_out(checkpoint, tmp_path):
    path = write_wav(tmp_path / "quiet.wav", np.zeros((2, 16000), np.float32), 16000)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 0
    assert "silent" in err
    vocals, accompaniment, _ = outputs(tmp_path / "out", "quiet")
    assert not vocals.any() and not accompaniment.any()


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 96000])
def test_inputs_of_any_length_give_outputs_of_that_length(checkpoint, rate):
    model, cfg = load_model(checkpoint)
    hop = round(256 * rate / 16000)
    n_fft = round(1024 * rate / 16000)
    for length in (1, 2, 3, hop - 1, hop, hop + 1, n_fft - 1, n_fft, n_fft + 1):
        mix = song(length / rate, rate, 2)
        vocals = separate_array(model, cfg, mix, rate)
        assert vocals.shape == mix.shape and np.isfinite(vocals).all(), (rate, length)


def test_one_sample_at_44_1_khz_through_the_command_line(checkpoint, tmp_path):
    path = write_wav(tmp_path / "one.wav", np.full((2, 1), 0.25, np.float32), 44100)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 0, err
    vocals, accompaniment, rate = outputs(tmp_path / "out", "one")
    assert rate == 44100 and vocals.shape == (2, 1) and np.allclose(vocals + accompaniment, 0.25)


def test_one_sample_and_full_scale_noise(checkpoint, tmp_path):
    one = write_wav(tmp_path / "one.wav", np.full((1, 1), 0.5, np.float32), 16000)
    noise = np.random.default_rng(0).choice([-1.0, 1.0], size=(2, 32000)).astype(np.float32)
    loud = write_wav(tmp_path / "noise.wav", noise, 16000, "PCM_16")
    code, _, err = separate(checkpoint, tmp_path / "out", one, loud)
    assert code == 0, err
    vocals, accompaniment, _ = outputs(tmp_path / "out", "one")
    assert vocals.shape == (1, 1) and abs(vocals[0, 0] + accompaniment[0, 0] - 0.5) < 1e-6
    vocals, accompaniment, _ = outputs(tmp_path / "out", "noise")
    assert np.isfinite(vocals).all() and np.abs(vocals + accompaniment - noise).max() < 1e-4


def test_name_with_spaces_and_non_ascii_letters(checkpoint, tmp_path):
    path = write_wav(tmp_path / "Sigur Rós - Hoppípolla.wav", song(1.0, 16000, 2), 16000)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 0, err
    assert (tmp_path / "out" / "Sigur Rós - Hoppípolla" / "vocals.wav").exists()


def test_plot_writes_a_png(checkpoint, tmp_path):
    path = write_wav(tmp_path / "in.wav", song(3.0, 16000, 2), 16000)
    code, _, err = separate(checkpoint, tmp_path / "out", path, extra=["--plot"])
    assert code == 0, err
    png = (tmp_path / "out" / "in" / "separation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def bad_inputs(tmp_path):
    """name -> (path, expected words in the error)."""
    text = tmp_path / "text.wav"
    text.write_text("this is not audio\n" * 100)
    empty = tmp_path / "empty.wav"
    empty.touch()
    nan = song(1.0, 16000, 2)
    nan[0, 100] = np.nan
    inf = song(1.0, 16000, 2)
    inf[1, 5] = np.inf
    folder = tmp_path / "no-audio"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    return {"missing": (tmp_path / "missing.wav", "no such file"), "text": (text, "not a readable audio file"),
            "empty": (empty, "empty file"), "nan": (write_wav(tmp_path / "nan.wav", nan, 16000), "NaN"),
            "inf": (write_wav(tmp_path / "inf.wav", inf, 16000), "NaN or infinite"),
            "folder": (folder, "no audio files")}


@pytest.mark.parametrize("case", ["missing", "text", "empty", "nan", "inf", "folder"])
def test_bad_input_gets_one_line_and_no_output(checkpoint, tmp_path, case):
    path, words = bad_inputs(tmp_path)[case]
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    assert str(path.name) in err
    stem_dir = tmp_path / "out" / path.stem
    assert not stem_dir.exists() or not any(stem_dir.iterdir())


def test_truncated_files_give_a_result_or_one_clear_error(checkpoint, tmp_path):
    full = write_wav(tmp_path / "full.wav", song(2.0, 16000, 2), 16000, "PCM_16")
    cut_wav = tmp_path / "cut.wav"
    cut_wav.write_bytes(full.read_bytes()[:30000])
    mp3 = shared_path("songs", "audio_example.mp3")
    cut_mp3 = tmp_path / "cut.mp3"
    cut_mp3.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 3])
    for path in (cut_wav, cut_mp3):
        code, _, err = separate(checkpoint, tmp_path / "out", path)
        if code == 0:
            vocals, _, _ = outputs(tmp_path / "out", path.stem)
            assert np.isfinite(vocals).all() and vocals.shape[1] > 0
        else:
            assert err.count("\n") == 1 and path.name in err
        assert_no_partial_files(tmp_path / "out")


def test_one_bad_file_among_several_is_reported_and_the_rest_separated(checkpoint, tmp_path):
    good = [write_wav(tmp_path / f"good{i}.wav", song(1.0, 16000, 2, seed=i), 16000) for i in range(2)]
    bad = tmp_path / "bad.wav"
    bad.write_text("nope")
    code, _, err = separate(checkpoint, tmp_path / "out", good[0], bad, good[1])
    assert code == 1
    assert err.count("\n") == 1 and "bad.wav" in err
    assert all((tmp_path / "out" / g.stem / "vocals.wav").exists() for g in good)


def test_failed_run_leaves_an_existing_output_intact(checkpoint, tmp_path):
    path = write_wav(tmp_path / "song.wav", song(1.0, 16000, 2), 16000)
    assert separate(checkpoint, tmp_path / "out", path)[0] == 0
    before = (tmp_path / "out" / "song" / "vocals.wav").read_bytes()
    broken = song(1.0, 16000, 2)
    broken[:, 8000:] = np.nan
    write_wav(path, broken, 16000)
    code, _, err = separate(checkpoint, tmp_path / "out", path)
    assert code == 1 and "NaN" in err
    assert (tmp_path / "out" / "song" / "vocals.wav").read_bytes() == before
    assert_no_partial_files(tmp_path / "out")


def test_unwritable_output_folder_and_bad_checkpoints(checkpoint, tmp_path):
    path = write_wav(tmp_path / "song.wav", song(1.0, 16000, 2), 16000)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, _, err = separate(checkpoint, blocker / "out", path)
    assert code == 1 and err.count("\n") == 1 and "cannot create output folder" in err
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    other = tmp_path / "other.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["config"]["model"]["kernel_size"] = 3
    torch.save(payload, other)
    for bad, words in ((truncated, "not a valid checkpoint"), (other, "do not match"), (path, "not a valid")):
        code, _, err = separate(bad, tmp_path / "out2", path)
        assert code == 2 and err.count("\n") == 1 and words in err  # a model file that cannot be used
    assert not (tmp_path / "out2").exists()


def test_command_line_end_to_end(checkpoint, tmp_path):
    path = write_wav(tmp_path / "song.wav", song(1.0, 22050, 2), 22050)
    result = subprocess.run([sys.executable, "inference.py", str(path), "--checkpoint", str(checkpoint),
                             "--out-dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "song" / "accompaniment.wav").exists()
    result = subprocess.run([sys.executable, "inference.py", str(tmp_path / "nope.wav"), "--checkpoint",
                             str(checkpoint)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
def test_formats_only_ffmpeg_reads(checkpoint, tmp_path):
    wav = write_wav(tmp_path / "src.wav", song(1.0, 44100, 2), 44100, "PCM_16")
    m4a = tmp_path / "song.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    code, _, err = separate(checkpoint, tmp_path / "out", m4a)
    assert code == 0, err
    vocals, _, rate = outputs(tmp_path / "out", "song")
    assert rate == 44100 and vocals.shape[0] == 2



@pytest.mark.parametrize("shipped, data", [(separation.SHIPPED, "MUSDB18"), (separation.SHIPPED_MIR1K, "MIR-1K")])
def test_shipped_models_load_compact_with_their_provenance_and_stated_size(shipped, data):
    assert shipped.stat().st_size < 25 * 2**20
    payload = read_checkpoint(shipped)
    assert payload["model"]["encoder.0.0.weight"].dtype == torch.float16
    assert data in payload["provenance"]["data"]
    net = UNet(Config.from_dict(payload["config"]).model)
    net.load_state_dict(payload["model"])
    assert count_parameters(net) == 9_823_313  # as the README states


def test_the_mir1k_model_beats_the_mixture_on_made_songs(demo_root):
    assert demo_gain_db(separation.SHIPPED_MIR1K, demo_root) > 3.0


def test_the_default_model_separates_a_real_song_well_over_the_full_band():
    """A MUSDB18 test preview from ../shared: museval's vocals SDR (median over frames) far above
    the mixture's, with a mask that covers the band up to 16 kHz."""
    from bsseval import bss_eval_v4

    model, cfg = load_model(separation.default_checkpoint())
    assert cfg.audio.n_bins * cfg.audio.sample_rate / cfg.audio.n_fft >= 16000  # the network hears up to 16 kHz
    track = load_tracks("musdb", shared_path("musdb18-preview"), "test")[0]
    mixture, vocals, rate = track.load()
    estimate = separate_array(model, cfg, mixture, rate)

    def median_sdr(vocals_estimate, accompaniment_estimate):
        sdr = bss_eval_v4([vocals.T, (mixture - vocals).T], [vocals_estimate.T, accompaniment_estimate.T],
                          rate, rate)[0]
        return float(np.nanmedian(sdr[0]))

    # measured on the 20 previews: 5.17 against -4.67 dB (the mixture as each target's estimate)
    assert median_sdr(estimate, mixture - estimate) > median_sdr(mixture, mixture) + 6


def test_shipped_model_separates_mir1k_clips(tmp_path):
    from evaluate import evaluate_model

    summary = evaluate_model(None, "mir1k", str(shared_path("MIR-1K")), out_dir=tmp_path, tracks=4, device="cpu")
    gnsdr = next(r["weighted_mean"] for r in summary if r["target"] == "vocals" and r["metric"] == "NSDR")
    assert gnsdr > 5.0


def test_without_a_checkpoint_the_shipped_model_is_used_and_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no checkpoints/best.pt here
    path = write_wav(tmp_path / "song.wav", song(1.0, 44100, 2), 44100)
    code, _, err = run_main(inference.main, [str(path), "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, err
    assert err.count("\n") == 1 and "unet-musdb.pt (a shipped model)" in err
    assert (tmp_path / "out" / "song" / "vocals.wav").exists()


def test_a_model_trained_at_44_1_khz_keeps_the_sibilants_in_the_vocals(fullband_checkpoint, demo_root):
    """Demo songs: sibilant bursts above 5 kHz in the voice, hi-hats in the accompaniment. Above
    8 kHz the separated vocals hold most of the true vocals and the accompaniment does not."""
    model, cfg = load_model(fullband_checkpoint)
    for track in load_tracks("demo", demo_root, "test"):
        mixture, vocals, rate = track.load()
        estimate = separate_array(model, cfg, mixture, rate)
        true, vocals_out, mixture_high = (high_pass(x, rate, 8000) for x in (vocals, estimate, mixture))
        energy = np.sum(true * true)
        in_vocals = np.sum(vocals_out * true) / energy  # share of the true high band in each output
        in_accompaniment = np.sum((mixture_high - vocals_out) * true) / energy
        assert in_vocals > 0.55 and in_accompaniment < 0.45, (track.name, in_vocals, in_accompaniment)
        high_sdr = 10 * np.log10(energy / np.sum((true - vocals_out) ** 2))
        assert high_sdr > 3.0, (track.name, high_sdr)


@pytest.mark.parametrize("stereo", ["shared", "each"])
def test_the_network_sees_the_inst_frequency_of_the_mix_it_separates(tmp_path, stereo):
    """model.inst_frequency: separation feeds the first layer that second channel at the song's
    rate; "shared" reads it from the channels' sum (a tone in one channel: its frequency)."""
    cfg = apply_overrides(Config(), ["model.inst_frequency=true", f"separation.stereo={stereo}"])
    save_checkpoint(tmp_path / "m.pt", UNet(cfg.model), cfg)
    model, cfg = load_model(tmp_path / "m.pt")
    seen = []
    model.encoder[0][0].register_forward_pre_hook(lambda _, args: seen.append(args[0].float()))
    rate = 44100
    t = np.arange(2 * rate) / rate
    bin_hz = rate / separation.STFT(cfg.audio, rate).n_fft
    audio = np.stack([np.sin(2 * np.pi * 100.3 * bin_hz * t), np.zeros_like(t)]).astype(np.float32)
    vocals = separate_array(model, cfg, audio, rate)
    assert vocals.shape == audio.shape
    features = torch.cat(seen)  # (patches, 2, 512, 128)
    assert features.shape[1] == 2
    bin_100 = features[:, 1, 100, 1:] / features[:, 0, 100, 1:]  # per unit of magnitude; first frames aside
    loud = features[:, 0, 100, 1:] > 0.5
    near = (bin_100[loud] - 0.3 * 0.5).abs() < 0.01  # 0.3 bins above the centre: 0.15
    assert loud.sum() > 100 and near.float().mean() > 0.9  # all but the tone's first and last frames


def test_a_side_input_added_to_a_model_starts_out_separating_as_it_did(tmp_path):
    """model.side_input added to a trained model (`load_starting_weights`: the side channel's
    weights at 0): separation feeds the network the side of the song's pair, and the vocals
    equal the model's without it; the side's weights then change what it hears; a model that
    reads the side does not load into one that does not, and refuses a mask per channel."""
    plain_cfg = apply_overrides(Config(), ["separation.bfloat16=false"])  # float32: the same sums, exactly
    plain = UNet(plain_cfg.model)
    torch.nn.init.normal_(plain.decoder[-1][0].weight, std=0.05)  # a mask that varies with the input
    save_checkpoint(tmp_path / "plain.pt", plain, plain_cfg)
    side_cfg = apply_overrides(plain_cfg, ["model.side_input=true", "train.channels=stereo"])
    side = UNet(side_cfg.model)
    load_starting_weights(side, side_cfg.model, plain_cfg.model, plain.state_dict())
    assert side.encoder[0][0].weight[:, 1].abs().max() == 0
    save_checkpoint(tmp_path / "side.pt", side, side_cfg)
    audio = song(3.0, 44100, 2)
    audio[1] = 0.5 * audio[1] + 0.2 * song(3.0, 44100, 1, seed=1)[0]  # the channels differ: a side to read
    (plain_model, _), (side_model, cfg) = load_model(tmp_path / "plain.pt"), load_model(tmp_path / "side.pt")
    seen = []
    side_model.encoder[0][0].register_forward_pre_hook(lambda _, args: seen.append(args[0].float()))
    vocals = separate_array(side_model, cfg, audio, 44100)
    assert torch.cat(seen).shape[1] == 2 and torch.cat(seen)[:, 1].abs().max() > 0.05  # the side, normalized
    assert np.abs(vocals - separate_array(plain_model, plain_cfg, audio, 44100)).max() < 1e-6
    with torch.no_grad():
        side.encoder[0][0].weight[:, 1] = 1.0
    save_checkpoint(tmp_path / "side.pt", side, side_cfg)
    hearing, _ = load_model(tmp_path / "side.pt")
    assert np.abs(separate_array(hearing, cfg, audio, 44100) - vocals).max() > 0.01
    with pytest.raises(InputError, match="side"):
        load_starting_weights(UNet(plain_cfg.model), plain_cfg.model, side_cfg.model, side.state_dict())
    code, _, err = run_main(inference.main, [str(write_wav(tmp_path / "s.wav", audio, 44100)), "--checkpoint",
                                            str(tmp_path / "side.pt"), "--set", "separation.stereo=each",
                                            "--out-dir", str(tmp_path / "out")])
    assert code != 0 and len(err.strip().splitlines()) == 1 and "side_input" in err


def test_high_band_rules_fill_the_band_above_the_model_frame_by_frame():
    """A model band of 8 bins under 16: below, the model's mask as it is; above, one value per frame."""
    mask = torch.zeros(1, 8, 3)
    mask[0, 4:, 0] = 1.0  # frame 0: the top octave is all voice
    mask[0, 4:, 1] = torch.tensor([1.0, 1.0, 0.0, 0.0])  # frame 1: its lower half is voice...
    spec = torch.ones(2, 16, 3, dtype=torch.complex64)
    spec[:, 4:6, 1] = 3.0  # ...and holds 9 / 10 of its energy
    expected = {"top-octave": [1.0, 0.9, 0.0], "whole-band": [0.5, 18 / 24, 0.0],
                "top-bins": [0.5, 0.25, 0.0], "top-bin": [1.0, 0.0, 0.0], "none": [0.0, 0.0, 0.0]}
    assert set(expected) == set(separation.HIGH_BAND) == set(HIGH_BAND_RULES)
    for rule, rows in expected.items():
        full = separation.extend_mask(mask, spec, rule)
        assert full.shape == (1, 16, 3) and torch.equal(full[:, :8], mask), rule
        assert torch.allclose(full[0, 8:], torch.tensor(rows).expand(8, 3)), (rule, full[0, 8:, :])
    assert torch.equal(separation.extend_mask(mask, spec[:, :6]), mask[:, :6])  # at a lower rate: cut


def test_a_16_khz_model_at_44_1_khz_gives_the_voice_above_8_khz_to_the_vocals(checkpoint, demo_root):
    """The default rule keeps much of the demo voice's sibilants above 8 kHz in the vocals;
    `none` keeps nothing there; below the model's band the rules give the same vocals."""
    model, cfg = load_model(checkpoint)
    mixture, vocals, rate = load_tracks("demo", demo_root, "test")[0].load()
    true = high_pass(vocals, rate, 8500)
    estimates = {rule: separate_array(model, apply_overrides(cfg, [f"separation.high_band={rule}"]), mixture, rate)
                 for rule in ("top-octave", "none")}
    shares = {rule: np.sum(high_pass(e, rate, 8500) * true) / np.sum(true * true) for rule, e in estimates.items()}
    kept, cut = (e - high_pass(e, rate, 7500) for e in estimates.values())  # below 7.5 kHz
    assert np.sum((cut - kept) ** 2) < 1e-4 * np.sum(kept ** 2)  # -40 dB: the same below
    assert shares["none"] < 0.01 < 0.3 < shares["top-octave"], shares


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_song_ends_with_one_line_and_no_output(checkpoint, tmp_path, signum, status):
    """Ctrl-C (or SIGTERM) while a long song separates: one line saying what was interrupted and
    what is kept, the shell's status for that signal, and nothing of the song on disk."""
    done = write_wav(tmp_path / "short.wav", song(1.0, 16000, 1), 16000)
    long = write_wav(tmp_path / "long.wav", song(120.0, 44100, 2), 44100)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "inference.py", str(done), str(long), "--checkpoint", str(checkpoint),
                             "--out-dir", str(out), "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list((out / "long").glob(".*.partial")):
        time.sleep(0.05)  # the long song's outputs exist under temporary names: it is mid-song
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"interrupted by {signal.Signals(signum).name}: ") and "long.wav" in err
    assert "1 of 2 songs are complete" in err
    assert sorted(p.name for p in (out / "short").iterdir()) == ["accompaniment.wav", "vocals.wav"]
    assert list((out / "long").iterdir()) == []  # nothing half-written, not even under a temporary name


def test_the_mask_is_the_mean_of_the_masks_of_the_input_shifted_by_each_bin_shift():
    """separation.bin_shifts=0,1: each patch's mask is the mean of the network's mask of its input
    and of its input moved up one bin (that mask moved back down, its top row repeated), so the
    two phases of the encoder's stride grid see every partial; (0,) is one pass."""
    cfg = apply_overrides(Config(), ["separation.bfloat16=false", "separation.bin_shifts=0,1"])
    net = UNet(cfg.model).eval()
    torch.nn.init.normal_(net.decoder[-1][0].weight, std=0.05)  # a mask that varies with the input
    model = prepare_for_inference(net)
    transform = STFT(cfg.audio, cfg.audio.sample_rate)
    patches = transform(torch.from_numpy(song(2.1, cfg.audio.sample_rate, 1))).abs()[None, :, :, :128]
    one = apply_overrides(cfg, ["separation.bin_shifts=0"])
    plain = separation.patch_masks(model, patches, one, transform)  # (1, 1, 513, 128)
    moved = torch.cat([torch.zeros_like(patches[..., :1, :]), patches[..., :-1, :]], dim=-2)
    up = separation.patch_masks(model, moved, one, transform)
    back = torch.cat([up[..., 1:, :], up[..., -1:, :]], dim=-2)
    both = separation.patch_masks(model, patches, cfg, transform)
    assert Config().separation.bin_shifts == (0,) and (plain - back).abs().max() > 0.01
    assert torch.allclose(both, (plain + back) / 2, atol=1e-6)
    with pytest.raises(InputError, match="bin_shifts"):
        apply_overrides(cfg, ["separation.bin_shifts=-1"])


def test_high_mask_power_raises_the_mask_from_its_frequency_up_only():
    cfg = apply_overrides(Config(), ["audio.sample_rate=32000", "audio.n_fft=2048", "audio.hop_length=512",
                                     "audio.model_bins=1024"])
    transform = STFT(cfg.audio, 44100)
    spec = transform(torch.from_numpy(song(2.0, 44100, 2)))  # (2, bins, frames) complex, up to 22 kHz
    mask = torch.rand(1, 1024, spec.shape[-1], generator=torch.Generator().manual_seed(0))
    plain = separation.finish_mask(mask, spec, cfg)
    softer = separation.finish_mask(mask, spec, apply_overrides(cfg, ["separation.high_mask_power=0.5"]))
    first = cfg.audio.bin_at(8000)  # 512 of the model's bins: 8 kHz at every rate
    assert first == 512 and plain.shape == softer.shape == (1, spec.shape[1], spec.shape[-1])
    assert torch.equal(softer[:, :first], plain[:, :first])
    assert torch.allclose(softer[:, first:], plain[:, first:].sqrt())  # the rule's band above 16 kHz too
    with pytest.raises(InputError, match="high_mask_power"):
        apply_overrides(cfg, ["separation.high_mask_power=0"])
