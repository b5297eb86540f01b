"""evaluate.py: museval on MUSDB18, BSS Eval v3 on MIR-1K, resuming, workers, bad input."""

import csv
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_main, shared_path

import evaluate


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_musdb_sample_through_musdb_and_ffmpeg_writes_museval_csvs(checkpoint, tmp_path):
    root = shared_path("musdb18-sample")
    code, out, err = run_main(evaluate.main, ["--dataset", "musdb", "--root", str(root), "--checkpoint",
                                              str(checkpoint), "--out-dir", str(tmp_path), "--device", "cpu"])
    assert code == 0, err
    tracks = read_csv(tmp_path / "tracks.csv")
    assert [(r["track"], r["target"]) for r in tracks] == [("The Easton Ellises - Falcon 69", "vocals"),
                                                          ("The Easton Ellises - Falcon 69", "accompaniment")]
    for row in tracks:
        assert all(math.isfinite(float(row[m])) for m in ("SDR", "SIR", "SAR", "ISR"))
    summary = read_csv(tmp_path / "summary.csv")
    assert len(summary) == 8 and all(math.isfinite(float(r["median"])) for r in summary)
    assert (tmp_path / "museval" / "test" / "The Easton Ellises - Falcon 69.json").exists()
    assert (tmp_path / "sdr.png").exists()
    assert "vocals" in out and "SDR" in out


def test_mir1k_clips_give_gnsdr_and_resume_without_rescoring(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    args = ["--dataset", "mir1k", "--root", str(root), "--checkpoint", str(checkpoint), "--out-dir", str(tmp_path),
            "--device", "cpu"]
    code, out, err = run_main(evaluate.main, [*args, "--tracks", "2"])
    assert code == 0, err
    first = sorted((tmp_path / "clips").glob("*.json"))
    assert len(first) == 2
    stamps = [p.stat().st_mtime_ns for p in first]
    code, out, err = run_main(evaluate.main, [*args, "--tracks", "3", "--workers", "2"])
    assert code == 0, err
    assert [p.stat().st_mtime_ns for p in first] == stamps
    rows = read_csv(tmp_path / "tracks.csv")
    assert len(rows) == 6 and all(math.isfinite(float(r["NSDR"])) for r in rows)
    summary = {(r["target"], r["metric"]): r for r in read_csv(tmp_path / "summary.csv")}
    assert math.isfinite(float(summary["vocals", "NSDR"]["weighted_mean"]))
    assert "GNSDR" in out


def test_killed_evaluation_resumes_without_rescoring_finished_tracks(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    cmd = [sys.executable, "evaluate.py", "--dataset", "mir1k", "--root", str(root), "--checkpoint",
           str(checkpoint), "--out-dir", str(tmp_path), "--tracks", "8", "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    clips = tmp_path / "clips"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(clips.glob("*.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in clips.glob("*.json")}
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(clips.glob("*.json"))) == 8
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())


def test_bad_roots_and_checkpoints_get_one_line(checkpoint, tmp_path):
    (tmp_path / "junk.pt").write_text("junk")
    cases = [(["--dataset", "musdb", "--root", str(tmp_path), "--checkpoint", str(checkpoint)], "not a MUSDB18"),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(checkpoint)], "not a MIR-1K"),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "junk.pt")],
              "not a valid checkpoint"),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "no.pt")], "not found"),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(checkpoint), "--set",
               "audio.hop_length=512"], "only separation settings")]
    for argv, words in cases:
        code, _, err = run_main(evaluate.main, [*argv, "--out-dir", str(tmp_path / "out")])
        assert code == 1 and err.count("\n") == 1 and words in err, (argv, err)


def test_two_workers_give_the_same_scores_as_one(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    results = []
    for workers in (1, 2):
        summary = evaluate.evaluate_model(checkpoint, "mir1k", str(root), out_dir=tmp_path / str(workers),
                                          workers=workers, tracks=3, device="cpu")
        results.append({(r["target"], r["metric"]): r["weighted_mean"] for r in summary})
    assert results[0] == pytest.approx(results[1])


def test_own_stems_folder_is_scored_with_museval(checkpoint, demo_root, tmp_path):
    code, _, err = run_main(evaluate.main, ["--dataset", "stems", "--root", str(demo_root), "--checkpoint",
                                              str(checkpoint), "--out-dir", str(tmp_path), "--tracks", "1",
                                              "--device", "cpu"])
    assert code == 0, err
    rows = read_csv(tmp_path / "tracks.csv")
    assert [r["target"] for r in rows] == ["vocals", "accompaniment"]
    assert all(math.isfinite(float(r["SDR"])) for r in rows)
