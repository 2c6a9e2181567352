"""Fit format 7's static step tables (diffcodec/step_tables.py) on training images.

    python bench/fit_step_tables.py --cache /tmp/step-traces --out diffcodec/step_tables.py

1. **Trace**: encode training images with the shipped default model and the default encoder (S = 50 quad,
   chunks of 13 bits, 32×32; one torch and one search thread) and record every coded step's symbols: its step,
   level, chunk count, class and chunk indices.  The symbols do not depend on how they are entropy coded (the
   search picks them; the step coder only writes them), so any format version's encoder gives the same traces.
   Cached per image in ``--cache``.  The images: ``cifar10-train-lossless-4000.npy`` 0–299 and
   ``flowers32-lossless-3000.npy`` 0–99, training images only (validation is CIFAR train 3500–3999 and
   flowers 2700–2999; the test PNGs are never used).
2. **Fit** integer counts (docs/format.md, "The step code (version 7)"): the exponent e = bit_length(k) per class,
   the level's change from the previous level in two contexts (previous step one chunk or several), and for
   the chain positions where at least ``SHARE`` of the images coded one chunk, a "one chunk" flag's counts,
   the position's exponent table and the level it stands for.  Smoothing: add-half with a prior shaped like
   the pooled table, then probabilities scaled to ``TOTAL`` and rounded, every count at least 1.
3. **Write** the counts as a Python literal module (the tables are part of the format: integers, committed).

The float arithmetic of steps 2–3 runs only here; the codec reads the integers.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
TRAINING = (("cifar10-train-lossless-4000.npy", 0, 300), ("flowers32-lossless-3000.npy", 0, 100))
# A position gets a one-chunk flag where at least this share of the fitted images coded one chunk.  Chosen by 2-fold
# cross-validation on the training traces (ideal bits per image of the whole step code, tables fitted on the other
# half): 2248.4 at 0.95 (the study's), 2240.5 at 0.9, 2235.9 at 0.85, 2235.5 at 0.8, 2235.0 at 0.75 and 0.7
# (the same positions), 2235.3 at 0.6.
SHARE = 0.75
TOTAL = 1 << 16  # each table's counts sum to about this
EXPONENTS = 21  # e = bit_length(k), 0..MAX_INDEX_BITS (20)
LEVEL_SYMBOLS = 34  # the level's change −16..16, then the escape


# --------------------------------------------------------------------------- 1. traces


def trace_image(pixels: np.ndarray, model) -> dict:
    """The coded steps' symbols of one image under the default encoder (steps 1 … exact_from's; step 0, x_T,
    is shared randomness and codes nothing from format 6 on)."""
    from diffcodec import codec as codec_module
    from diffcodec.codec import CodecConfig, encode

    original = codec_module._simulate_step
    records: list[tuple[int, object]] = []

    def recording(*args, **kwargs):
        out = original(*args, **kwargs)
        records.append((int(args[3]), out[0]))  # (step, its StepSymbols)
        return out

    codec_module._simulate_step = recording
    try:
        res = encode(np.ascontiguousarray(pixels), "RGB", model, CodecConfig(search_threads=1))
    finally:
        codec_module._simulate_step = original
    last = len(res.lossy_steps) - 1  # pass 1 simulates a few steps past the stop
    kept = [(s, sym) for s, sym in records if 1 <= s <= last]
    assert [s for s, _ in kept] == list(range(1, last + 1))
    h = res.file.header
    return {
        "step": np.array([s for s, _ in kept]), "level": np.array([sym.level for _, sym in kept]),
        "chunks": np.array([sym.chunks for _, sym in kept]), "cls": np.array([sym.cls for _, sym in kept]),
        "indices": np.array([k for _, sym in kept for k in sym.indices], dtype=np.int64),
        "num_steps": h.num_steps, "spacing": h.spacing, "chunk_bits": h.chunk_bits, "schedule_steps": h.schedule_steps,
        "dims": int(pixels.size), "bits": res.bits_total,
    }


def traces(cache: Path, model_path: str | None, sets=TRAINING) -> list[dict]:
    import torch

    from diffcodec.models.checkpoint import load_model

    torch.set_num_threads(1)
    cache.mkdir(parents=True, exist_ok=True)
    model, out = None, []
    for name, first, count in sets:
        images = np.load(DATA / name, mmap_mode="r")
        for i in range(first, first + count):
            path = cache / f"{Path(name).stem}-{i}.npz"
            if not path.exists():
                model = model or load_model(model_path)
                start = time.perf_counter()
                tr = trace_image(images[i], model)
                np.savez_compressed(path, **tr)
                print(f"{name} {i}: {len(tr['step'])} coded steps, {tr['bits']} bits, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            z = np.load(path)
            tr = {k: z[k] for k in z.files}
            tr["indices"] = np.split(tr["indices"], np.cumsum(tr["chunks"])[:-1])
            out.append(tr)
    return out


# --------------------------------------------------------------------------- 2. fitting (floats here only)


def to_counts(p: np.ndarray) -> list[int]:
    """Probabilities as integer counts summing to about TOTAL, each at least 1."""
    return [int(c) for c in np.maximum(1, np.round(np.asarray(p, dtype=np.float64) / p.sum() * TOTAL)).astype(np.int64)]


def fit(trs: list[dict]) -> dict:
    from diffcodec.step_code import level_context, level_symbol

    chunk_bits = int(trs[0]["chunk_bits"])
    cls_counts = np.zeros((chunk_bits + 1, EXPONENTS))
    lev_counts = np.zeros((2, LEVEL_SYMBOLS))
    top_counts = np.zeros(2)
    by_position: dict[int, list] = {}
    for tr in trs:
        S = int(tr["num_steps"])
        prev = 0
        for s, level, chunks, cls, ks in zip(tr["step"], tr["level"], tr["chunks"], tr["cls"], tr["indices"]):
            lev_counts[level_context(prev, chunk_bits), level_symbol(int(level), prev)] += 1
            prev = int(level)
            by_position.setdefault(S - int(s), []).append((int(chunks) == 1 and int(level) < chunk_bits, int(level), ks))
            for k in ks:
                e = int(k).bit_length()
                cls_counts[int(cls), e] += 1
                if e >= 2:
                    top_counts[(int(k) >> (e - 2)) & 1] += 1
    pooled = cls_counts.sum(axis=0) + 0.5
    pooled = pooled / pooled.sum()
    prior = 0.5 * EXPONENTS * pooled  # add-half, shaped like the pooled table
    exponent = [to_counts(c + prior) for c in cls_counts]
    levels = [to_counts(c + 0.5) for c in lev_counts]
    positions = {}
    for position, rows in sorted(by_position.items()):
        singles = [(level, ks) for single, level, ks in rows if single]
        if len(rows) < 10 or len(singles) < SHARE * len(rows):
            continue
        c = np.zeros(EXPONENTS)
        for _, ks in singles:
            c[int(ks[0]).bit_length()] += 1
        p1 = (len(singles) + 0.5) / (len(rows) + 1.0)
        positions[position] = {
            "one_chunk": to_counts(np.array([1.0 - p1, p1])),
            "exponent": to_counts(c + 4.0 * pooled),
            "level": int(np.median([level for level, _ in singles])),
            "images": len(rows),
        }
    return {"chunk_bits": chunk_bits, "exponent": exponent, "levels": levels, "mantissa_top": to_counts(top_counts + 0.5),
            "positions": positions, "counts": {"exponent": cls_counts, "levels": lev_counts, "top": top_counts},
            "chain": {k: np.asarray(trs[0][k]).item() for k in ("num_steps", "spacing", "schedule_steps", "dims")}}


# --------------------------------------------------------------------------- 3. the module


def module_text(t: dict, images: int, command: str) -> str:
    from diffcodec.format import SPACINGS

    chain = t["chain"]
    lines = [
        '"""Format 7\'s static step tables: integer counts, part of the format (docs/format.md, "The step code (version 7)").',
        "",
        f"Generated by ``{command}`` from {images} training images; do not edit by hand.",
        "Changing any number is a format change.  Read by :mod:`diffcodec.step_code`.",
        '"""',
        "",
        "# The chain the position tables were fitted on; other chains and image sizes use the class tables alone.",
        f"FITTED_CHUNK_BITS = {t['chunk_bits']}",
        f"FITTED_CHAIN = ({chain['schedule_steps']}, {chain['num_steps']}, {SPACINGS.index(chain['spacing'])}, {chain['dims']})"
        "  # (T, S, spacing code, real dimensions)",
        "",
        "# EXPONENT[c][e]: the exponent e = bit_length(k) of a chunk index in class c (0..FITTED_CHUNK_BITS).",
        "EXPONENT = (",
        *[f"    {tuple(row)},  # class {c}" for c, row in enumerate(t["exponent"])],
        ")",
        "",
        "# LEVEL_CHANGE[context][d + 16]: the level's change d = level − previous in −16..16; [33]: an escape (10 raw",
        "# bits follow).  Context 0: the previous level is a one-chunk level (< chunk_bits), 1: several chunks.",
        "LEVEL_CHANGE = (",
        *[f"    {tuple(row)}," for row in t["levels"]],
        ")",
        "",
        "# The mantissa's first bit below the leading one (e ≥ 2): 0 or 1 (PFR indices lean to the lower half).",
        f"MANTISSA_TOP = {tuple(t['mantissa_top'])}",
        "",
        "# POSITIONS[chain position] = (ONE_CHUNK counts (no, yes), the position's EXPONENT counts, the level a",
        "# one-chunk step there stands for), on FITTED_CHAIN only.",
        "POSITIONS = {",
        *[f"    {p}: ({tuple(v['one_chunk'])}, {tuple(v['exponent'])}, {v['level']})," for p, v in sorted(t["positions"].items())],
        "}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True, help="per-image traces (npz), reused when present")
    ap.add_argument("--out", type=Path, default=None, help="write the tables module here (e.g. diffcodec/step_tables.py)")
    ap.add_argument("--model", default=None, help="the model (default: the shipped one)")
    ap.add_argument("--trace-only", action="store_true")
    args = ap.parse_args()
    trs = traces(args.cache, args.model)
    if args.trace_only:
        return
    chains = {(int(tr["schedule_steps"]), int(tr["num_steps"]), str(tr["spacing"]), int(tr["dims"]), int(tr["chunk_bits"]))
              for tr in trs}
    if len(chains) != 1:
        raise SystemExit(f"the traces mix chains: {chains}")
    tables = fit(trs)
    print(f"{len(trs)} images, {sum(len(tr['step']) for tr in trs)} coded steps; one-chunk positions: "
          f"{sorted(tables['positions'])}")
    if args.out:
        args.out.write_text(module_text(tables, len(trs), "python bench/fit_step_tables.py --cache DIR --out " + str(args.out)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
