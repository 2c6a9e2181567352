"""Channel simulation: where the simulated steps' overhead over their KL comes from, and what the alternatives cost.

    python bench/channel_alternatives.py --count 100 --out bench/results/channel_alternatives.json

A research study (issue 19, "The simulated steps closer to their KL"): nothing here changes the format or
diffcodec's behaviour.  On validation images (training-set indices 3500…, never the test PNGs) it

1. **traces** the default encoder (``diffcodec.codec.encode``, format 5, one torch and one search thread): for
   every coded step x_T … x_exact_from it records the real per-dimension q = N(μ_q, σ_q²) and p_θ = N(μ_p, σ_p²),
   the step's symbols (level, chunks, class, indices) and the sample sent, and for every prefix its real bits
   (header + table + words), payload bits and RMSE.  Traces are cached (``--cache``) so the analyses rerun fast;
   ``--gains`` traces other target gains too (encoder-only parameter, same format);
2. **splits the overhead** of today's PFR code step by step: the level symbol, each index's exponent (adaptive
   categorical) and mantissa (raw bits), as information content under the stream's own adaptive models replayed
   on the symbols (format 6's, diffcodec.step_code.AdaptiveStepCode), against the step's KL and the KL of the gain's target; the
   range coder's words (look-ahead word, rounding) come on top in each prefix;
3. **(a) better index codes** with the same indices (same trajectory, same images at every prefix): static
   exponent tables fitted on the other half of the images (2-fold), a parametric prior of log₂(k+1) given the
   class, the mantissa under a 1/(k+1) law, a static level model; real bits with constriction's range coder;
4. **(b) universal quantization** (Agustsson & Theis 2020) of each step's real q against p_θ: per dimension a
   shared dither u ~ U(0,1) and a shared scale A ~ χ₃ (N(0,1) is the mixture over A of U(−A, A)), Δ = 2Aσ_q,
   K = round((μ_q − μ_p)/Δ − u) coded with constriction's QuantizedGaussian(−u, τ/Δ) where τ is the decoder's
   spread of μ_q − μ_p: σ_p² − σ_q² (no side information) or a per-step τ sent in 8 bits; the sample
   μ_p + Δ(K + u) is an exact sample of q;
5. **(c) dithered quantization in n dimensions** (lattice / rotated dithered quantization, Kobus, Theis &
   Gündüz 2024): a lower bound for any n-dimensional dithered quantizer with a shared random scale, given by
   the ideal cell (a ball; no lattice does better): I(X; X + A·U_ball) per dimension, averaged over A ~ χ_{n+2}
   (N(0, I_n) is that mixture), by Monte Carlo with exact noncentral-χ² ball probabilities, against the KL at
   the per-dimension signal-to-noise ratios of the real steps.

Results: the JSON at ``--out``; the tables are printed as markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

LN2 = math.log(2.0)
VALIDATION_FIRST = 3500  # cifar10-train-lossless-4000.npy: 3500–3999 are validation images (issue 19)


# --------------------------------------------------------------------------- 1. traces


def trace_images(data: str, first: int, count: int, gain: float, cache: Path, model_path: str | None) -> list[dict]:
    """Encode ``count`` validation images with the default settings (target gain ``gain``); per image the coded
    steps' q, p and symbols and the prefixes' bits.  Cached per image in ``cache``."""
    import torch

    from diffcodec import codec as codec_module
    from diffcodec.codec import CodecConfig, encode
    from diffcodec.models.checkpoint import load_model

    torch.set_num_threads(1)
    cache.mkdir(parents=True, exist_ok=True)
    images = np.load(data, mmap_mode="r")
    model = None
    original = codec_module._simulate_step
    out = []
    for i in range(first, first + count):
        path = cache / f"img{i}_gain{gain:g}.npz"
        if not path.exists():
            if model is None:
                model = load_model(model_path)
            records: list[dict] = []

            def recording_step(chain, config, sizes, step, rng, mu_q, sd_q, mu_p, sd_p):
                symbols, kl_bits, x = original(chain, config, sizes, step, rng, mu_q, sd_q, mu_p, sd_p)
                r = chain.real_idx
                chunk_of = np.zeros(len(mu_q), dtype=np.int32)
                for j, dims in enumerate(chain.chunks(step, symbols.chunks)):
                    chunk_of[dims] = j
                records.append({
                    "t": chain.timeline.paper_t_of_step(step), "level": symbols.level, "chunks": symbols.chunks,
                    "cls": symbols.cls, "indices": np.array(symbols.indices, dtype=np.int64), "kl_bits": kl_bits,
                    "delta": (mu_q - mu_p)[r], "sd_q": sd_q[r], "sd_p": sd_p[r], "chunk_of": chunk_of[r],
                    "eps": ((x - mu_p) / sd_p)[r],
                })
                return symbols, kl_bits, x

            codec_module._simulate_step = recording_step
            try:
                start = time.perf_counter()
                res = encode(np.ascontiguousarray(images[i]), "RGB", model, CodecConfig(target_gain=gain, search_threads=1))
                seconds = time.perf_counter() - start
            finally:
                codec_module._simulate_step = original
            lossy = res.lossy_steps
            records = records[: len(lossy)]  # pass 1 simulates a few steps past the stop
            assert [r["t"] for r in records] == [s.t for s in lossy]
            np.savez_compressed(
                path,
                t=np.array([r["t"] for r in records]), level=np.array([r["level"] for r in records]),
                chunks=np.array([r["chunks"] for r in records]), cls=np.array([r["cls"] for r in records]),
                kl_bits=np.array([r["kl_bits"] for r in records]),
                indices=np.concatenate([r["indices"] for r in records]),
                delta=np.stack([r["delta"] for r in records]), sd_q=np.stack([r["sd_q"] for r in records]),
                sd_p=np.stack([r["sd_p"] for r in records]), chunk_of=np.stack([r["chunk_of"] for r in records]),
                eps=np.stack([r["eps"] for r in records]).astype(np.float32),
                prefix_bits=np.array([s.bits for s in lossy]), payload_bits=np.array([s.payload_bits for s in lossy]),
                cum_kl=np.array([s.kl_bits for s in lossy]), rmse=np.array([s.rmse for s in lossy]),
                file_bits=res.bits_total, num_dims=res.num_dims, seconds=seconds,
            )
            print(f"traced image {i} (gain {gain:g}): {len(records)} coded steps, {res.bits_total} bits, {seconds:.1f} s",
                  flush=True)
        out.append(load_trace(path))
    return out


def load_trace(path: Path) -> dict:
    z = np.load(path)
    tr = {k: z[k] for k in z.files}
    splits = np.cumsum(tr["chunks"])[:-1]
    tr["indices"] = np.split(tr["indices"], splits)
    return tr



# --------------------------------------------------------------------------- 2. today's code, replayed


def replay_today(tr: dict, chunk_bits: int = 13) -> dict:
    """Information content of each step's symbols under the stream's own adaptive models (fresh per image, updated
    as the coder does), split into level, index exponent and index mantissa; and the real words per prefix."""
    import constriction

    from diffcodec.coders import StepSymbols, Writer
    from diffcodec.profile import StreamProfile

    models = StreamProfile(version=6).step_code(chunk_bits, None, 0)
    sizes, index = models.sizes, models.index
    level_bits, exp_bits, mant_bits = [], [], []
    for s, level in enumerate(tr["level"]):
        level = int(level)
        delta = level - sizes.previous
        if -sizes.SPAN <= delta <= sizes.SPAN:
            sym, extra = delta + sizes.SPAN, 0
        else:
            sym, extra = sizes.ESCAPE, sizes.RAW_BITS
        counts = sizes.model.counts
        level_bits.append(-math.log2(counts[sym] / counts.sum()) + extra)
        sizes.model.update(sym)
        sizes.previous = level
        eb = mb = 0.0
        for k in tr["indices"][s]:
            e = int(k).bit_length()
            m = index.models[int(tr["cls"][s])]
            eb += -math.log2(m.counts[e] / m.counts.sum())
            m.update(e)
            mb += max(e - 1, 0)
        exp_bits.append(eb)
        mant_bits.append(mb)
    # The same symbols through the real range coder: the words after each step (a prefix needs one more).
    w = Writer(constriction.stream.queue.RangeEncoder())
    fresh = StreamProfile(version=6).step_code(chunk_bits, None, 0)
    n_real = tr["delta"].shape[1]
    for s in range(len(tr["level"])):
        w.step(fresh, StepSymbols(int(tr["level"][s]), int(tr["chunks"][s]), int(tr["cls"][s]),
                                  [int(k) for k in tr["indices"][s]]), n_real)
    return {"level_bits": np.array(level_bits), "exp_bits": np.array(exp_bits), "mant_bits": np.array(mant_bits),
            "words": np.array(w.step_words)}


def step_quantities(tr: dict, gain: float) -> dict:
    """Per step: KL of q, KL of the encoder's target (gain), per-chunk KLs and the sample's fidelity."""
    kl_target, fidelity, chunk_kl = [], [], []
    for s in range(len(tr["t"])):
        d, sq, sp = tr["delta"][s], tr["sd_q"][s], tr["sd_p"][s]
        base = np.log(sp / sq) + sq * sq / (2 * sp * sp) - 0.5
        kl_dims = (base + d * d / (2 * sp * sp)) / LN2
        kl_target.append(float((base + gain * gain * d * d / (2 * sp * sp)).sum() / LN2))
        v = d / sp
        fidelity.append(float(v @ tr["eps"][s] / (v @ v)) if v @ v > 0 else math.nan)
        chunk_kl.append(np.bincount(tr["chunk_of"][s], weights=kl_dims, minlength=int(tr["chunks"][s])))
    return {"kl_target": np.array(kl_target), "fidelity": np.array(fidelity), "chunk_kl": chunk_kl}


T_BANDS = [(1000, 600), (599, 300), (299, 150), (149, 75), (74, 1)]


def overhead_split(traces: list[dict], replays: list[dict], quants: list[dict]) -> dict:
    """Where today's bits go beyond the KL: per band of t, per chunk-KL bin, and over all coded steps."""
    rows = []
    for hi, lo in T_BANDS:
        acc = Counter()
        for tr, rp, qu in zip(traces, replays, quants):
            sel = (tr["t"] <= hi) & (tr["t"] >= lo)
            acc["steps"] += int(sel.sum())
            acc["chunks"] += int(tr["chunks"][sel].sum())
            acc["kl"] += float(tr["kl_bits"][sel].sum())
            acc["kl_target"] += float(qu["kl_target"][sel].sum())
            acc["level"] += float(rp["level_bits"][sel].sum())
            acc["exponent"] += float(rp["exp_bits"][sel].sum())
            acc["mantissa"] += float(rp["mant_bits"][sel].sum())
            acc["fid_num"] += float(np.nansum(qu["fidelity"][sel] * tr["kl_bits"][sel]))
        if not acc["steps"]:
            continue
        n = len(traces)
        index = acc["exponent"] + acc["mantissa"]
        rows.append({
            "t": f"{lo}–{hi}", "steps_per_image": acc["steps"] / n, "chunks_per_image": acc["chunks"] / n,
            "kl_per_image": acc["kl"] / n, "target_kl_per_image": acc["kl_target"] / n,
            "level_bits_per_image": acc["level"] / n, "exponent_bits_per_image": acc["exponent"] / n,
            "mantissa_bits_per_image": acc["mantissa"] / n,
            "index_over_kl": index / acc["kl"], "all_over_kl": (index + acc["level"]) / acc["kl"],
            "level_share_of_overhead": acc["level"] / max(index + acc["level"] - acc["kl"], 1e-9),
            "kl_weighted_fidelity": acc["fid_num"] / acc["kl"],
        })
    # Chunks by their KL: the per-chunk log overhead.
    bins = [0, 1, 2, 4, 6, 8, 10, 12, 14, 100]
    chunk_rows = []
    per_bin: dict[int, list] = {}
    for tr, rp, qu in zip(traces, replays, quants):
        # Per-chunk index bits need the per-chunk exponent costs: recompute them cheaply from the replay's order.
        for s in range(len(tr["t"])):
            n_ch = int(tr["chunks"][s])
            ks = tr["indices"][s]
            # Exponent bits are split evenly over the step's chunks (one class per step): a fair share.
            e_share = rp["exp_bits"][s] / n_ch
            for j in range(n_ch):
                kl = float(qu["chunk_kl"][s][j])
                b = int(np.searchsorted(bins, kl, side="right")) - 1
                per_bin.setdefault(b, []).append((kl, e_share + max(int(ks[j]).bit_length() - 1, 0),
                                                  math.log2(int(ks[j]) + 1)))
    for b in sorted(per_bin):
        v = np.array(per_bin[b])
        chunk_rows.append({"chunk_kl_bits": f"{bins[b]}–{bins[b + 1]}", "chunks": len(v), "mean_kl": float(v[:, 0].mean()),
                           "mean_index_bits": float(v[:, 1].mean()), "mean_log2_k1": float(v[:, 2].mean()),
                           "overhead_bits_per_chunk": float(v[:, 1].mean() - v[:, 0].mean())})
    tot = {k: sum(float(r[k].sum()) for r in replays) for k in ("level_bits", "exp_bits", "mant_bits")}
    kl = sum(float(tr["kl_bits"].sum()) for tr in traces)
    payload = sum(float(tr["payload_bits"][-1]) for tr in traces)
    words_check = all(int(32 * (rp["words"][-1] + 1)) == int(tr["payload_bits"][-1]) for tr, rp in zip(traces, replays))
    return {"bands": rows, "chunks": chunk_rows, "all_steps": {
        "kl_bits_per_image": kl / len(traces), "level_bits_per_image": tot["level_bits"] / len(traces),
        "exponent_bits_per_image": tot["exp_bits"] / len(traces), "mantissa_bits_per_image": tot["mant_bits"] / len(traces),
        "payload_bits_per_image": payload / len(traces),
        "symbols_over_kl": (tot["level_bits"] + tot["exp_bits"] + tot["mant_bits"]) / kl, "payload_over_kl": payload / kl,
        "replayed_words_equal_the_files": words_check}}



# --------------------------------------------------------------------------- 3. (a) better codes for the same symbols

EXP_SIZE = 21  # e = bit_length(k) ≤ MAX_INDEX_BITS = 20
LEVEL_SIZE = 34  # StepSizeCoder's 33 changes and its escape


def exp_context(tr: dict, s: int, by_level: bool) -> int:
    """The exponent's context: the step's class (as today), or for multi-chunk steps their level (chunk count)."""
    cls = int(tr["cls"][s])
    return 100 + int(tr["level"][s]) if by_level and int(tr["chunks"][s]) > 1 else cls


def level_context(prev: int, chunk_bits: int = 13) -> int:
    """The level symbol's context: whether the previous step was one chunk (level < chunk_bits) or several."""
    return int(prev >= chunk_bits)


def level_symbol(level: int, prev: int) -> int:
    delta = level - prev
    return delta + 16 if -16 <= delta <= 16 else 33


def fit_tables(traces: list[dict], by_level: bool) -> dict:
    """Static tables (probabilities) fitted on ``traces``: exponents per context with back-off to the class, and
    level changes per level context; add-half smoothing."""
    exp_counts: dict[int, np.ndarray] = {}
    cls_counts: dict[int, np.ndarray] = {}
    lev_counts = {0: np.zeros(LEVEL_SIZE), 1: np.zeros(LEVEL_SIZE)}
    for tr in traces:
        prev = 0
        for s in range(len(tr["t"])):
            level = int(tr["level"][s])
            lev_counts[level_context(prev)][level_symbol(level, prev)] += 1
            prev = level
            ctx, cls = exp_context(tr, s, by_level), int(tr["cls"][s])
            for k in tr["indices"][s]:
                e = int(k).bit_length()
                exp_counts.setdefault(ctx, np.zeros(EXP_SIZE))[e] += 1
                cls_counts.setdefault(cls, np.zeros(EXP_SIZE))[e] += 1
    pooled = sum(cls_counts.values()) + 0.5
    cls_p = {c: (v + 0.5 * pooled / pooled.sum() * EXP_SIZE) for c, v in cls_counts.items()}
    cls_p = {c: v / v.sum() for c, v in cls_p.items()}
    exp_p = {}
    for ctx, v in exp_counts.items():
        back = cls_p.get(ctx if ctx < 100 else 13, pooled / pooled.sum())
        w = v + 4.0 * back  # back-off: four pseudo-counts of the class's table
        exp_p[ctx] = w / w.sum()
    lev_p = {c: (v + 0.5) / (v + 0.5).sum() for c, v in lev_counts.items()}
    return {"exp": exp_p, "cls": cls_p, "pooled": pooled / pooled.sum(), "level": lev_p}


def zipf_mantissa_probs(e: int) -> np.ndarray:
    """P(k | bit_length(k) = e) ∝ log((k + 2)/(k + 1)): the 1/(k+1) law of PFR indices within an octave."""
    k = np.arange(1 << (e - 1), 1 << e, dtype=np.float64)
    p = np.log1p(1.0 / (k + 1.0))
    return p / p.sum()


class SchemeCoder:
    """Codes a trace's steps with a given level and exponent model and mantissa law on constriction's range coder.

    ``tables``: fitted static tables (None: today's adaptive models); ``adaptive_init``: today's adaptive models
    with their initial counts taken from ``tables`` (total ``init_total`` per table) instead of today's.
    """

    def __init__(self, tables: dict | None, by_level: bool, zipf: bool, adaptive_init: float | None = None,
                 static_level: bool = True):
        self.tables, self.by_level, self.zipf = tables, by_level, zipf
        self.adaptive_init, self.static_level = adaptive_init, static_level

    def _exp_probs(self, tr: dict, s: int) -> np.ndarray:
        ctx = exp_context(tr, s, self.by_level)
        t = self.tables
        if ctx in t["exp"]:
            return t["exp"][ctx]
        return t["cls"].get(int(tr["cls"][s]), t["pooled"])

    def code(self, tr: dict, ideal_only: bool = False) -> dict:
        import constriction

        from diffcodec.entropy import AdaptiveCategorical, encode_raw_bits
        from diffcodec.profile import StreamProfile

        cm = constriction.stream.model
        enc = constriction.stream.queue.RangeEncoder()
        today = StreamProfile(version=6).step_code(13, None, 0)
        adaptive_exp: dict[int, AdaptiveCategorical] = {}
        words, info = [], []
        prev, total = 0, 0.0

        def put(symbol: int, probs: np.ndarray) -> float:
            if not ideal_only:
                enc.encode(np.array([symbol], dtype=np.int32), cm.Categorical(probs, perfect=False))
            return -math.log2(probs[symbol])

        for s in range(len(tr["t"])):
            level = int(tr["level"][s])
            if self.tables is not None and self.static_level:
                total += put(level_symbol(level, prev), self.tables["level"][level_context(prev)])
                if level_symbol(level, prev) == 33:
                    total += 10
                    if not ideal_only:
                        encode_raw_bits(enc, level, 10)
            else:
                sizes = today.sizes
                m = sizes.model
                sym = level_symbol(level, sizes.previous)
                total += put(sym, m.counts / m.counts.sum())
                m.update(sym)
                sizes.previous = level
            prev = level
            for k in tr["indices"][s]:
                e = int(k).bit_length()
                if self.tables is None:
                    m = today.index.models[int(tr["cls"][s])]
                    total += put(e, m.counts / m.counts.sum())
                    m.update(e)
                elif self.adaptive_init is not None:
                    ctx = exp_context(tr, s, self.by_level)
                    if ctx not in adaptive_exp:
                        init = np.maximum(1, np.round(self._exp_probs(tr, s) * self.adaptive_init)).astype(np.int64)
                        adaptive_exp[ctx] = AdaptiveCategorical(init)
                    m = adaptive_exp[ctx]
                    total += put(e, m.counts / m.counts.sum())
                    m.update(e)
                else:
                    total += put(e, self._exp_probs(tr, s))
                if e > 1:
                    if self.zipf:
                        total += put(int(k) - (1 << (e - 1)), zipf_mantissa_probs(e))
                    else:
                        total += e - 1
                        if not ideal_only:
                            encode_raw_bits(enc, int(k) - (1 << (e - 1)), e - 1)
            info.append(total)
            words.append(enc.num_words())
        return {"words": np.array(words), "info_bits": np.array(info)}



class PositionCoder(SchemeCoder):
    """No level for the high-noise steps: where the fitted images were one chunk at this chain position (≥ 95%),
    a binary "one chunk" symbol replaces the level (levels only after a "no"), and the exponent's table is the
    position's (the decoder knows the position, not the step's KL; K stays encoder-only).  Elsewhere as
    ``SchemeCoder`` with static tables, levels and the 1/(k+1) mantissa."""

    def __init__(self, tables: dict, position: dict):
        super().__init__(tables, False, True)
        self.position = position

    def code(self, tr: dict, ideal_only: bool = False) -> dict:
        import constriction

        from diffcodec.entropy import encode_raw_bits

        cm = constriction.stream.model
        enc = constriction.stream.queue.RangeEncoder()
        words, info = [], []
        prev, total = 0, 0.0

        def put(symbol: int, probs: np.ndarray) -> float:
            enc.encode(np.array([symbol], dtype=np.int32), cm.Categorical(probs, perfect=False))
            return -math.log2(probs[symbol])

        for s in range(len(tr["t"])):
            level = int(tr["level"][s])
            single = int(tr["chunks"][s]) == 1
            pos = self.position.get(int(tr["t"][s]))
            if pos is not None:
                total += put(int(single), pos["single"])
            if pos is None or not single:
                total += put(level_symbol(level, prev), self.tables["level"][level_context(prev)])
                if level_symbol(level, prev) == 33:
                    total += 10
                    encode_raw_bits(enc, level, 10)
                prev = level
            else:
                prev = pos["level"]  # not sent: the next level is coded as a change from the position's typical one
            for k in tr["indices"][s]:
                e = int(k).bit_length()
                probs = pos["exp"] if (pos is not None and single) else self._exp_probs(tr, s)
                total += put(e, probs)
                if e > 1:
                    total += put(int(k) - (1 << (e - 1)), zipf_mantissa_probs(e))
            info.append(total)
            words.append(enc.num_words())
        return {"words": np.array(words), "info_bits": np.array(info), "compressed": enc.get_compressed()}

    def decode(self, compressed: np.ndarray, ts: list[int], max_chunks: int) -> list[tuple[int, list[int]]]:
        """The decoder's side: (chunks, indices) of each step from the words, knowing only each step's t (its chain
        position), the tables and what it decoded before; the level's class picks the exponent table off the
        predicted positions.  Proves the code decodable (K stays the encoder's)."""
        import constriction

        from diffcodec.entropy import StepSizeCoder, decode_raw_bits

        cm = constriction.stream.model
        dec = constriction.stream.queue.RangeDecoder(compressed)
        split = StepSizeCoder(13).split
        get = lambda probs: int(dec.decode(cm.Categorical(probs, perfect=False), 1)[0])  # noqa: E731
        out, prev = [], 0
        for t in ts:
            pos = self.position.get(int(t))
            single = get(pos["single"]) if pos is not None else 0
            if pos is not None and single:
                chunks, exp_probs = 1, pos["exp"]
                level = None
            else:
                sym = get(self.tables["level"][level_context(prev)])
                level = decode_raw_bits(dec, 10) if sym == 33 else prev + sym - 16
                chunks, cls = split(level, max_chunks)
                exp_probs = self.tables["exp"].get(cls, self.tables["cls"].get(cls, self.tables["pooled"]))
            prev = level if level is not None else pos["level"]
            ks = []
            for _ in range(chunks):
                e = get(exp_probs)
                ks.append(e if e <= 1 else (1 << (e - 1)) + get(zipf_mantissa_probs(e)))
            out.append((chunks, ks))
        return out


def fit_positions(traces: list[dict], share: float = 0.95) -> dict:
    """Per chain position (its t): P(one chunk) and the exponent table of its one-chunk steps, where ≥ ``share``
    of the fitted images coded it as one chunk."""
    by_t: dict[int, list] = {}
    levels: dict[int, list] = {}
    for tr in traces:
        for s in range(len(tr["t"])):
            by_t.setdefault(int(tr["t"][s]), []).append((int(tr["chunks"][s]) == 1, tr["indices"][s]))
            levels.setdefault(int(tr["t"][s]), []).append((int(tr["level"][s]), int(tr["chunks"][s]) == 1, None))
    out = {}
    pooled = np.zeros(EXP_SIZE)
    for rows in by_t.values():
        for single, ks in rows:
            for k in ks:
                pooled[int(k).bit_length()] += 1
    pooled = (pooled + 0.5) / (pooled + 0.5).sum()
    for t, rows in by_t.items():
        singles = [ks for single, ks in rows if single]
        if len(singles) < share * len(rows) or len(rows) < 10:
            continue
        c = np.zeros(EXP_SIZE)
        for ks in singles:
            c[int(ks[0]).bit_length()] += 1
        p1 = (len(singles) + 0.5) / (len(rows) + 1.0)
        out[t] = {"single": np.array([1.0 - p1, p1]), "exp": (c + 2.0 * pooled) / (c + 2.0 * pooled).sum(),
                  "level": int(np.median([lv for lv, single, _ in levels[t] if single]))}
    return out


def index_code_study(traces: list[dict]) -> tuple[dict, dict]:
    """Every (a) variant on every image, tables fitted on the other half of the images (2-fold by parity).

    Returns the summary and, per variant, the real words after each step of each image (for the prefixes)."""
    halves = [traces[0::2], traces[1::2]]
    decoded_ok = True
    variants = {
        "today (adaptive, raw mantissa)": lambda tb: SchemeCoder(None, False, False),
        "today's models, 1/(k+1) mantissa": lambda tb: SchemeCoder(None, False, True),
        "static exponent per class": lambda tb: SchemeCoder(tb[False], False, False, static_level=False),
        "static exponent per class or chunk count": lambda tb: SchemeCoder(tb[True], True, False, static_level=False),
        "static levels": lambda tb: SchemeCoder(tb[False], False, False, static_level=True) if False else None,
        "static exponent (class or count) + static levels": lambda tb: SchemeCoder(tb[True], True, False),
        "static exponent (class or count) + static levels + 1/(k+1) mantissa": lambda tb: SchemeCoder(tb[True], True, True),
        "static exponent per class + static levels + 1/(k+1) mantissa": lambda tb: SchemeCoder(tb[False], False, True),
        "high-noise steps without a level (exponent per position) + the above":
            lambda tb: PositionCoder(tb[False], tb["position"]),
        "adaptive from fitted tables (400) + static levels + 1/(k+1) mantissa":
            lambda tb: SchemeCoder(tb[True], True, True, adaptive_init=400.0),
    }
    del variants["static levels"]
    words: dict[str, list] = {v: [None] * len(traces) for v in variants}
    info: dict[str, float] = {v: 0.0 for v in variants}
    for h in (0, 1):
        fit_on = halves[1 - h]
        tables = {False: fit_tables(fit_on, False), True: fit_tables(fit_on, True), "position": fit_positions(fit_on)}
        for name, make in variants.items():
            coder = make(tables)
            for i in range(h, len(traces), 2):
                res = coder.code(traces[i])
                words[name][i] = res["words"]
                info[name] += float(res["info_bits"][-1])
                if isinstance(coder, PositionCoder):  # the decoder's side gives back every step's chunks and indices
                    tr = traces[i]
                    got = coder.decode(res["compressed"], [int(t) for t in tr["t"]], tr["delta"].shape[1])
                    want = [(int(c), [int(k) for k in ks]) for c, ks in zip(tr["chunks"], tr["indices"])]
                    decoded_ok = decoded_ok and got == want
    kl = sum(float(tr["kl_bits"].sum()) for tr in traces)
    base = info["today (adaptive, raw mantissa)"]
    chunks = sum(int(tr["chunks"].sum()) for tr in traces)
    summary = {name: {"symbol_bits_per_image": info[name] / len(traces), "over_kl": info[name] / kl,
                      "saved_bits_per_image": (base - info[name]) / len(traces),
                      "saved_bits_per_chunk": (base - info[name]) / chunks,
                      "payload_bits_per_image": 32.0 * float(np.mean([w[-1] + 1 for w in words[name]]))}
               for name in variants}
    summary["position code decodes every image"] = decoded_ok
    return summary, words



# --------------------------------------------------------------------------- 4. (b) universal quantization

UQ_RANGE = 1 << 12  # K in −4096..4096 (QuantizedGaussian's alphabet); larger K would be an escape (none occurred)


def uq_step(delta: np.ndarray, sd_q: np.ndarray, sd_p: np.ndarray, rng: np.random.Generator, tau: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One step by universal quantization with a shared χ₃ scale: (K, the coder's means and stds, the sample's ε).

    Shared per dimension: A = √(n₁² + n₂² + n₃²) ~ χ₃ and u ~ U(0, 1); Δ = 2Aσ_q; K = round(δ/Δ − u).  The decoder's
    sample is μ_p + Δ(K + u) = μ_q + Δ·(K + u − δ/Δ), uniform on μ_q ± Δ/2 given A, so N(μ_q, σ_q²) over A (N(0, 1)
    is the mixture over A ~ χ₃ of U(−A, A)).  The decoder's belief δ ~ N(0, τ²) makes
    P(K = k | u, A) = QuantizedGaussian(k; mean −u, std τ/Δ)."""
    n = len(delta)
    a = np.sqrt((rng.standard_normal((3, n)) ** 2).sum(axis=0))
    u = rng.random(n)
    step = 2.0 * a * sd_q
    k = np.round(delta / step - u)
    if np.abs(k).max() > UQ_RANGE:
        raise ValueError("UQ index beyond the alphabet")
    y = step * (k + u)  # the decoder's μ − μ_p
    return k.astype(np.int32), -u, np.maximum(tau / step, 1e-9), y


def uq_ideal_bits(k: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Σ −log₂ P(K = k) under the quantized Gaussians (tails folded into the alphabet's ends are negligible here)."""
    from scipy.special import log_ndtr

    hi = (k + 0.5 - mean) / std
    lo = (k - 0.5 - mean) / std
    # P = Φ(hi) − Φ(lo), computed on the side of the smaller tail.
    flip = lo > 0
    hi2, lo2 = np.where(flip, -lo, hi), np.where(flip, -hi, lo)
    log_hi, log_lo = log_ndtr(hi2), log_ndtr(lo2)
    logp = log_hi + np.log1p(-np.exp(np.minimum(log_lo - log_hi, -1e-300)))
    return float(-logp.sum() / LN2)


def uq_study(traces: list[dict], seed: int = 0) -> dict:
    """UQ on every coded step of the traces' real q and p: bits coded by constriction per step, against the KL and
    today's bits for the same step.  τ: the model's σ_p² − σ_q² (no side information), or the step's RMS of δ sent
    in 8 bits (log₂ τ on a grid of 1/8)."""
    import constriction

    cm = constriction.stream.model
    family = cm.QuantizedGaussian(-UQ_RANGE, UQ_RANGE)
    rows: dict[int, Counter] = {}
    totals = Counter()
    for i, tr in enumerate(traces):
        rng = np.random.default_rng([seed, i])
        for s in range(len(tr["t"])):
            d, sq, sp = tr["delta"][s].astype(np.float64), tr["sd_q"][s].astype(np.float64), tr["sd_p"][s].astype(np.float64)
            rms = math.sqrt(float(np.mean(d * d))) or 1e-12
            taus = {"matched": np.sqrt(np.maximum(sp * sp - sq * sq, (1e-3 * sq) ** 2)),
                    "per_step": np.full_like(d, 2.0 ** (round(8 * math.log2(rms)) / 8))}
            t = int(tr["t"][s])
            band = next(j for j, (hi, lo) in enumerate(T_BANDS) if lo <= t <= hi)
            acc = rows.setdefault(band, Counter())
            acc["kl"] += float(tr["kl_bits"][s])
            acc["steps"] += 1
            acc["rms_m"] += float(np.sqrt(np.mean((d / sq) ** 2)))
            for name, tau in taus.items():
                state = np.random.default_rng([seed, i, s])  # the same shared randomness for both τ
                k, mean, std, y = uq_step(d, sq, sp, state, tau)
                enc = constriction.stream.queue.RangeEncoder()
                enc.encode(k, family, mean, std)
                coded = 32.0 * enc.num_words()  # this step alone, whole words
                ideal = uq_ideal_bits(k, mean, std) + (8.0 if name == "per_step" else 0.0)
                acc[f"{name}_ideal"] += ideal
                acc[f"{name}_coded"] += coded + (8.0 if name == "per_step" else 0.0)
                totals[f"{name}_ideal"] += ideal
                totals[f"{name}_coded"] += coded + (8.0 if name == "per_step" else 0.0)
            totals["kl"] += float(tr["kl_bits"][s])
    out = []
    for j, acc in sorted(rows.items()):
        hi, lo = T_BANDS[j]
        out.append({"t": f"{lo}–{hi}", "steps": acc["steps"], "mean_rms_delta_over_sd_q": acc["rms_m"] / acc["steps"],
                    "kl_bits_per_step": acc["kl"] / acc["steps"],
                    **{f"{n}_bits_per_step": acc[f"{n}_ideal"] / acc["steps"] for n in ("matched", "per_step")},
                    **{f"{n}_over_kl": acc[f"{n}_ideal"] / acc["kl"] for n in ("matched", "per_step")},
                    **{f"{n}_coded_bits_per_step": acc[f"{n}_coded"] / acc["steps"] for n in ("matched", "per_step")},
                    **{f"{n}_coded_over_kl": acc[f"{n}_coded"] / acc["kl"] for n in ("matched", "per_step")}})
    return {"bands": out, "all_steps": {**{f"{n}_ideal_over_kl": totals[f"{n}_ideal"] / totals["kl"] for n in ("matched", "per_step")},
                                        **{f"{n}_coded_over_kl": totals[f"{n}_coded"] / totals["kl"] for n in ("matched", "per_step")}},
            "images": len(traces)}



# --------------------------------------------------------------------------- 5. (c) n-dimensional dithered quantization


def ball_rate_per_dim(n: int, snr: float, samples: int, rng: np.random.Generator) -> float:
    """Bits per dimension of dithered quantization in n dimensions with the ideal cell (a ball) and a shared scale
    making the noise exactly N(0, I_n): E_R I(X; X + R·U_ball) / n with X ~ N(0, snr·I_n), R ~ χ_{n+2}.

    Given R, I(X; Y) = h(Y) − h(U) = E[−log P(‖X′ − Y‖ ≤ R)] for an independent X′ ~ N(0, snr·I) (the density of Y
    is P(‖X′ − y‖ ≤ R)/vol(ball)), and ‖X′ − y‖²/snr is noncentral χ²(n, ‖y‖²/snr): exact ball probabilities, Monte
    Carlo over R, X and U.  No lattice cell beats the ball here (lattices' noise is further from Gaussian), so this
    bounds lattice and rotated dithered quantization from below, in the one-shot setting where the decoder's belief
    about μ_q − μ_p is N(0, snr) per dimension."""
    from scipy.stats import ncx2

    r = np.sqrt(rng.chisquare(n + 2, samples))
    x = rng.standard_normal((samples, n)) * math.sqrt(snr)
    direction = rng.standard_normal((samples, n))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = r * rng.random(samples) ** (1.0 / n)
    y = x + direction * radius[:, None]
    lam = (y * y).sum(axis=1) / snr
    bound = r * r / snr
    sf = ncx2.sf(bound, n, lam)
    cdf = ncx2.cdf(bound, n, lam)
    logp = np.where(sf < 0.5, np.log1p(-np.minimum(sf, 0.5)), np.log(np.maximum(cdf, 1e-300)))
    return float(-logp.mean() / LN2 / n)


def lattice_study(traces: list[dict], dims: list[int], samples: int, seed: int = 0) -> dict:
    """The ball bound at the real steps' signal-to-noise ratios (per step: mean of ((μ_q − μ_p)/σ_q)², which is
    2·KL per dimension in nats when σ_p = σ_q), against the KL, per band of t; and the curve itself."""
    rng = np.random.default_rng(seed)
    snr_grid = np.exp(np.linspace(math.log(1e-3), math.log(4.0), 13))
    curves = {n: np.array([ball_rate_per_dim(n, float(s), samples, rng) for s in snr_grid]) for n in dims}
    kl_per_dim = snr_grid / 2.0 / LN2  # KL(N(δ, 1) ‖ N(0, 1)) averaged over δ ~ N(0, snr), bits
    curve_rows = [{"snr": float(s), "kl_bits_per_dim": float(k),
                   **{f"n{n}_over_kl": float(curves[n][j] / k) for n in dims}} for j, (s, k) in enumerate(zip(snr_grid, kl_per_dim))]
    bands = []
    for hi, lo in T_BANDS:
        kl = 0.0
        rate = Counter()
        steps = 0
        for tr in traces:
            for s in np.flatnonzero((tr["t"] <= hi) & (tr["t"] >= lo)):
                m = tr["delta"][s] / tr["sd_q"][s]
                snr = float(np.mean(m * m))
                kl += float(tr["kl_bits"][s])
                steps += 1
                for n in dims:
                    per_dim = float(np.exp(np.interp(math.log(snr), np.log(snr_grid), np.log(curves[n]))))
                    rate[n] += per_dim * len(m)
        if steps:
            bands.append({"t": f"{lo}–{hi}", "steps": steps, **{f"n{n}_over_kl": rate[n] / kl for n in dims}})
    return {"curve": curve_rows, "bands": bands, "samples": samples}



# --------------------------------------------------------------------------- 6. prefixes: rate and RMSE at fixed rates

RATES = (0.12, 0.18, 0.25, 0.35, 0.5, 0.75)


def pooled_rmse_at(curves: list[list[tuple[float, float]]], rate: float) -> tuple[float | None, int]:
    """Pooled RMSE (√ of the mean squared RMSE) at ``rate`` over the images whose prefixes span it."""
    from diffcodec.rdcurve import rmse_at_rate

    vals = [rmse_at_rate(c, rate) for c in curves]
    vals = [v for v in vals if v is not None]
    return (math.sqrt(float(np.mean(np.square(vals)))) if vals else None), len(vals)


def rate_at_rmse(curves: list[list[tuple[float, float]]], target: float, lo: float, hi: float) -> float | None:
    """The rate at which the pooled RMSE of ``curves`` reaches ``target`` (bisection in log-rate)."""
    f = lambda r: pooled_rmse_at(curves, r)[0]  # noqa: E731
    a, b = lo, hi
    if f(a) is None or f(b) is None or not f(b) <= target <= f(a):
        return None
    for _ in range(40):
        m = math.sqrt(a * b)
        a, b = (m, b) if f(m) > target else (a, m)
    return math.sqrt(a * b)


def prefix_curves(traces: list[dict], words_delta: list[np.ndarray] | None = None) -> list[list[tuple[float, float]]]:
    """Each image's (rate in bits/dim, RMSE) at its coded states; ``words_delta``: words saved after each step."""
    out = []
    for i, tr in enumerate(traces):
        bits = tr["prefix_bits"].astype(np.float64)
        if words_delta is not None:
            bits = bits - 32.0 * words_delta[i]
        out.append(list(zip(bits / float(tr["num_dims"]), tr["rmse"].astype(np.float64))))
    return out


def compare_at_rates(base: list, alt: list, same_states: bool, base_traces: list[dict],
                     words_delta: list[np.ndarray] | None = None) -> list[dict]:
    """Pooled RMSE of both at each rate; the rate the alternative needs for the baseline's RMSE; and, when both code
    the same states (an index code), the mean share of each prefix's bits saved at that rate."""
    rows = []
    for r in RATES:
        b, nb = pooled_rmse_at(base, r)
        a, na = pooled_rmse_at(alt, r)
        row = {"rate_bpd": r, "images": min(nb, na), "rmse_base": b, "rmse_alt": a}
        if b is not None:
            ra = rate_at_rmse(alt, b, 0.7 * r, 1.4 * r)
            row["alt_rate_for_base_rmse"] = ra
            row["rate_saving_at_equal_rmse"] = None if ra is None else 1.0 - ra / r
        if same_states and words_delta is not None:
            shares = []
            for tr, wd in zip(base_traces, words_delta):
                rates = tr["prefix_bits"] / float(tr["num_dims"])
                if rates[0] <= r <= rates[-1]:
                    shares.append(float(np.interp(math.log(r), np.log(rates), 32.0 * wd / tr["prefix_bits"])))
            row["mean_prefix_share_saved"] = float(np.mean(shares)) if shares else None
        rows.append(row)
    return rows


def prefix_framing(traces: list[dict], replays: list[dict]) -> dict:
    """What a prefix pays beyond its symbols' information content: the range decoder's look-ahead word and the
    rounding to whole 32-bit words (the container counts a prefix in words), per prefix, mean over prefixes."""
    extra = []
    for tr, rp in zip(traces, replays):
        info = np.cumsum(rp["level_bits"] + rp["exp_bits"] + rp["mant_bits"])
        extra.extend((tr["payload_bits"] - info).tolist())
    return {"mean_bits_per_prefix": float(np.mean(extra)), "median": float(np.median(extra)),
            "header_bits": float(np.mean([tr["prefix_bits"][0] - tr["payload_bits"][0] for tr in traces]))}



def fmt(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-train-lossless-4000.npy")
    ap.add_argument("--first", type=int, default=VALIDATION_FIRST)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--gains", default="1.4,1.0", help="target gains to trace; the first is the baseline (the default 1.4)")
    ap.add_argument("--cache", default="/tmp/channel_alternatives_traces", help="per-image traces (resumable)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--gain-count", type=int, default=None, help="images for the other gains (default: --count)")
    ap.add_argument("--uq-images", type=int, default=30, help="images for the universal-quantization study")
    ap.add_argument("--lattice-dims", default="1,2,8,24,64,256")
    ap.add_argument("--lattice-samples", type=int, default=20000)
    ap.add_argument("--trace-only", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.first < VALIDATION_FIRST and "cifar10-train" in args.data:
        raise SystemExit("use validation images: training-set indices 3500–3999")
    gains = args.gains.split(",")
    traces = {g: trace_images(args.data, args.first, args.count if j == 0 else args.gain_count or args.count, float(g),
                              Path(args.cache), args.model) for j, g in enumerate(gains)}
    if args.trace_only:
        return
    base_gain = gains[0]
    base = traces[base_gain]
    result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, 1 torch thread, 1 search thread",
                    "command": "python bench/channel_alternatives.py " + " ".join(
                        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False)),
                    "images": f"{args.data} [{args.first}, {args.first + args.count})"}

    # 2. Where today's bits go.
    split = {}
    replays = {}
    for g in gains:
        replays[g] = [replay_today(tr) for tr in traces[g]]
        quants = [step_quantities(tr, float(g)) for tr in traces[g]]
        split[g] = overhead_split(traces[g], replays[g], quants)
        split[g]["prefix_framing"] = prefix_framing(traces[g], replays[g])
    result["overhead"] = split
    for g in gains:
        a = split[g]["all_steps"]
        print(f"\n### Today's PFR code, target gain {g}: where the bits go ({len(traces[g])} validation images, per image)\n")
        print(f"KL {a['kl_bits_per_image']:.0f}, level {a['level_bits_per_image']:.0f}, exponents {a['exponent_bits_per_image']:.0f}, "
              f"mantissas {a['mantissa_bits_per_image']:.0f}: symbols {a['symbols_over_kl']:.3f}× the KL; the stream's words "
              f"{a['payload_over_kl']:.3f}× (replayed words equal the files': {a['replayed_words_equal_the_files']}); "
              f"a prefix's look-ahead word and rounding: {split[g]['prefix_framing']['mean_bits_per_prefix']:.1f} bits on average\n")
        print("| t | steps | chunks | KL | target KL | level | exponents | mantissas | index ÷ KL | all ÷ KL | fidelity |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in split[g]["bands"]:
            print(f"| {r['t']} | {r['steps_per_image']:.1f} | {r['chunks_per_image']:.1f} | {r['kl_per_image']:.0f} | "
                  f"{r['target_kl_per_image']:.0f} | {r['level_bits_per_image']:.0f} | {r['exponent_bits_per_image']:.0f} | "
                  f"{r['mantissa_bits_per_image']:.0f} | {r['index_over_kl']:.3f} | {r['all_over_kl']:.3f} | {r['kl_weighted_fidelity']:.3f} |")
        print("\n| chunk KL (bits) | chunks | mean KL | index bits | E[log₂(k+1)] | overhead per chunk |\n|---|---|---|---|---|---|")
        for r in split[g]["chunks"]:
            print(f"| {r['chunk_kl_bits']} | {r['chunks']} | {r['mean_kl']:.2f} | {r['mean_index_bits']:.2f} | "
                  f"{r['mean_log2_k1']:.2f} | {r['overhead_bits_per_chunk']:+.2f} |")

    # 3. (a) index codes, same symbols.
    summary, words = index_code_study(base)
    today = words["today (adaptive, raw mantissa)"]
    assert all(np.array_equal(w, rp["words"]) for w, rp in zip(today, replays[base_gain]))
    base_curves = prefix_curves(base)
    index_rows = {}
    print(f"\n### (a) Index and level codes for the same symbols (tables fitted on the other half of the images)\n")
    print("| code | symbol bits per image | ÷ KL | saved per image | saved per chunk |\n|---|---|---|---|---|")
    for name, s in summary.items():
        if not isinstance(s, dict):
            continue
        print(f"| {name} | {s['symbol_bits_per_image']:.0f} | {s['over_kl']:.3f} | {s['saved_bits_per_image']:.1f} | "
              f"{s['saved_bits_per_chunk']:.3f} |")
        delta = [t - w for t, w in zip(today, words[name])]
        index_rows[name] = compare_at_rates(base_curves, prefix_curves(base, delta), True, base, delta)
    result["index_codes"] = {"summary": summary, "at_rates": index_rows}
    print(f"\nThe position code decodes back to every image's symbols: {summary['position code decodes every image']}")
    print("\n| code | " + " | ".join(f"{r} bpd: share saved, RMSE" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for name, rows in index_rows.items():
        print(f"| {name} | " + " | ".join(f"{fmt(r.get('mean_prefix_share_saved'), '.1%')}, {fmt(r['rmse_base'], '.2f')} → "
                                           f"{fmt(r['rmse_alt'], '.2f')}" for r in rows) + " |")

    # Target gains at the prefixes (another trajectory: compared at equal pooled RMSE).
    result["gains_at_rates"] = {}
    for g in gains[1:]:
        n = len(traces[g])  # the first n images of the baseline
        rows = compare_at_rates(prefix_curves(base[:n]), prefix_curves(traces[g]), False, base[:n])
        result["gains_at_rates"][g] = rows
        print(f"\n### Target gain {g} against {base_gain} at the prefixes (pooled RMSE, {n} images)\n")
        print("| rate (bpd) | images | RMSE gain " + base_gain + f" | RMSE gain {g} | rate for the same RMSE | saving |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['rate_bpd']} | {r['images']} | {fmt(r['rmse_base'], '.2f')} | {fmt(r['rmse_alt'], '.2f')} | "
                  f"{fmt(r.get('alt_rate_for_base_rmse'), '.4f')} | {fmt(r.get('rate_saving_at_equal_rmse'), '+.1%')} |")

    # 4. (b) universal quantization.
    uq = uq_study(base[: args.uq_images])
    result["universal_quantization"] = uq
    print(f"\n### (b) Universal quantization with a shared χ₃ scale, the real q and p_θ ({uq['images']} images)\n")
    print("Bits coded by constriction (each step alone, whole words), information content in brackets.\n")
    print("| t | steps | RMS (μ_q − μ_p)/σ_q | KL per step | UQ, τ² = σ_p² − σ_q² | ÷ KL | UQ, τ per step (+8 bits) | ÷ KL |")
    print("|---|---|---|---|---|---|---|---|")
    for r in uq["bands"]:
        print(f"| {r['t']} | {r['steps']} | {r['mean_rms_delta_over_sd_q']:.3f} | {r['kl_bits_per_step']:.1f} | "
              f"{r['matched_coded_bits_per_step']:.0f} ({r['matched_bits_per_step']:.0f}) | {r['matched_coded_over_kl']:.1f} | "
              f"{r['per_step_coded_bits_per_step']:.0f} ({r['per_step_bits_per_step']:.0f}) | {r['per_step_coded_over_kl']:.1f} |")

    # 5. (c) n-dimensional dithered quantization, ideal cells.
    dims = [int(v) for v in args.lattice_dims.split(",")]
    lat = lattice_study(base[: args.uq_images], dims, args.lattice_samples)
    result["lattice_bound"] = lat
    print("\n### (c) Dithered quantization in n dimensions with ideal (ball) cells: bits ÷ KL, a lower bound\n")
    print("| SNR per dim | KL bits/dim | " + " | ".join(f"n = {n}" for n in dims) + " |")
    print("|---|---|" + "---|" * len(dims))
    for r in lat["curve"]:
        print(f"| {r['snr']:.4f} | {r['kl_bits_per_dim']:.4f} | " + " | ".join(f"{r[f'n{n}_over_kl']:.2f}" for n in dims) + " |")
    print("\n| t | steps | " + " | ".join(f"n = {n}" for n in dims) + " |")
    print("|---|---|" + "---|" * len(dims))
    for r in lat["bands"]:
        print(f"| {r['t']} | {r['steps']} | " + " | ".join(f"{r[f'n{n}_over_kl']:.2f}" for n in dims) + " |")

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
