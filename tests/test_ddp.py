"""Training under torchrun: DistributedDataParallel on CPU (gloo)."""

import csv
import subprocess
import sys

import pytest
from conftest import REPO, demo_gain_db, run_main, song, write_wav

import inference

EXACT = ["--dataset", "demo", "--device", "cpu", "--epochs", "1", "--batch-size", "16", "--no-amp",
         "--set", "model.dropout=0", "--set", "train.remix=false", "--set", "train.gain_range=1,1",
         "--set", "train.shuffle=false"]


def torchrun(nproc, argv, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py",
           *argv]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def first_epoch(folder):
    with open(folder / "history.csv") as f:
        row = next(csv.DictReader(f))
    return float(row["train_loss"]), float(row["valid_loss"])


def test_torchrun_two_processes_trains_a_checkpoint_that_beats_the_mixture(demo_root, tmp_path):
    result = torchrun(2, ["--dataset", "demo", "--device", "cpu", "--epochs", "12", "--lr", "2e-3",
                          "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pt")) == ["best.pt", "last.pt"]
    assert result.stdout.count("epoch 1:") == 1  # only rank 0 reports
    assert demo_gain_db(tmp_path / "ck" / "best.pt", demo_root) > 1.0
    path = write_wav(tmp_path / "song.wav", song(1.0, 16000, 2), 16000)
    code, _, err = run_main(inference.main, [str(path), "--checkpoint", str(tmp_path / "ck" / "best.pt"),
                                             "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, err


def test_ddp_and_single_process_reach_the_same_loss_with_the_same_global_batch(demo_root, tmp_path):
    single = subprocess.run([sys.executable, "train.py", *EXACT, "--checkpoint-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = torchrun(2, [*EXACT, "--checkpoint-dir", str(tmp_path / "two")])
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    train_one, valid_one = first_epoch(tmp_path / "one")
    train_two, valid_two = first_epoch(tmp_path / "two")
    assert train_two == pytest.approx(train_one, rel=1e-4)
    assert valid_two == pytest.approx(valid_one, rel=1e-3)
