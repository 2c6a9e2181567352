"""The rd-curve of a whole folder in a job that can be stopped and resumed: lossless bits/dim and prefixes.

    python bench/rd_folder.py --data ../shared/data/cifar10-test-png --limit 500 \
        --cache bench/results/rd_cifar500.jsonl --csv bench/results/rd_cifar500.csv \
        --out bench/results/rd_cifar500.json

It encodes like ``diffcodec rd-curve`` (the same CodecConfig defaults and the same pooling,
:class:`diffcodec.rdcurve.RDAccumulator`), but appends each image's step reports to ``--cache``
as it goes, so a job cut off by the end of a session continues where it stopped when rerun with
the same arguments (the settings are stored with each line; a line made with other settings is an
error, not silently mixed).  Each file is also decoded and checked to be the exact image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from diffcodec.codec import EXACT_METHODS, CodecConfig, available_cores, decode, encode
from diffcodec.format import VERSION
from diffcodec.images import list_images, load_image
from diffcodec.models.checkpoint import load_model
from diffcodec.rdcurve import RDAccumulator, write_csv


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/cifar10-test-png")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--exact-method", default=CodecConfig.exact_method, choices=list(EXACT_METHODS))
    ap.add_argument("--search-threads", type=int, default=None, help="PFR search threads (does not change the files)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--cache", required=True, help="JSON lines, one per image; reused when rerun")
    ap.add_argument("--point-t-ratio", type=float, default=None,
                    help="the automatic table's grid in t (default: the codec's; inf: no grid, the rule before it)")
    ap.add_argument("--csv", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    model = load_model(args.model)
    config = CodecConfig(exact_method=args.exact_method, search_threads=args.search_threads)
    if args.point_t_ratio is not None:
        config = dataclasses.replace(config, point_t_ratio=args.point_t_ratio)
    # The identity version-5 files carry: the float weights and the integer rules (IntSpec, arithmetic), so a
    # cache made under other integer rules is refused instead of mixed in.
    net = model.integer()
    identity = net.coarse_identity if args.exact_method == "coarse" else net.codec_identity
    # The format version too: the same model writes other files (and cut sizes) in another version.
    settings = {"exact_method": args.exact_method, "model": identity.hex()[:16], "format": VERSION}
    if args.point_t_ratio is not None:
        settings["point_t_ratio"] = args.point_t_ratio
    files = list_images(args.data)[: args.limit]
    cache = Path(args.cache)
    done: dict[str, dict] = {}
    if cache.exists():
        for line in cache.read_text().splitlines():
            row = json.loads(line)
            if row["settings"] != settings:
                raise SystemExit(f"{cache}: {row['name']} was encoded with {row['settings']}, not {settings}")
            done[row["name"]] = row
    with cache.open("a") as log:
        for i, path in enumerate(files):
            if path.name in done:
                continue
            img = load_image(path)
            t0 = time.perf_counter()
            res = encode(img.pixels, img.mode, model, config)
            t1 = time.perf_counter()
            exact = bool(np.array_equal(decode(res.data, model).pixels, img.pixels))
            row = {"name": path.name, "settings": settings, "bytes": len(res.data), "num_dims": res.num_dims,
                   "exact": exact, "exact_method": res.exact_method, "encode_s": t1 - t0,
                   "steps": [{"t": s.t, "partial": s.partial, "bits": s.bits, "kl_bits": s.kl_bits, "rmse": s.rmse}
                             for s in res.steps]}
            log.write(json.dumps(row) + "\n")
            log.flush()
            done[path.name] = row
            print(f"[{i + 1}/{len(files)}] {path.name}: {8 * row['bytes'] / row['num_dims']:.3f} bpd, exact={exact}, "
                  f"{row['exact_method']}, encode {t1 - t0:.1f} s", flush=True)

    rows = [done[p.name] for p in files]
    acc = RDAccumulator(schedule_steps=model.diffusion.num_steps)
    for row in rows:
        acc.add([SimpleNamespace(**s) for s in row["steps"]], row["num_dims"])
    curve = acc.curve()
    if args.csv:
        write_csv(curve, args.csv)
    dims = sum(r["num_dims"] for r in rows)
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {config.threads} torch thread(s), "
                   f"{args.search_threads or available_cores()} search thread(s)",
        "command": "python bench/rd_folder.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "model": model.meta,
        "images": len(rows),
        "lossless_bpd": 8 * sum(r["bytes"] for r in rows) / dims,
        "all_exact": all(r["exact"] for r in rows),
        "exact_methods": {m: sum(r["exact_method"] == m for r in rows) for m in EXACT_METHODS[1:]},
        "encode_s_per_image": float(np.mean([r["encode_s"] for r in rows])),
        "curve": curve.to_json(),
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("images", "lossless_bpd", "all_exact", "exact_methods")}))


if __name__ == "__main__":
    main()
