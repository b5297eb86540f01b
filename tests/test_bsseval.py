"""bsseval.py against museval itself: the same frames, the same NaN frames, the same numbers."""

from unittest import mock

import museval
import numpy as np
import pytest
from helpers import shared_path

import bsseval

RATE = 8000  # made cases: museval's cost grows with the rate, its rules do not


def both(references: np.ndarray, estimates: np.ndarray, window: int = RATE) -> tuple[np.ndarray, np.ndarray]:
    """(SDR, ISR, SIR, SAR) stacked as (4, sources, frames): museval's, then ours."""
    theirs = museval.evaluate(list(references), list(estimates), win=window, hop=window, mode="v4")
    ours = bsseval.bss_eval_v4(references, estimates, window, window)
    return np.stack(theirs), np.stack(ours)


def assert_agree(theirs: np.ndarray, ours: np.ndarray) -> float:
    """The issue's tolerances; returns the largest ISR / SIR / SAR difference (dB)."""
    assert ours.shape == theirs.shape
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    finite = np.isfinite(theirs)
    diff = np.abs(np.where(finite, ours - theirs, 0))  # (4, sources, frames)
    assert diff[0].max() < 1e-6  # SDR per frame: it needs no filter at all
    others = diff[1:][finite[1:]]
    assert np.mean(others < 0.01) >= 0.999, f"largest ISR/SIR/SAR difference {others.max():.4f} dB"
    with np.errstate(all="ignore"):
        medians = np.nanmedian(ours, axis=-1) - np.nanmedian(theirs, axis=-1)  # (4, sources)
    assert np.all(np.abs(medians[np.isfinite(medians)]) < 0.01)
    return float(others.max(initial=0.0))


def made_track(seconds: float, channels: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two references (white and brown noise) and estimates that leak, echo and add noise:
    (sources, samples, channels) each, float32 as read from a file."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    white = rng.standard_normal((samples, channels))
    brown = np.cumsum(rng.standard_normal((samples, channels)), axis=0) * 0.05
    references = np.stack([white, brown])
    estimates = references + 0.3 * references[::-1] + 0.05 * rng.standard_normal(references.shape)
    estimates[:, 3:] += 0.2 * estimates[:, :-3]  # an echo 3 samples later: the filters must find it
    return references.astype(np.float32), estimates.astype(np.float32)


def test_matches_museval_on_made_sources_with_leaks_and_echoes():
    largest = assert_agree(*both(*made_track(6.3)))
    assert largest < 1e-6  # in practice the two agree to rounding


def test_a_silent_stretch_gives_the_same_nan_frames():
    references, estimates = made_track(5)
    references[0, RATE:2 * RATE + 100] = 0  # frame 1 of the first reference is silent
    estimates[1, 3 * RATE:4 * RATE] = 0  # frame 3 of the second estimate too
    theirs, ours = both(references, estimates)
    assert_agree(theirs, ours)
    assert np.isnan(ours[:, :, [1, 3]]).all() and not np.isnan(ours[:, :, [0, 2, 4]]).any()


def test_one_silent_channel_and_identical_channels_agree():
    references, estimates = made_track(4)
    silent = references.copy()
    silent[1, :, 1] = 0
    assert_agree(*both(silent, estimates))
    twin, twin_estimates = references.copy(), estimates.copy()
    twin[..., 1], twin_estimates[..., 1] = twin[..., 0], twin_estimates[..., 0]
    assert_agree(*both(twin, twin_estimates))


def test_exactly_singular_normal_equations_fall_back_to_lstsq_as_museval_does():
    """museval solves (G + eps I) c = D and takes lstsq(G, D) where numpy's solve finds G + eps I
    exactly singular. With FFT-computed correlations real audio never gets there (identical
    channels included: rounding breaks the tie), so the rule is checked on a Gram matrix that is."""
    gram = np.full((4, 4), 2.0)  # rank 1; eps is lost against 2.0, so the pivots are exactly 0
    rhs = np.arange(8.0).reshape(4, 2)
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.solve(gram + np.finfo(float).eps * np.eye(4), rhs)
    with mock.patch("numpy.linalg.lstsq", wraps=np.linalg.lstsq) as lstsq:
        result = bsseval.solve(gram, rhs)
    assert lstsq.call_count == 1
    np.testing.assert_array_equal(result, np.linalg.lstsq(gram, rhs)[0])
    regular = gram + np.diag([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(bsseval.solve(regular, rhs), np.linalg.solve(regular, rhs), rtol=1e-12)


def test_an_estimate_equal_to_its_reference_is_perfect_in_both():
    references, _ = made_track(3)
    theirs, ours = both(references, references.copy())
    assert np.isinf(theirs[0]).all() and np.isinf(ours[0]).all()  # SDR: no error at all
    assert (theirs[1:] > 200).all() and (ours[1:] > 200).all()  # the rest: rounding noise, far above any model


@pytest.mark.parametrize("case", ["shorter than one frame", "mono", "estimates shorter", "estimates longer"])
def test_edge_shapes_agree(case):
    references, estimates = made_track(4.6, channels=1 if case == "mono" else 2)
    if case == "shorter than one frame":
        references, estimates = references[:, : RATE // 2], estimates[:, : RATE // 2]
    elif case == "estimates shorter":
        estimates = estimates[:, :-1000]
    elif case == "estimates longer":
        estimates = np.concatenate([estimates, estimates[:, :700]], axis=1)
    theirs, ours = both(references, estimates)
    assert_agree(theirs, ours)
    assert ours.shape[-1] == (1 if case == "shorter than one frame" else 4)


def test_silent_sources_are_refused_as_museval_refuses_them():
    references, estimates = made_track(2)
    references[1] = 0
    with pytest.raises(ValueError):
        museval.evaluate(list(references), list(estimates), win=RATE, hop=RATE)
    with pytest.raises(ValueError, match="non-silent"):
        bsseval.bss_eval_v4(references, estimates, RATE, RATE)


def test_matches_museval_on_musdb18_previews_separated_by_the_shipped_model():
    """Real songs at 44.1 kHz with real estimates: five test previews from ../shared."""
    from separation import SHIPPED_MIR1K, separate_array
    from tracks import load_tracks
    from unet_model import load_model

    model, cfg = load_model(SHIPPED_MIR1K)
    tracks = load_tracks("musdb", shared_path("musdb18-preview"), "test")[:5]
    largest = 0.0
    for track in tracks:
        mixture, vocals, rate = track.load()
        estimate = separate_array(model, cfg, mixture, rate)
        references = np.stack([vocals.T, (mixture - vocals).T])  # (sources, samples, channels)
        estimates = np.stack([estimate.T, (mixture - estimate).T])
        largest = max(largest, assert_agree(*both(references, estimates, rate)))
    assert largest < 0.01
