"""Channel simulation: send a sample of q = N(μ_q, σ_q²) using p = N(μ_p, σ_p²) at about KL(q‖p) bits.

Poisson functional representation (Li & El Gamal 2018) with shared randomness,
truncated to K candidates:

* Both sides derive candidates z_k = μ_p + σ_p ε_k from a shared key.  The ε_k
  are *shifted windows* ε_k = G[k : k+d] of one long seeded normal sequence G, so
  each ε_k is exactly N(0, I_d) while all K log-weights come from two FFT
  cross-correlations and only K + d normals are drawn (shared/notes/channel-simulation.md).
* The encoder draws arrival times T_k = E_1 + … + E_k, E_i ~ Exp(1) (private), and
  sends k* = argmin_k log T_k − log w_k with w_k = q(z_k)/p(z_k).  As K → ∞, z_{k*}
  is an exact sample of q.
* log w(ε) = Σ_i a_i ε_i² + b_i ε_i + c_i with r = σ_p/σ_q, m = (μ_q − μ_p)/σ_q:
  a = (1 − r²)/2, b = r m, c = log r − m²/2.

The decoder regenerates the window k* only.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import scipy.fft
import torch

from . import exactmath
from .rng import _INV_2_53, normals, normals_exact, normals_float32, raw_uint64, stream_key


def chunk_signs(key: np.ndarray, d: int) -> np.ndarray:
    """Shared random ±1 per dimension of a chunk.

    Candidate ε_k = s ⊙ G[k : k+d] is still exactly N(0, I_d), but neighbouring windows no longer
    correlate through the structure of δ (smooth or constant shifts would otherwise make nearby
    windows near-duplicates and pull the chosen sample toward p).
    """
    bits = raw_uint64(stream_key(int(key[0]), int(key[1]), 0x5167), 0, d) >> np.uint64(63)
    return 1.0 - 2.0 * bits.astype(np.float64)


def log_weight_coefficients(
    mu_q: np.ndarray, sigma_q: np.ndarray, mu_p: np.ndarray, sigma_p: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """(a, b, Σc) of log q(z)/p(z) as a quadratic in ε = (z − μ_p)/σ_p, in nats."""
    r = sigma_p / sigma_q
    m = (mu_q - mu_p) / sigma_q
    return 0.5 * (1.0 - r * r), r * m, float(np.sum(np.log(r) - 0.5 * m * m))


def kl_nats(mu_q: np.ndarray, sigma_q: np.ndarray, mu_p: np.ndarray, sigma_p: np.ndarray) -> np.ndarray:
    """Elementwise KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) in nats."""
    return np.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5


def _correlate(sequence_fft: np.ndarray, coeffs: np.ndarray, n_fft: int, count: int) -> np.ndarray:
    """out[k] = Σ_j coeffs[j] · seq[k + j] for k < count, by FFT (no wrap-around when n_fft ≥ count + d − 1)."""
    kernel = np.fft.rfft(coeffs[::-1], n_fft)
    full = np.fft.irfft(sequence_fft * kernel, n_fft)
    d = len(coeffs)
    return full[d - 1 : d - 1 + count]


def window_log_weights(sequence: np.ndarray, a: np.ndarray, b: np.ndarray, c_sum: float, count: int) -> np.ndarray:
    """log w_k for the ``count`` windows ε_k = sequence[k : k+d]."""
    d = len(b)
    n_fft = 1 << math.ceil(math.log2(count + d - 1))
    logw = _correlate(np.fft.rfft(sequence, n_fft), b, n_fft, count)
    if np.any(a != 0.0):
        logw += _correlate(np.fft.rfft(sequence * sequence, n_fft), a, n_fft, count)
    return logw + c_sum


def log_arrivals(rng: np.random.Generator, n: int) -> np.ndarray:
    """log T_1 … log T_n of a unit-rate Poisson process (the encoder's private randomness), float32.

    Private, so float32 is enough, and its log is several times faster here: a relative error of ~1e-7
    in log T_k can only reorder near-ties.
    """
    return np.log(np.cumsum(rng.standard_exponential(n, dtype=np.float32)))


def pfr_select(log_weights: np.ndarray, rng: np.random.Generator) -> int:
    """k* = argmin_k log T_k − log w_k with private Poisson arrival times T_k."""
    return int(np.argmin(log_arrivals(rng, len(log_weights)) - log_weights))


def encode_chunk(
    key: np.ndarray,
    mu_q: np.ndarray,
    sigma_q: np.ndarray,
    mu_p: np.ndarray,
    sigma_p: np.ndarray,
    num_candidates: int,
    rng: np.random.Generator,
) -> tuple[int, np.ndarray]:
    """Choose k* among ``num_candidates`` windows; returns (k*, ε_{k*}) so the caller forms z = μ_p + σ_p ε."""
    d = len(mu_q)
    a, b, c_sum = log_weight_coefficients(mu_q, sigma_q, mu_p, sigma_p)
    signs = chunk_signs(key, d)
    sequence = normals(key, 0, num_candidates + d - 1)
    k = pfr_select(window_log_weights(sequence, a, b * signs, c_sum, num_candidates), rng)
    return k, signs * sequence[k : k + d]


def decode_chunk(key: np.ndarray, k: int, d: int, normals: Callable[[np.ndarray, int, int], np.ndarray] = normals) -> np.ndarray:
    """ε_k = s ⊙ G[k : k+d] for the shared key: what the decoder needs to form z = μ_p + σ_p ε.

    ``normals``: the format version's generator (``rng.normals_exact`` from version 5).
    """
    return chunk_signs(key, d) * normals(key, k, d)


def decode_chunks(keys: list[np.ndarray], indices: list[int], sizes: list[int],
                  normals: Callable[[np.ndarray, int, int], np.ndarray] = normals) -> list[np.ndarray]:
    """:func:`decode_chunk` for each chunk of a step, the same arrays.  With ``rng.normals_exact`` (version 5 on)
    the exact logarithms and sines of all the chunks' Box–Muller pairs are computed in one pass, where one call per
    chunk paid their ~100 array operations per chunk (elementwise: the same bits)."""
    if normals is not normals_exact:
        return [decode_chunk(key, k, d, normals) for key, k, d in zip(keys, indices, sizes)]
    return [chunk_signs(key, d) * eps for key, d, eps in zip(keys, sizes, normals_exact_many(keys, indices, sizes))]


def normals_exact_many(keys: list[np.ndarray], starts: list[int], counts: list[int]) -> list[np.ndarray]:
    """``[rng.normals_exact(key, start, count) ...]``: the same Philox pairs, Box–Muller with ``exactmath``'s log
    and sin/cos, on all of them at once (tests/test_channel.py checks it against ``normals_exact``)."""
    u1s, u2s, spans = [], [], []
    for key, start, count in zip(keys, starts, counts):
        if count <= 0:
            spans.append(None)
            continue
        first_pair, last_pair = start // 2, (start + count - 1) // 2
        raw = raw_uint64(key, 2 * first_pair, 2 * (last_pair - first_pair + 1)).reshape(-1, 2)
        u1s.append(((raw[:, 0] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53)
        u2s.append(((raw[:, 1] >> np.uint64(11)).astype(np.float64) + 0.5) * _INV_2_53)
        spans.append((len(raw), start - 2 * first_pair, count))
    if not u1s:
        return [np.zeros(0) for _ in keys]
    u1, u2 = torch.from_numpy(np.concatenate(u1s)), torch.from_numpy(np.concatenate(u2s))
    radius = torch.sqrt(exactmath.log(u1) * -2.0)
    sin, cos = exactmath.sincos_turns(u2)
    flat = torch.stack([radius * cos, radius * sin], dim=1).numpy().reshape(-1)
    out, at = [], 0
    for span in spans:
        if span is None:
            out.append(np.zeros(0))
            continue
        pairs, skip, count = span
        out.append(flat[2 * at + skip: 2 * at + skip + count])
        at += pairs
    return out


def fft_size(num_candidates: int, d: int) -> int:
    """FFT length for at least ~90% of ``num_candidates`` windows of ``d`` dimensions (a power of two)."""
    n = 1 << math.ceil(math.log2(num_candidates + d - 1))
    if n // 2 - d + 1 >= 0.9 * num_candidates:
        n //= 2  # slightly fewer candidates for half the work
    return n


def encode_chunks(
    keys: list[np.ndarray],
    coefficients: list[tuple[np.ndarray, np.ndarray, float]],
    num_candidates: list[int],
    rng: np.random.Generator,
    max_batch_values: int = 1 << 22,
    workers: int = 1,
) -> list[int]:
    """PFR indices for many chunks at once; chunks with the same FFT length share one batched FFT.

    ``coefficients[j]`` is (a, b, Σc) from :func:`log_weight_coefficients`.  Chunk j searches the
    ``fft_size(K_j, d_j) − d_j + 1`` windows that fit in its FFT (about K_j; all are valid candidates).
    Arrival times are drawn chunk by chunk in input order, so the result depends neither on batching
    nor on ``workers`` (threads searching batches in parallel: numpy's and scipy's FFTs and ufuncs release
    the GIL).  Chunks are batched as they come and each batch is searched once full, so memory stays
    bounded by a few batches however many chunks a step has (a megapixel step has tens of thousands,
    and their arrival times alone would take gigabytes).
    """
    dims = [max(1, len(c[1])) for c in coefficients]  # an empty chunk searches windows of nothing
    sizes = [fft_size(k, d) for k, d in zip(num_candidates, dims)]
    per_batch = {n: max(1, min(max_batch_values // n, -(-count // workers))) for n, count in Counter(sizes).items()}
    arrivals: dict[int, np.ndarray] = {}

    def search(n_fft: int, group: list[int]) -> list[tuple[int, int]]:
        # float32 throughout: the search only ranks candidates (errors ~1e-5 nats can only reorder
        # near-ties), and scipy's float32 FFTs are about twice as fast as float64 ones.
        seq = np.stack([normals_float32(keys[j], n_fft) for j in group])
        a = np.zeros((len(group), n_fft), dtype=np.float32)
        b = np.zeros((len(group), n_fft), dtype=np.float32)
        for row, j in enumerate(group):
            aj, bj, _ = coefficients[j]
            a[row, : len(aj)] = aj
            b[row, : len(bj)] = bj * chunk_signs(keys[j], len(bj))
        # corr[k] = Σ_i coeff[i] · seq[k + i]; no wrap-around for k ≤ n_fft − d.  Both correlations
        # are summed in the frequency domain: one inverse transform instead of two.
        spectrum = scipy.fft.rfft(seq, axis=1) * np.conj(scipy.fft.rfft(b, axis=1))
        if np.any(a != 0.0):
            spectrum += scipy.fft.rfft(seq * seq, axis=1) * np.conj(scipy.fft.rfft(a, axis=1))
        logw = scipy.fft.irfft(spectrum, n_fft, axis=1)
        # c is the same for every window of a chunk, so it does not move the argmin.
        return [(j, int(np.argmin(arrivals.pop(j) - logw[row, : n_fft - dims[j] + 1])))
                for row, j in enumerate(group)]

    out = [0] * len(keys)
    pending: dict[int, list[int]] = {}
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    in_flight: deque = deque()

    def record(found: list[tuple[int, int]]) -> None:
        for j, k in found:
            out[j] = k

    def submit(n_fft: int) -> None:
        group = pending.pop(n_fft)
        if pool is None:
            record(search(n_fft, group))
            return
        in_flight.append(pool.submit(search, n_fft, group))
        while len(in_flight) > 2 * workers:  # bound the batches (and arrival times) held at once
            record(in_flight.popleft().result())

    try:
        for j, (n_fft, d) in enumerate(zip(sizes, dims)):
            arrivals[j] = log_arrivals(rng, n_fft - d + 1)
            pending.setdefault(n_fft, []).append(j)
            if len(pending[n_fft]) >= per_batch[n_fft]:
                submit(n_fft)
        for n_fft in list(pending):
            submit(n_fft)
        while in_flight:
            record(in_flight.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return out
