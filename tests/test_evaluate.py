"""evaluate.py: museval on MUSDB18, BSS Eval v3 on MIR-1K, resuming, workers, bad input."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, run_main, shared_path

import evaluate

DATA = Path(__file__).resolve().parent / "data"


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


def group_ends_within(group: int, seconds: float) -> bool:
    """Whether every process of a process group has ended (and been reaped) within `seconds`."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def started_until_first_score(cmd, scores):
    """evaluate.py started in its own process group (to find its children after it), returned once
    a first track's JSON exists in `scores`."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and not list(scores.glob("*.json")):
        time.sleep(0.05)
    return proc


def resumes_without_rescoring(cmd, scores, expected):
    """The same command again: it ends with `expected` JSONs, and those already there are untouched."""
    finished = {p: p.stat().st_mtime_ns for p in scores.glob("*.json")}
    assert finished
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list(scores.glob("*.json"))) == expected
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in finished.items())


def kill_after_first_score_then_resume(argv, scores, expected):
    """Start evaluate.py, SIGKILL it once a first JSON exists, run it again: finished JSONs are kept,
    and no scoring process outlives the killed run."""
    cmd = [sys.executable, "evaluate.py", *argv]
    proc = started_until_first_score(cmd, scores)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert group_ends_within(proc.pid, 10), "a scoring process outlived the killed evaluate.py"
    resumes_without_rescoring(cmd, scores, expected)


def test_an_output_folder_of_another_model_or_setting_is_refused_not_mixed(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    args = ["--dataset", "mir1k", "--root", str(root), "--out-dir", str(tmp_path), "--tracks", "1", "--device", "cpu"]
    assert run_main(evaluate.main, [*args, "--checkpoint", str(checkpoint)])[0] == 0
    scores = (tmp_path / "clips").glob("*.json")
    stamps = {p: p.stat().st_mtime_ns for p in scores}
    assert len(stamps) == 1
    other = tmp_path.parent / "other.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["model"] = {k: v * 1.01 if v.is_floating_point() else v for k, v in payload["model"].items()}
    torch.save(payload, other)
    for changed in (["--checkpoint", str(other)],
                    ["--checkpoint", str(checkpoint), "--set", "separation.patch_overlap=0.75"]):
        code, _, err = run_main(evaluate.main, [*args, *changed])
        assert code == 1 and "holds scores of another model or other settings" in err and err.count("\n") == 1
    record = tmp_path / "scored-with.json"
    kept = record.read_text()
    record.unlink()  # scores of a model nobody recorded: not trusted either
    code, _, err = run_main(evaluate.main, [*args, "--checkpoint", str(checkpoint)])
    assert code == 1 and "no record of the model that made them" in err and err.count("\n") == 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing rescored, nothing removed
    record.write_text(kept)
    assert run_main(evaluate.main, [*args, "--checkpoint", str(checkpoint)])[0] == 0  # its own model resumes


def test_killed_evaluation_resumes_without_rescoring_finished_tracks(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    kill_after_first_score_then_resume(["--dataset", "mir1k", "--root", str(root), "--checkpoint", str(checkpoint),
                                        "--out-dir", str(tmp_path), "--tracks", "8", "--device", "cpu"],
                                       tmp_path / "clips", 8)


def test_killed_evaluation_of_own_stems_resumes_with_two_workers(checkpoint, demo_root, tmp_path):
    kill_after_first_score_then_resume(["--dataset", "stems", "--root", str(demo_root), "--checkpoint",
                                        str(checkpoint), "--out-dir", str(tmp_path), "--tracks", "3", "--workers",
                                        "2", "--device", "cpu"], tmp_path / "museval" / "test", 3)
    assert not (tmp_path / "estimates").exists()  # scored estimates are not kept by default


def medians(summary):
    return {(r["target"], r["metric"]): r["median"] for r in summary}


def test_estimates_on_disk_count_as_separated(checkpoint, demo_root, tmp_path, monkeypatch):
    kwargs = dict(dataset="stems", root=str(demo_root), out_dir=tmp_path, tracks=2, device="cpu")
    first = evaluate.evaluate_model(checkpoint, keep_estimates=True, **kwargs)
    estimates = sorted(p.relative_to(tmp_path) for p in (tmp_path / "estimates").rglob("*.wav"))
    assert [str(p) for p in estimates] == [f"estimates/demo-test-0{i}/{t}.wav" for i in (0, 1)
                                           for t in ("accompaniment", "vocals")]
    for path in (tmp_path / "museval" / "test").glob("*.json"):
        path.unlink()

    def no_separation(*args):
        raise AssertionError("separated again")

    monkeypatch.setattr(evaluate, "separate_to_disk", no_separation)
    again = evaluate.evaluate_model(checkpoint, workers=2, **kwargs)
    assert medians(again) == pytest.approx(medians(first))


def test_summary_equals_museval_aggregation_on_stored_scores():
    """Three stored museval JSONs (with a NaN frame each): per-track medians over frames, then medians over
    tracks, as museval's EvalStore gives them, and the numbers they must stay."""
    import museval
    from museval.aggregate import json2df

    scores = {p.stem: p.read_text() for p in sorted(DATA.glob("made-up track *.json"))}
    assert len(scores) == 3
    rows, summary = (table.to_dict("records") for table in evaluate.museval_tables(scores))
    store = museval.EvalStore()
    for name, text in scores.items():
        store.add_track(json2df(json.loads(text), name))
    per_track = store.agg_frames_scores()
    for row in rows:
        for m in evaluate.METRICS:
            assert row[m] == pytest.approx(per_track[row["track"], row["target"], m], abs=1e-9)
    overall = store.agg_frames_tracks_scores()
    medians = {(r["target"], r["metric"]): r["median"] for r in summary}
    assert medians == pytest.approx({key: overall[key] for key in medians}, abs=1e-9)
    assert medians["vocals", "SDR"] == pytest.approx(10.4273, abs=1e-4)
    assert medians["vocals", "SIR"] == pytest.approx(9.1402, abs=1e-4)
    assert medians["accompaniment", "SDR"] == pytest.approx(9.8882, abs=1e-4)
    assert medians["accompaniment", "SAR"] == pytest.approx(14.229, abs=1e-4)
    means = {(r["target"], r["metric"]): r["mean"] for r in summary}
    assert means["vocals", "SDR"] == pytest.approx(14.0587, abs=1e-4)
    assert [r["SDR"] for r in rows if r["target"] == "vocals"] == pytest.approx([23.5258, 10.4273, 8.2229], abs=1e-4)


def made_clip(seconds, rate, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    vocals = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.01 * np.sin(2 * np.pi * 5 * t)))
    accompaniment = 0.2 * rng.standard_normal(len(t))
    estimate = vocals + 0.1 * accompaniment + 0.01 * rng.standard_normal(len(t))
    return np.stack([vocals, accompaniment]), np.stack([estimate, vocals + accompaniment - estimate])


def test_bss_eval_v3_agrees_with_mir_eval_on_made_clips():
    mir_eval = pytest.importorskip("mir_eval")
    for seed in range(2):
        references, estimates = made_clip(2.0, 16000, seed)
        ours = evaluate.bss_eval_v3(references, estimates)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(references, estimates, compute_permutation=False)
        for metric, theirs in (("SDR", sdr), ("SIR", sir), ("SAR", sar)):
            assert ours[metric] == pytest.approx(theirs, abs=0.01)


def test_bss_eval_v3_agrees_with_mir_eval_on_mir1k_clips():
    mir_eval = pytest.importorskip("mir_eval")
    from tracks import load_tracks

    for track in load_tracks("mir1k", shared_path("MIR-1K"), "test")[:2]:
        mixture, vocals, _ = track.load()
        references = np.concatenate([vocals, mixture - vocals]).astype(np.float64)
        estimates = np.stack([0.7 * vocals[0] + 0.2 * mixture[0], 0.3 * vocals[0] + 0.8 * (mixture - vocals)[0]])
        ours = evaluate.bss_eval_v3(references, estimates)
        sdr, sir, sar, _ = mir_eval.separation.bss_eval_sources(references, estimates, compute_permutation=False)
        for metric, theirs in (("SDR", sdr), ("SIR", sir), ("SAR", sar)):
            assert ours[metric] == pytest.approx(theirs, abs=0.01)


def test_workers_that_do_not_fit_in_memory_are_cut_with_a_warning(monkeypatch, capsys):
    tracks = [evaluate.Track(f"t{i}", None, lambda: 240.0) for i in range(5)]
    need = evaluate.BYTES_PER_SAMPLE["museval"] * 2 * 240 * 44100
    monkeypatch.setattr(evaluate, "available_memory", lambda: int(2.5 * need))
    assert evaluate.scoring_workers(4, tracks, "museval") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: 4 scoring processes need" in err and "using 2" in err
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert evaluate.scoring_workers(0, tracks, "museval") == 2  # auto: one per core, as many as fit
    assert evaluate.scoring_workers(0, tracks[:1], "museval") == 1  # never more than there are tracks
    monkeypatch.setattr(evaluate, "available_memory", lambda: 100 * need)
    assert evaluate.scoring_workers(0, tracks, "museval") == 3


def test_bad_roots_and_checkpoints_get_one_line(checkpoint, tmp_path):
    (tmp_path / "junk.pt").write_text("junk")
    cases = [(["--dataset", "musdb", "--root", str(tmp_path), "--checkpoint", str(checkpoint)], "not a MUSDB18", 1),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(checkpoint)], "not a MIR-1K", 1),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "junk.pt")],
              "not a valid checkpoint", 2),  # a model file that cannot be used: status 2
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(tmp_path / "no.pt")], "not found", 2),
             (["--dataset", "mir1k", "--root", str(tmp_path), "--checkpoint", str(checkpoint), "--set",
               "audio.hop_length=512"], "only separation settings", 1)]
    for argv, words, status in cases:
        code, _, err = run_main(evaluate.main, [*argv, "--out-dir", str(tmp_path / "out")])
        assert code == status and err.count("\n") == 1 and words in err, (argv, err)


def test_two_workers_give_the_same_scores_as_one(checkpoint, tmp_path):
    root = shared_path("MIR-1K")
    results = []
    for workers in (1, 2):
        summary = evaluate.evaluate_model(checkpoint, "mir1k", str(root), out_dir=tmp_path / str(workers),
                                          workers=workers, tracks=3, device="cpu")
        results.append({(r["target"], r["metric"]): r["weighted_mean"] for r in summary})
    assert results[0] == pytest.approx(results[1])


def test_two_workers_give_the_same_scores_as_one_on_own_stems(checkpoint, demo_root, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    used = []
    separate = evaluate.separate_to_disk
    monkeypatch.setattr(evaluate, "separate_to_disk", lambda *a: (used.append(torch.get_num_threads()), separate(*a)))
    results = [medians(evaluate.evaluate_model(checkpoint, "stems", str(demo_root), out_dir=tmp_path / str(n),
                                               workers=n, tracks=3, device="cpu")) for n in (1, 2)]
    assert results[0] == pytest.approx(results[1])
    # the network takes the cores no scorer is busy on (all of them for the first track), and gives them back
    one, two = max(1, threads - 1), max(1, threads - 2)
    assert used == [threads, one, one, threads, one, two]  # --workers 1, then 2
    assert torch.get_num_threads() == threads


def test_own_stems_folder_is_scored_with_museval(checkpoint, demo_root, tmp_path):
    code, _, err = run_main(evaluate.main, ["--dataset", "stems", "--root", str(demo_root), "--checkpoint",
                                              str(checkpoint), "--out-dir", str(tmp_path), "--tracks", "1",
                                              "--device", "cpu"])
    assert code == 0, err
    rows = read_csv(tmp_path / "tracks.csv")
    assert [r["target"] for r in rows] == ["vocals", "accompaniment"]
    assert all(math.isfinite(float(r["SDR"])) for r in rows)


def test_fast_and_museval_scorers_agree_are_recorded_and_never_mixed(checkpoint, demo_root, tmp_path):
    tables = {}
    for scorer in ("museval", "fast"):
        out = tmp_path / scorer
        code, text, err = run_main(evaluate.main, ["--dataset", "stems", "--root", str(demo_root), "--checkpoint",
                                                   str(checkpoint), "--out-dir", str(out), "--tracks", "2",
                                                   "--device", "cpu", "--scorer", scorer])
        assert code == 0, err
        assert f"scores: {evaluate.SCORER_NAMES[scorer]};" in text
        assert json.loads((out / "scored-with.json").read_text())["scorer"] == scorer
        tables[scorer] = read_csv(out / "tracks.csv")
    for fast, slow in zip(tables["fast"], tables["museval"]):
        assert (fast["track"], fast["target"]) == (slow["track"], slow["target"])
        for m in ("SDR", "SIR", "SAR", "ISR"):
            assert float(fast[m]) == pytest.approx(float(slow[m]), abs=1e-3)  # the CSV keeps 4 decimals
    code, _, err = run_main(evaluate.main, ["--dataset", "stems", "--root", str(demo_root), "--checkpoint",
                                            str(checkpoint), "--out-dir", str(tmp_path / "museval"), "--tracks", "3",
                                            "--device", "cpu"])  # the default, fast, into museval's folder
    assert code == 1 and err.count("\n") == 1 and "made by the museval scorer" in err, err
    assert len(list((tmp_path / "museval" / "museval" / "test").glob("*.json"))) == 2  # nothing added


def test_ctrl_c_stops_the_scorers_and_keeps_the_tracks_scored(checkpoint, demo_root, tmp_path):
    """SIGINT to evaluate.py's process group (what a terminal's Ctrl-C does) once a first track is
    scored: one line saying how many tracks are kept, status 130, no scorer left running, no
    half-written JSON; the same command then resumes and scores only the rest."""
    scores = tmp_path / "museval" / "test"
    cmd = [sys.executable, "evaluate.py", "--dataset", "stems", "--root", str(demo_root), "--checkpoint",
           str(checkpoint), "--out-dir", str(tmp_path), "--tracks", "3", "--workers", "2", "--device", "cpu",
           "--scorer", "museval"]
    proc = started_until_first_score(cmd, scores)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    kept = sorted(scores.glob("*.json"))
    assert err.startswith("interrupted by SIGINT: ") and f"{len(kept)} of 3 tracks are scored" in err
    assert group_ends_within(proc.pid, 10), "a scoring process outlived the interrupted evaluate.py"
    assert all(json.loads(p.read_text())["targets"] for p in kept)
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name]
    resumes_without_rescoring(cmd, scores, 3)
