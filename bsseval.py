"""BSS Eval v4 as museval computes it, in a fraction of its time and memory.

museval's `evaluate(..., mode="v4")` (`museval.metrics.bss_eval` with time-invariant filters,
the images version): each estimate is projected by least squares onto the references
delayed by 0..511 samples, with filters fitted once over the whole track; then per frame
(1 s windows and hops in MUSDB18's protocol) the frame's references are filtered, and
SDR / ISR / SIR / SAR compare the parts. This module computes the same numbers from the
same definitions, in float64, with museval's rules: a frame where any reference or estimate
is silent scores NaN, the normal equations get `+ eps * I` and fall back to `lstsq` when
they are exactly singular, estimates are cut or zero-padded to the references' length.
What differs is only how the work is done (benchmarks/evaluation.py measures both):

- the correlations at lags -511..511 come from block-wise real FFTs of 16384 points whose
  cross-spectra are summed over blocks before one inverse FFT, instead of complex FFTs of
  the next power of two above the track's length (2^24 points for 4 minutes);
- the references' Gram matrix is built and factorised once per track and serves every
  estimate; each estimate's correlations are computed once;
- the frames are filtered in batches, each frame's references transformed once for all
  estimates.

    sdr, isr, sir, sar = bss_eval_v4(references, estimates, window=44100, hop=44100)
    # references, estimates: one (samples, channels) array per source, as museval.evaluate takes
    # them (any float dtype; float32 as read from files is not copied); each result: (sources, frames)
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.fft
import scipy.linalg

FILTER_LENGTH = 512  # museval's filters_len: delays 0..511
BLOCK_FFT = 16384  # FFT size of the block-wise correlations
BLOCKS_PER_PASS = 16  # blocks transformed at once (about 0.4 MB per block and channel)
FRAMES_PER_BATCH = 8  # frames filtered at once (about 6 MB per frame for two stereo sources)

Sources = list[np.ndarray]  # one (samples, channels) array per source


def bss_eval_v4(references: Sources, estimates: Sources, window: int, hop: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SDR, ISR, SIR, SAR (sources, frames) of `estimates` against `references`, each a sequence
    of (samples, channels) arrays (or (samples,) for mono), exactly as `museval.evaluate(
    references, estimates, win=window, hop=hop, mode="v4")` defines them; estimates of another
    length are cut or zero-padded."""
    references = [as_channels(r) for r in references]
    samples = len(references[0])
    estimates = [match_length(as_channels(e), samples) for e in estimates]
    check_sources(references, estimates)
    filters, own_filters = distortion_filters(references, estimates)
    starts = frame_starts(window, hop, samples)
    length = min(window, samples)
    size = scipy.fft.next_fast_len(length + FILTER_LENGTH - 1, real=True)  # a frame's linear convolution
    # rows (estimate, reference source, reference channel, output channel) -> (..., F)
    filters_f = scipy.fft.rfft(filters.transpose(3, 0, 1, 4, 2), n=size, axis=-1, workers=1)
    own_f = scipy.fft.rfft(own_filters.transpose(0, 1, 3, 2), n=size, axis=-1, workers=1)  # (S, C, D, F)
    scores = np.empty((4, len(references), len(starts)))
    for first in range(0, len(starts), FRAMES_PER_BATCH):
        batch = starts[first:first + FRAMES_PER_BATCH]
        scores[:, :, first:first + len(batch)] = frame_scores(references, estimates, batch, length, size,
                                                              filters_f, own_f)
    sdr, isr, sir, sar = scores
    return sdr, isr, sir, sar


def as_channels(source: np.ndarray) -> np.ndarray:
    """(samples,) or (samples, channels) -> (samples, channels), a view."""
    source = np.asarray(source)
    return source[:, None] if source.ndim == 1 else source


def match_length(estimate: np.ndarray, samples: int) -> np.ndarray:
    """An estimate cut or zero-padded at the end to the references' length (museval's pad_or_truncate)."""
    if len(estimate) >= samples:
        return estimate[:samples]
    return np.pad(estimate, [(0, samples - len(estimate)), (0, 0)])


def silent(source: np.ndarray) -> np.ndarray:
    """(..., samples, channels) -> (...): True where the channels sum to zero at every sample
    (museval's test, in the inputs' own dtype; the channels added one by one, as numpy's sum does
    for so few, which is much faster than a sum along the last axis)."""
    total = source[..., 0].copy()
    for c in range(1, source.shape[-1]):
        total += source[..., c]
    return ~np.any(total, axis=-1)


def check_sources(references: Sources, estimates: Sources) -> None:
    """museval's refusals: shapes that differ, and a reference or estimate silent over the whole track."""
    shapes = {r.shape for r in references} | {e.shape for e in estimates}
    if len(shapes) > 1 or len(references) != len(estimates):
        raise ValueError(f"references and estimates differ in shape or number: {sorted(shapes)}")
    if any(silent(source) for source in [*references, *estimates]):
        raise ValueError("every reference and every estimate must be non-silent (not all zeros)")


def frame_starts(window: int, hop: int, samples: int) -> list[int]:
    """First samples of museval's frames: whole windows only; one frame when the track is not longer."""
    if window >= samples:
        return [0]
    return [t * hop for t in range((samples - window + hop) // hop)]


# ---------------------------------------------------------------- the filters, once per track


def distortion_filters(references: Sources, estimates: Sources) -> tuple[np.ndarray, np.ndarray]:
    """museval's least-squares filters: per estimate channel, the combination of the references
    delayed by 0..L-1 samples nearest to it, (sources, channels, L, estimates, channels), and
    the same onto its own reference alone, (estimates, channels, L, channels).

    The normal equations G c = D: G, the references' Gram matrix, is the same for every
    estimate, so it is built and factorised once; D holds the estimates' correlations."""
    sources, channels = len(references), references[0].shape[1]
    lags = correlations(references, [*references, *estimates])  # (P, 2P, 2L - 1)
    gram = reference_gram(lags[:, :len(lags)])
    rhs = estimate_correlations(lags[:, len(lags):])  # (S * C * L, S * C): a column per estimate channel
    filters = solve(gram, rhs).reshape(sources, channels, FILTER_LENGTH, sources, channels)
    own = np.empty((sources, channels, FILTER_LENGTH, channels))
    for j in range(sources):
        rows = slice(j * channels * FILTER_LENGTH, (j + 1) * channels * FILTER_LENGTH)  # reference j's delays
        own[j] = solve(gram[rows, rows], rhs[rows, j * channels:(j + 1) * channels]).reshape(
            channels, FILTER_LENGTH, channels)
    return filters, own


def block_spectra(sources: Sources, start: int, blocks: int, block: int, reach: int) -> np.ndarray:
    """(series, blocks, BLOCK_FFT // 2 + 1): the real FFT, in float64, of samples [start + b * block
    - reach, start + (b + 1) * block + reach) of each channel of each source (series, source-major)
    for each block b, zeros outside the signal."""
    samples, channels = sources[0].shape
    width = blocks * block + 2 * reach
    offset = start - reach  # the stretch's first sample in the signal
    lo, hi = max(0, offset), min(samples, offset + width)
    stretch = np.zeros((len(sources), channels, width))
    for i, source in enumerate(sources):
        stretch[i, :, lo - offset:hi - offset] = source[lo:hi].T
    stretch = stretch.reshape(-1, width)  # (series, width)
    # each block with its reach on both sides: overlapping windows of the stretch, a view, no copy
    segments = np.lib.stride_tricks.sliding_window_view(stretch, block + 2 * reach, axis=-1)[:, ::block]
    return scipy.fft.rfft(segments, n=BLOCK_FFT, axis=-1, workers=1)  # (series, blocks, F)


def correlations(x: Sources, ys: Sources) -> np.ndarray:
    """R[p, q, k] = sum_n x_p[n + k] y_q[n] for lags k = -(L - 1)..(L - 1) (at index k + L - 1),
    where p runs over the (source, channel) pairs of x and q over those of ys, zero outside the
    signals (L = FILTER_LENGTH).

    Overlap-save in blocks: each block of y against the stretch of x that reaches L - 1 samples
    further on both sides. A circular correlation of BLOCK_FFT points holds every lag of a block
    without wrapping, and the blocks' cross-spectra add up before one inverse FFT per pair."""
    reach = FILTER_LENGTH - 1
    block = BLOCK_FFT - 2 * reach
    samples, channels = x[0].shape
    total = np.zeros((len(x) * channels, len(ys) * channels, BLOCK_FFT // 2 + 1), dtype=complex)
    for start in range(0, samples, BLOCKS_PER_PASS * block):
        blocks = min(BLOCKS_PER_PASS, -(-(samples - start) // block))
        wide = block_spectra(x, start, blocks, block, reach)  # (P, blocks, F)
        narrow = block_spectra(ys, start, blocks, block, 0).conj()  # (Q, blocks, F)
        for b in range(blocks):
            total += wide[:, None, b] * narrow[None, :, b]  # (P, Q, F)
    return scipy.fft.irfft(total, n=BLOCK_FFT, axis=-1, workers=1)[..., : 2 * reach + 1]


def reference_gram(lags: np.ndarray) -> np.ndarray:
    """The Gram matrix of the references delayed by 0..L-1 samples from their correlations
    `lags` (P, P, 2L - 1), rows and columns ordered (source, channel, delay):
    G[(p, a), (q, b)] = <p delayed by a, q delayed by b> = R_pq[b - a]. Built from the pairs
    p <= q and their transposes, so it is exactly symmetric, as museval's."""
    n, length = len(lags), FILTER_LENGTH
    delay = np.arange(length)
    lag_index = delay[None, :] - delay[:, None] + length - 1  # (L, L): b - a, shifted to an index
    gram = np.empty((n, length, n, length))
    for p in range(n):
        for q in range(p, n):
            block = lags[p, q][lag_index]  # (L, L)
            gram[p, :, q, :] = block
            gram[q, :, p, :] = block.T
    return gram.reshape(n * length, n * length)


def estimate_correlations(lags: np.ndarray) -> np.ndarray:
    """D[(source, channel, delay), (estimate, channel)] = <reference channel delayed by `delay`,
    estimate channel>, from the correlations `lags` (P, Q, 2L - 1) of the references with the
    estimates: (S * C * L, S * C), the right-hand sides of the least-squares filters."""
    delayed = lags[:, :, FILTER_LENGTH - 1::-1]  # (P, Q, L): lag -delay for delay 0..L-1
    return delayed.transpose(0, 2, 1).reshape(-1, lags.shape[1])


def solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """museval's filters: solve(G + eps I, D), or lstsq(G, D) where G + eps I is exactly singular
    (a zero pivot: numpy's solve raises there)."""
    regularised = gram.copy()
    regularised.flat[:: len(gram) + 1] += np.finfo(float).eps
    with warnings.catch_warnings():  # an exactly singular matrix is handled below, not warned about
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        lu, pivots = scipy.linalg.lu_factor(regularised, overwrite_a=True, check_finite=False)
    if np.any(np.diag(lu) == 0):
        return np.linalg.lstsq(gram, rhs)[0]
    return scipy.linalg.lu_solve((lu, pivots), rhs, check_finite=False)


# ---------------------------------------------------------------- the frames


def frame_scores(references: Sources, estimates: Sources, starts: list[int], length: int, size: int,
                 filters_f: np.ndarray, own_f: np.ndarray) -> np.ndarray:
    """SDR, ISR, SIR, SAR (4, sources, frames) of the frames at `starts`, each `length` samples,
    given the filters' spectra at `size` points (see bss_eval_v4).

    For estimate j: the frame's references filtered by j's filters onto all references give
    the projection P; filtered by j's filters onto reference j alone, P_j. With s the frame of
    reference j and e that of estimate j, both zero-padded by L - 1 samples, museval's parts are
    e_spat = P_j - s, e_interf = P - P_j and e_artif = e - P (museval reaches the last two by
    subtracting the parts before them, equal to rounding), and SDR = |s|^2 / |e - s|^2,
    ISR = |s|^2 / |e_spat|^2, SIR = |P_j|^2 / |e_interf|^2, SAR = |P|^2 / |e_artif|^2."""
    sources, channels = len(references), references[0].shape[1]
    ref_frames = [np.stack([r[t:t + length] for t in starts]) for r in references]  # (T, length, C), inputs' dtype
    est_frames = [np.stack([e[t:t + length] for t in starts]) for e in estimates]
    quiet = np.any([silent(frames) for frames in [*ref_frames, *est_frames]], axis=0)  # (T,)
    ref = np.stack(ref_frames).transpose(0, 3, 1, 2).astype(float)  # (S, C, T, length)
    est = np.stack(est_frames).transpose(0, 3, 1, 2).astype(float)
    spectra = scipy.fft.rfft(ref, n=size, axis=-1, workers=1)  # (S, C, T, F)
    span = length + FILTER_LENGTH - 1  # samples of a filtered frame
    out = np.empty((4, sources, len(starts)))
    for j in range(sources):
        # per output channel d: the sum over reference sources i and channels c of spectrum x filter
        projection = sum(spectra[i, c, None] * filters_f[j, i, c, :, None]  # (D, T, F) each
                         for i in range(sources) for c in range(channels))
        projection_own = sum(spectra[j, c, None] * own_f[j, c, :, None] for c in range(channels))
        full = scipy.fft.irfft(projection, n=size, axis=-1, workers=1)[..., :span]  # (D, T, span): P
        mine = scipy.fft.irfft(projection_own, n=size, axis=-1, workers=1)[..., :span]  # P_j
        e_spat = mine.copy()
        e_spat[..., :length] -= ref[j]
        e_artif = -full
        e_artif[..., :length] += est[j]
        target = energy(ref[j])
        out[:, j] = [safe_db(target, energy(est[j] - ref[j])), safe_db(target, energy(e_spat)),
                     safe_db(energy(mine), energy(full - mine)), safe_db(energy(full), energy(e_artif))]
    out[:, :, quiet] = np.nan
    return out


def energy(parts: np.ndarray) -> np.ndarray:
    """(channels, frames, samples) -> (frames,): sums of squares."""
    return np.einsum("cts,cts->t", parts, parts)


def safe_db(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """10 log10(num / den) per frame; +inf where den is 0 (museval's _safe_db)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den == 0, np.inf, 10 * np.log10(num / np.where(den == 0, 1, den)))
