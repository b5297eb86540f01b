"""Training under torchrun: DistributedDataParallel on CPU (gloo)."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import HALF_WIDTH, REPO, demo_gain_db, run_main, song, write_wav

import inference
from train import GlobalBatchNorm2d
from unet_model import read_checkpoint

# The L1 loss: its terms are all positive, so a relative tolerance on their mean means something;
# the SDR loss (the default) averages terms of either sign to near 0 dB here (0.09 after one epoch).
# lr 1e-3: the two runs sum gradients in different orders, and the default's larger steps grow
# that float32 rounding to 1.3e-4 of the loss over an epoch (a wrong average would be percents).
EXACT = ["--dataset", "demo", "--device", "cpu", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3",
         "--set", "model.dropout=0", "--set", "train.remix=false", "--set", "train.gain_range=1,1",
         "--set", "train.shuffle=false", "--set", "train.loss=magnitude", *HALF_WIDTH]


def torchrun(nproc, argv, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train.py",
           *argv]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def first_epoch(folder):
    with open(folder / "history.csv") as f:
        row = next(csv.DictReader(f))
    return float(row["train_loss"]), float(row["valid_loss"])


def test_torchrun_two_processes_trains_a_checkpoint_that_beats_the_mixture(demo_root, tmp_path):
    result = torchrun(2, ["--dataset", "demo", "--device", "cpu", "--epochs", "6", "--lr", "2e-3", *HALF_WIDTH,
                          "--checkpoint-dir", str(tmp_path / "ck")])
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pt")) == ["best.pt", "last.pt"]
    assert result.stdout.count("epoch 1:") == 1  # only rank 0 reports
    assert demo_gain_db(tmp_path / "ck" / "best.pt", demo_root) > 5.0  # 9 dB measured; an untrained net: 0
    path = write_wav(tmp_path / "song.wav", song(1.0, 16000, 2), 16000)
    code, _, err = run_main(inference.main, [str(path), "--checkpoint", str(tmp_path / "ck" / "best.pt"),
                                             "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 0, err


@pytest.mark.parametrize("precision, rel", [("float32", 1e-4), ("bfloat16", 2e-2)])
def test_ddp_and_single_process_reach_the_same_loss_with_the_same_global_batch(demo_root, tmp_path, precision, rel):
    """bfloat16 is asked for outright, so the autocast case runs on a CPU that only emulates it too."""
    argv = [*EXACT, "--precision", precision]
    single = subprocess.run([sys.executable, "train.py", *argv, "--checkpoint-dir", str(tmp_path / "one")],
                            cwd=REPO, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = torchrun(2, [*argv, "--checkpoint-dir", str(tmp_path / "two")])
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    train_one, valid_one = first_epoch(tmp_path / "one")
    train_two, valid_two = first_epoch(tmp_path / "two")
    assert train_two == pytest.approx(train_one, rel=rel)
    assert valid_two == pytest.approx(valid_one, rel=10 * rel)


def test_global_batchnorm_keeps_the_variance_of_bfloat16_activations(tmp_path):
    """Activations far from zero (mean 100, std 1) in bfloat16: E[x^2] - mean^2 in bfloat16 loses every digit."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        x = (100 + torch.randn(8, 4, 16, 16)).bfloat16()
        reference = torch.nn.BatchNorm2d(4)(x.float())
        bn = GlobalBatchNorm2d(4)
        out = bn(x)
        assert torch.isfinite(out).all()
        assert (out.float() - reference).abs().max() < 0.05
        assert bn.running_var.sub(0.9 + 0.1 * x.float().var(dim=(0, 2, 3))).abs().max() < 0.01
    finally:
        dist.destroy_process_group()


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_pid(launcher: int, rank: int) -> int | None:
    for pid in descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


def start_torchrun(folder: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           "--dataset", "demo", "--device", "cpu", "--batch-size", "8", *HALF_WIDTH, "--checkpoint-dir", str(folder),
           *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_to_one_rank_stops_the_whole_job_at_the_same_step(demo_root, tmp_path):
    proc = start_torchrun(tmp_path, ["--epochs", "1000"])
    deadline = time.time() + 180
    while not (tmp_path / "history.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    rank1 = rank_pid(proc.pid, 1)
    assert rank1 is not None and proc.poll() is None
    os.kill(rank1, signal.SIGTERM)
    sent = time.time()
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not end after SIGTERM to rank 1")
    assert proc.returncode == 0, err[-2000:]
    assert time.time() - sent < 30
    assert "stopped on request" in out
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] >= 2


def test_budget_stop_ends_every_rank_with_a_checkpoint(demo_root, tmp_path):
    started = time.time()
    proc = start_torchrun(tmp_path, ["--max-minutes", "0.2"])
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert "budget" in out
    assert time.time() - started < 120
    assert read_checkpoint(tmp_path / "last.pt")["epoch"] >= 1
