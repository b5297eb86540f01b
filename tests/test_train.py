"""train.py: learning, checkpoints, budgets, crashes and resumes, bad datasets."""

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, demo_gain_db, run_main

import train
from unet_model import read_checkpoint

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
    assert not list(tmp_path.glob(".*tmp"))
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
    assert code == 1 and "not found" in err


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
    started = time.time()
    result = subprocess.run([sys.executable, "train.py", "--epochs", "1", "--set", "train.samples_per_epoch=16",
                             "--checkpoint-dir", str(tmp_path / "ck")], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if "preview at" not in result.stdout:
        assert "SYNTHETIC demo" in result.stdout
    assert (tmp_path / "ck" / "best.pt").exists()
    assert time.time() - started < 120


def test_a_dataset_with_a_file_that_is_not_audio_names_the_file(tmp_path):
    wavfile = tmp_path / "MIR-1K" / "Wavfile"
    wavfile.mkdir(parents=True)
    for i in range(3):
        (wavfile / f"abjones_1_0{i}.wav").write_text("not audio")
    code, _, err = run_main(train.main, ["--dataset", "mir1k", "--root", str(tmp_path / "MIR-1K"),
                                         "--checkpoint-dir", str(tmp_path / "ck")])
    assert code == 1 and err.count("\n") == 1
    assert "abjones_1_0" in err and ".wav: not a readable audio file" in err
