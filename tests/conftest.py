"""Shared fixtures: the demo set and one short demo training run."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import HALF_WIDTH

import train
from demo_data import make_demo


@pytest.fixture(scope="session")
def demo_root() -> Path:
    return make_demo()


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    """Checkpoint folder of a short CPU training run on the demo set at half the width (under a
    minute; at the default width 2-3 minutes): what the tests of it check is behaviour (it
    learns, it beats the mixture, it separates, exports and resumes), not the default's quality."""
    out = tmp_path_factory.mktemp("trained")
    train.train(train.parse_args(["--dataset", "demo", "--epochs", "12", "--checkpoint-dir", str(out),
                                  "--device", "cpu", "--lr", "2e-3", *HALF_WIDTH]))
    return out


@pytest.fixture(scope="session")
def checkpoint(trained: Path) -> Path:
    return trained / "best.pt"


@pytest.fixture(scope="session")
def fullband_checkpoint(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Path:
    """A model trained at 44.1 kHz that sees the whole band (n_fft 1024, hop 256: 513 bins up to
    22 kHz) on the demo set, briefly (about a minute at half the width), with the L1 loss the
    README advises for full-band training (the SDR loss, a squared error on the waveform, leaves
    the quiet band above 8 kHz to the accompaniment: 26 % of the sibilants' energy in the vocals
    after this training at the default width)."""
    out = tmp_path_factory.mktemp("fullband")
    train.train(train.parse_args(["--dataset", "demo", "--epochs", "12", "--checkpoint-dir", str(out),
                                  "--device", "cpu", "--lr", "2e-3", "--set", "audio.sample_rate=44100",
                                  "--set", "train.loss=magnitude", *HALF_WIDTH]))
    return out / "best.pt"
