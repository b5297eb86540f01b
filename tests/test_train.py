"""train.py: learning, checkpoints, budgets, crashes and resumes, bad datasets."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import REPO, demo_gain_db, run_main, shared_path

import train
from config import Config, InputError, apply_overrides
from devices import autocast_dtype, native_bfloat16
from unet_model import UNet, load_model, read_checkpoint, save_checkpoint

QUICK = ["--dataset", "demo", "--device", "cpu", "--set", "train.samples_per_epoch=48"]


def history(folder):
    with open(folder / "history.csv") as f:
        return list(csv.DictReader(f))


def test_short_training_lowers_validation_loss(trained):
    rows = history(trained)
    assert len(rows) == 12
    valid = [float(r["valid_loss"]) for r in rows]
    assert min(valid[1:]) < 0.8 * valid[0]
    assert read_checkpoint(trained / "best.pt")["best"] == pytest.approx(min(valid))
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_trained_model_beats_the_unprocessed_mixture_on_demo_tracks(trained, demo_root):
    assert demo_gain_db(trained / "best.pt", demo_root) > 1.0


def test_max_minutes_stops_cleanly_with_a_checkpoint(tmp_path):
    started = time.time()
    code, out, err = run_main(train.main, [*QUICK, "--epochs", "500", "--max-minutes", "0.1",
                                           "--checkpoint-dir", str(tmp_path)])
    assert code == 0, err
    assert time.time() - started < 60
    assert "budget" in out
    rows = history(tmp_path)
    assert 1 <= len(rows) < 500
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == len(rows)


def test_sigkill_mid_epoch_then_resume_loses_at_most_one_epoch(tmp_path):
    cmd = [sys.executable, "train.py", *QUICK, "--epochs", "4", "--checkpoint-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_checkpoint(tmp_path / "last.pt")["epoch"]  # loads: never a torn file
    assert 1 <= done < 4
    assert not list(tmp_path.glob(".*partial"))
    code, _, err = run_main(train.main, [*QUICK, "--epochs", "4", "--checkpoint-dir", str(tmp_path), "--resume"])
    assert code == 0, err
    assert [int(r["epoch"]) for r in history(tmp_path)] == [1, 2, 3, 4]
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] == 4


def test_resume_refuses_another_config_and_a_missing_checkpoint(tmp_path):
    assert run_main(train.main, [*QUICK, "--epochs", "1", "--checkpoint-dir", str(tmp_path)])[0] == 0
    code, _, err = run_main(train.main, [*QUICK, "--epochs", "2", "--lr", "0.1", "--resume",
                                         "--checkpoint-dir", str(tmp_path)])
    assert code == 1 and "another config" in err and err.count("\n") == 1
    code, _, err = run_main(train.main, [*QUICK, "--resume", "--checkpoint-dir", str(tmp_path / "none")])
    assert code == 2 and "not found" in err  # a model file that cannot be used


def test_a_checkpoint_whose_config_cannot_be_read_gets_one_line_for_init_and_resume(tmp_path):
    """A checkpoint with a config from a foreign or newer version: --init and --resume name it and
    exit with status 2 (a model file that cannot be used) before any training."""
    cfg = Config()
    save_checkpoint(tmp_path / "last.pt", UNet(cfg.model), cfg)
    payload = torch.load(tmp_path / "last.pt", weights_only=False)
    payload["config"]["model"]["wings"] = 2  # a field this version does not know
    torch.save(payload, tmp_path / "last.pt")
    for flags in (["--init", str(tmp_path / "last.pt")], ["--resume"]):
        code, _, err = run_main(train.main, [*QUICK, *flags, "--checkpoint-dir", str(tmp_path)])
        assert code == 2 and err.count("\n") == 1 and "config not understood" in err, err


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "musdb", "--root", "{tmp}"], "no MUSDB18 .stem.mp4 tracks"),
    (["--dataset", "musdb", "--root", "{tmp}/absent"], "not a MUSDB18 folder"),
    (["--dataset", "mir1k", "--root", "{tmp}"], "not a MIR-1K folder"),
    (["--dataset", "mir1k"], "--root is required"),
    (["--dataset", "demo", "--root", "{tmp}"], "no tracks"),
    (["--dataset", "demo", "--set", "train.nonsense=1"], "bad override"),
    (["--dataset", "demo", "--set", "train.lr=fast"], "bad value"),
    (["--dataset", "demo", "--checkpoint-dir", "{tmp}/notes.txt/ck"], "cannot create checkpoint folder"),
])
def test_bad_datasets_and_flags_get_one_clear_line(tmp_path, argv, words):
    (tmp_path / "train").mkdir()
    (tmp_path / "notes.txt").write_text("not a dataset")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run_main(train.main, ["--checkpoint-dir", str(tmp_path / "ck"), *argv])
    assert code == 1
    assert err.count("\n") == 1 and words in err, err


def test_default_run_falls_back_to_the_demo_set_when_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MUSDB_PATH"}
    env["HOME"] = str(tmp_path)  # no cached preview
    env["http_proxy"] = env["https_proxy"] = "http://127.0.0.1:9"  # the discard port: every download fails at once
    started = time.time()
    result = subprocess.run([sys.executable, "train.py", "--epochs", "1", "--set", "train.samples_per_epoch=16",
                             "--checkpoint-dir", str(tmp_path / "ck")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC demo" in result.stdout and "preview at" not in result.stdout
    assert (tmp_path / "ck" / "best.pt").exists()
    assert time.time() - started < 120


def test_the_budget_alone_decides_the_epochs_and_the_cosine_follows_it(tmp_path):
    args = train.parse_args([*QUICK, "--max-minutes", "0.25", "--checkpoint-dir", str(tmp_path)])
    assert train.build_config(args).train.epochs == 0  # no epoch limit
    train.train(args)
    rows = history(tmp_path)
    assert len(rows) > 1
    lrs = [float(r["lr"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.3 * lrs[0]  # decayed over the budget
    code, _, err = run_main(train.main, [*QUICK, "--epochs", "0", "--checkpoint-dir", str(tmp_path / "b")])
    assert code == 1 and "needs a --max-minutes budget" in err


def test_sdr_loss_trains_and_validates_on_minus_the_waveform_sdr(tmp_path):
    train.train(train.parse_args([*QUICK, "--epochs", "4", "--lr", "3e-3", "--set", "train.loss=sdr",
                                  "--checkpoint-dir", str(tmp_path)]))
    valid = [float(r["valid_loss"]) for r in history(tmp_path)]
    assert all(-60 < v < 60 for v in valid)  # dB, not an L1 of normalized magnitudes
    assert min(valid[1:]) < valid[0] - 0.5  # the SDR of the validation patches grows
    assert read_checkpoint(tmp_path / "best.pt")["config"]["train"]["loss"] == "sdr"


def test_weight_average_follows_the_weights_with_a_ramped_decay():
    live = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    average = train.WeightAverage(live, decay=0.9)
    start = [t.clone() for t in average.model.state_dict().values()]
    with torch.no_grad():
        for t in live.state_dict().values():
            t.add_(1)  # every float weight and statistic moves by 1, the batch counter too
    average.update(live)  # decay ramped: min(0.9, 2 / 11)
    average.update(live)  # min(0.9, 3 / 12)
    moved = 1 - (2 / 11) * (3 / 12)
    for (name, t), t0 in zip(average.model.state_dict().items(), start):
        expected = t0 + 1 if name.endswith("num_batches_tracked") else t0 + moved
        assert torch.allclose(t, expected, atol=1e-6), name
    assert not any(p.requires_grad for p in average.model.parameters())


def test_a_model_with_the_inst_frequency_channel_trains_and_loads(tmp_path):
    train.train(train.parse_args([*QUICK, "--epochs", "1", "--set", "model.inst_frequency=true",
                                  "--checkpoint-dir", str(tmp_path)]))
    model, cfg = load_model(tmp_path / "best.pt")
    assert cfg.model.inst_frequency and model.encoder[0][0].in_channels == 2
    assert -100 < float(history(tmp_path)[0]["train_loss"]) < 100  # minus SDR in dB: finite


def test_weight_average_is_saved_and_resumed_without_changing_training(tmp_path):
    argv = [*QUICK, "--epochs", "2"]
    train.train(train.parse_args([*argv, "--checkpoint-dir", str(tmp_path / "plain")]))
    train.train(train.parse_args([*argv, "--set", "train.ema=0.9", "--checkpoint-dir", str(tmp_path / "ema")]))
    plain, ema = read_checkpoint(tmp_path / "plain" / "last.pt"), read_checkpoint(tmp_path / "ema" / "last.pt")
    assert ema["average_steps"] == 2 * 3  # 48 patches per epoch in batches of 16
    for name, weights in plain["model"].items():  # the average rides along: same trained weights
        assert torch.equal(ema["trained_model"][name], weights), name
    conv = "encoder.0.0.weight"
    assert not torch.allclose(ema["model"][conv], ema["trained_model"][conv])  # and it is what is saved
    load_model(tmp_path / "ema" / "best.pt")  # the average loads as a model of its own
    cfg = train.build_config(train.parse_args([*argv, "--set", "train.ema=0.9"]))
    trainer = train.Trainer(cfg, UNet(cfg.model), torch.device("cpu"), "float32")
    train.TrainingRun(trainer, 0, tmp_path, None).resume(tmp_path / "ema" / "last.pt")  # both weights, the steps
    assert trainer.average.steps == 6
    assert torch.equal(trainer.net.state_dict()[conv], ema["trained_model"][conv])
    assert torch.equal(trainer.average.model.state_dict()[conv], ema["model"][conv])


def test_weight_decay_is_decoupled_from_adams_step_sizes():
    """train.weight_decay w: a weight without gradient shrinks by lr * w per step (AdamW), instead
    of moving by about lr whatever its size (L2 inside Adam); w = 0 leaves it as it is."""
    for decay in (0.05, 0.0):
        cfg = train.build_config(train.parse_args(["--set", f"train.weight_decay={decay}", "--lr", "1e-2"]))
        trainer = train.Trainer(cfg, UNet(cfg.model), torch.device("cpu"), "float32")
        before = [p.detach().clone() for p in trainer.net.parameters()]
        for p in trainer.net.parameters():
            p.grad = torch.zeros_like(p)
        trainer.optimizer.step()
        for old, new in zip(before, trainer.net.parameters()):
            assert torch.allclose(new, old * (1 - 1e-2 * decay), rtol=1e-6, atol=1e-9)


def test_precision_flag_sets_the_dtype_the_network_trains_in():
    cpu = torch.device("cpu")
    native = torch.bfloat16 if native_bfloat16(cpu) else None
    for flag, dtype in (("float32", None), ("bfloat16", torch.bfloat16), ("auto", native)):
        args = train.parse_args(["--precision", flag])
        trainer = train.Trainer(train.build_config(args), UNet(Config().model), cpu, args.precision)
        assert trainer.dtype == dtype, flag
    with pytest.raises(InputError, match="unknown precision"):
        autocast_dtype(cpu, "float8")


def test_learning_rate_schedule():
    cfg = train.build_config(train.parse_args(["--lr", "1e-3"]))
    assert train.learning_rate(cfg, 0.0) == pytest.approx(1e-3)
    assert train.learning_rate(cfg, 0.5) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert train.learning_rate(cfg, 1.0) == pytest.approx(5e-5)
    assert train.learning_rate(cfg, 7.0) == pytest.approx(5e-5)  # past the end: stays at the floor
    constant = train.build_config(train.parse_args(["--set", "train.lr_schedule=constant"]))
    assert train.learning_rate(constant, 0.9) == constant.train.lr


def test_signal_handlers_are_restored_when_training_returns(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    assert run_main(train.main, [*QUICK, "--epochs", "1", "--checkpoint-dir", str(tmp_path)])[0] == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_bad_setting_fails_before_any_audio_is_read(tmp_path):
    started = time.time()
    code, _, err = run_main(train.main, ["--dataset", "mir1k", "--root", str(tmp_path / "absent"), "--set",
                                         "train.loss=l2", "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 1 and err.count("\n") == 1 and "unknown train.loss 'l2'" in err
    assert time.time() - started < 5


def test_fine_tuning_starts_from_a_checkpoints_weights_on_own_stems(checkpoint, demo_root, tmp_path):
    init = ["--dataset", "stems", "--root", str(demo_root), "--device", "cpu", "--init", str(checkpoint),
            "--set", "train.samples_per_epoch=32"]
    before = demo_gain_db(checkpoint, demo_root)
    code, _, err = run_main(train.main, [*init, "--epochs", "1", "--lr", "1e-5", "--checkpoint-dir", str(tmp_path),
                                         "--spectra-cache", str(tmp_path / "spectra")])
    assert code == 0, err
    spectra = {p.stem for p in (tmp_path / "spectra").glob("*.npy")}
    plain = {name for name in spectra if "-shift" not in name}
    assert len(plain) == len(list((demo_root / "train").iterdir()))  # every track's spectra, once
    shifted = {name.partition("-shift")[0] for name in spectra - plain}  # training tracks' pitch-shifted vocals
    assert shifted and shifted < plain and len(spectra - plain) == len(shifted) * len(Config().train.pitch_shifts)
    # one tiny step from the trained weights: still as good as them, far from a fresh model
    assert demo_gain_db(tmp_path / "last.pt", demo_root) > before - 0.5
    assert read_checkpoint(tmp_path / "last.pt")["config"]["audio"] == read_checkpoint(checkpoint)["config"]["audio"]
    code, _, err = run_main(train.main, [*init, "--set", "audio.n_fft=2048", "--checkpoint-dir", str(tmp_path)])
    assert code == 1 and err.count("\n") == 1 and "audio.n_fft=2048 differs from the checkpoint's 1024" in err
    code, _, err = run_main(train.main, [*init, "--resume", "--checkpoint-dir", str(tmp_path)])
    assert code == 1 and "exclude each other" in err


def test_a_dataset_with_a_file_that_is_not_audio_names_the_file(tmp_path):
    wavfile = tmp_path / "MIR-1K" / "Wavfile"
    wavfile.mkdir(parents=True)
    for i in range(3):
        (wavfile / f"abjones_1_0{i}.wav").write_text("not audio")
    code, _, err = run_main(train.main, ["--dataset", "mir1k", "--root", str(tmp_path / "MIR-1K"),
                                         "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 1 and err.count("\n") == 1
    assert "abjones_1_0" in err and ".wav: not a readable audio file" in err


def test_fine_tuning_may_widen_the_band_on_the_same_time_frequency_grid(tmp_path):
    """16 kHz, n_fft 1024 / hop 256 -> 32 kHz, 2048 / 512 keeps 15.6 Hz bins and 16 ms frames, so the
    weights mean the same up to 16 kHz; a grid of other bins or frames is refused."""
    start = Config()
    checkpoint = tmp_path / "start.pt"
    save_checkpoint(checkpoint, UNet(start.model), start)
    wider = ["--set", "audio.sample_rate=32000", "--set", "audio.n_fft=2048", "--set", "audio.hop_length=512",
             "--set", "audio.model_bins=1024"]
    cfg = train.build_config(train.parse_args(["--init", str(checkpoint), *wider]))
    assert (cfg.audio.sample_rate, cfg.audio.n_bins, cfg.model) == (32000, 1024, start.model)
    other = ["--set", "audio.sample_rate=32000"]  # same samples per window: bins twice as wide
    with pytest.raises(InputError, match=r"audio\.sample_rate=32000 differs"):
        train.build_config(train.parse_args(["--init", str(checkpoint), *other]))


def test_musdb_trains_its_recipe_unless_told_otherwise(tmp_path):
    """--dataset musdb: the shipped MUSDB18 model's recipe (the MIR-1K model widened to 1024 bins,
    stems remixed, its epochs even under a --max-minutes budget); flags still win; --init none
    starts from random weights; a checkpoint on another grid keeps its own band; MIR-1K keeps
    the defaults."""
    recipe = train.RECIPES["musdb"]
    cfg = train.build_config(train.parse_args(["--dataset", "musdb", "--max-minutes", "60"]))
    assert (cfg.audio.sample_rate, cfg.audio.n_bins, cfg.train.remix_stems) == (32000, 1024, True)
    shipped = Config.from_dict(read_checkpoint(REPO / "pretrained" / "unet-musdb.pt")["config"])
    assert (cfg.train.batch_size, cfg.separation) == (shipped.train.batch_size, shipped.separation)  # it reproduces
    assert f"train.epochs={cfg.train.epochs}" in recipe.overrides and cfg.train.epochs > 0
    assert cfg.model == Config.from_dict(read_checkpoint(REPO / recipe.init)["config"]).model
    assert train.starting_weights(train.parse_args(["--dataset", "musdb"]), recipe) == str(REPO / recipe.init)
    assert train.starting_weights(train.parse_args(["--dataset", "musdb", "--init", "none"]), recipe) is None
    assert train.starting_weights(train.parse_args(["--dataset", "musdb", "--resume"]), recipe) is None
    own = train.build_config(train.parse_args(["--dataset", "musdb", "--epochs", "3", "--set", "train.lr=1e-4"]))
    assert (own.train.epochs, own.train.lr, own.audio.n_bins) == (3, 1e-4, 1024)
    other_grid = apply_overrides(Config(), ["audio.n_fft=2048"])
    checkpoint = tmp_path / "other.pt"
    save_checkpoint(checkpoint, UNet(other_grid.model), other_grid)
    theirs = train.build_config(train.parse_args(["--dataset", "musdb", "--init", str(checkpoint)]))
    assert (theirs.audio, theirs.train.remix_stems) == (other_grid.audio, True)
    mir1k = train.build_config(train.parse_args(["--dataset", "mir1k", "--max-minutes", "20"]))
    assert (mir1k.audio, mir1k.train.epochs, mir1k.train.remix_stems) == (Config().audio, 0, False)


def test_two_preview_songs_train_with_each_stem_remixed_in_seconds(tmp_path):
    """MUSDB18's stems as sources of their own (train.remix_stems): vocals, drums, bass and other,
    each from its own track and place with its own gain, at 44.1 kHz over the band up to 16 kHz."""
    from data_generator import PatchDataset
    from tracks import load_tracks

    preview = shared_path("musdb18-preview", "train")
    root = tmp_path / "musdb" / "train"
    root.mkdir(parents=True)
    for song in sorted(preview.glob("*.stem.mp4"))[:2]:
        (root / song.name).symlink_to(song)
    settings = ["audio.sample_rate=44100", "audio.n_fft=2048", "audio.hop_length=512", "audio.model_bins=768",
                "train.remix_stems=true", "train.remix_prob=1", "train.pitch_shifts="]
    cfg = apply_overrides(Config(), settings)
    tracks = load_tracks("musdb", tmp_path / "musdb", "train")
    data = PatchDataset(tracks, cfg, remix=True)
    assert [spec.shape[:3] for spec in data.specs] == [(4, 1, 2), (4, 1, 2)]  # vocals, drums, bass, other
    item = data[0]
    assert item.sources.shape == (4, 1, 2, 768, 128) and item.gains.shape == (4, 1)
    mix, vocals = data.collate([item])
    sources = torch.complex(item.sources[:, 0, 0].float(), item.sources[:, 0, 1].float()) * item.gains[:, :, None]
    scale = sources.sum(0).abs().max()
    assert torch.allclose(mix[0, 0], sources.sum(0) / scale, atol=1e-5)  # the mixture: every gained stem
    assert torch.allclose(vocals[0, 0], sources[0] / scale, atol=1e-5)
    assert [s.shape[0] for s in PatchDataset(tracks, cfg).specs] == [2, 2]  # validation: vocals, accompaniment
    trained = train_the_musdb_recipe_one_epoch(tmp_path / "musdb", tmp_path / "ck")
    assert (trained.audio.n_bins, trained.train.remix_stems) == (1024, True)


# One epoch in batches of 8: two preview songs leave one to train on (its 2 channels: 22 patches).
RECIPE_EPOCH = ["--dataset", "musdb", "--epochs", "1", "--batch-size", "8"]


def train_the_musdb_recipe_one_epoch(root, out, *flags):
    """train.py with the shipped MUSDB18 recipe as is, for one epoch on the songs under root: it must
    finish within a minute, start from the recipe's weights and validate to a finite loss. Returns
    the config the checkpoint stores."""
    started = time.time()
    code, printed, err = run_main(train.main, [*RECIPE_EPOCH, "--root", str(root), *flags, "--device", "cpu",
                                               "--checkpoint-dir", str(out)])
    assert code == 0, err
    assert time.time() - started < 60
    assert "musdb: " in printed and "from " + str(REPO / train.RECIPES["musdb"].init) in printed
    assert math.isfinite(float(history(out)[0]["valid_loss"]))
    return Config.from_dict(read_checkpoint(out / "last.pt")["config"])


def made_musdb_hq(root, seconds=6.0, rate=44100):
    """Three made-up songs in the MUSDB18-HQ layout (root/train/<song>/{mixture,vocals,drums,bass,
    other}.wav, stereo): two in musdb's training split, one named as a song of its validation split."""
    import musdb

    names = ["made song 1", "made song 2", musdb.DB(root=str(root), is_wav=True).setup["validation_tracks"][0]]
    t = np.arange(int(seconds * rate)) / rate
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        stems = {"vocals": 0.2 * np.sin(2 * np.pi * (300 + 50 * i) * t * (1 + 0.01 * np.sin(5 * t))),
                 "drums": 0.3 * (rng.random(t.size) < 0.001) * rng.standard_normal(t.size),
                 "bass": 0.2 * np.sin(2 * np.pi * 55 * (i + 1) * t),
                 "other": 0.05 * rng.standard_normal(t.size)}
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for stem, wave in stems.items():
            sf.write(folder / f"{stem}.wav", np.stack([wave, 0.8 * wave], 1), rate, subtype="FLOAT")
        sf.write(folder / "mixture.wav", np.stack([sum(stems.values()), 0.8 * sum(stems.values())], 1), rate,
                 subtype="FLOAT")


def test_the_musdb_recipe_trains_end_to_end_on_made_stems_in_seconds(tmp_path):
    """The shipped recipe as is (from the MIR-1K model, 1024 bins, each stem remixed, each channel
    a track of its own) on songs the test makes: one epoch, a finite validation loss."""
    (tmp_path / "hq").mkdir()
    made_musdb_hq(tmp_path / "hq")
    trained = train_the_musdb_recipe_one_epoch(tmp_path / "hq", tmp_path / "ck", "--is-wav")
    assert trained.train == train.build_config(train.parse_args(RECIPE_EPOCH)).train



def test_the_recipe_with_the_side_input_trains_from_the_mir1k_model_on_made_stems(tmp_path):
    """The recipe with both channels together and the side input (`train.channels=stereo
    model.side_input=true`): it starts from the MIR-1K model (which reads no side), trains one
    epoch to a finite validation loss, and the side channel's weights have moved off 0."""
    (tmp_path / "hq").mkdir()
    made_musdb_hq(tmp_path / "hq")
    trained = train_the_musdb_recipe_one_epoch(tmp_path / "hq", tmp_path / "ck", "--is-wav", "--set",
                                               "train.channels=stereo", "--set", "model.side_input=true")
    assert (trained.train.channels, trained.model.side_input) == ("stereo", True)
    weights = read_checkpoint(tmp_path / "ck" / "last.pt")["model"]["encoder.0.0.weight"]  # (16, 2, 5, 5)
    assert weights.shape[1] == 2 and weights[:, 1].abs().max() > 0
