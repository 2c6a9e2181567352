"""Seconds per image to encode and decode: two source trees of diffcodec, taking turns image by image.

    git worktree add /work/old-wt c161351   # format 4 (float networks), the time issue 17 compares against
    ln -s ../models /work/old-wt/diffcodec/models; ln -s ../cli /work/old-wt/diffcodec/cli
    python bench/intnet_vs_v4_speed.py --trees /work/old-wt,. --labels format4,now --out bench/results/intnet_vs_v4_speed.json
    python bench/intnet_vs_v4_speed.py --trees /work/ref-wt,. --limit 10 --fingerprint   # same files before and after?

Each tree runs in its own worker process (``PYTHONPATH`` = the tree, one torch thread, one search thread,
the shipped model loaded once), so both stay warm; the driver hands them the same validation images
(training-set indices 3500, 3510, ... of the lossless CIFAR-10 array: the test images are kept for final
figures) in turns, alternating which goes first, so a change in the machine's load (another engineer's
jobs, a niced training run) hits both alike.  Each worker first encodes and decodes one image that is not
counted (caches, oneDNN's weight packing).  Reports per-image medians, every decode checked exact, and
each file's SHA-256 (``--fingerprint`` alone prints them: the same files before and after a speed change).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-train-lossless-4000.npy"


def worker(data: Path) -> None:
    """Encode and decode the images named on stdin (one index a line), one JSON line each on stdout."""
    import numpy as np
    import torch

    from diffcodec.codec import CodecConfig, decode, encode
    from diffcodec.models.checkpoint import load_model

    torch.set_num_threads(1)
    images = np.load(data)
    model = load_model()
    config = CodecConfig(search_threads=1)
    print(json.dumps({"ready": True, "codec": sys.modules["diffcodec.codec"].__file__}), flush=True)
    for line in sys.stdin:
        i = int(line)
        with torch.no_grad():
            start = time.perf_counter()
            out = encode(images[i], "RGB", model, config).data
            middle = time.perf_counter()
            exact = bool(np.array_equal(decode(out, model).pixels, images[i]))
            end = time.perf_counter()
        print(json.dumps({"index": i, "encode_s": middle - start, "decode_s": end - middle, "bytes": len(out),
                          "sha256": hashlib.sha256(out).hexdigest(), "exact": exact}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", default=".", help="comma-separated source trees (each run with PYTHONPATH=tree)")
    ap.add_argument("--labels", default=None, help="comma-separated names for the trees (default: their paths)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--start", type=int, default=3500)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=3990, help="the image each worker codes first, not counted")
    ap.add_argument("--fingerprint", action="store_true", help="print the files' SHA-256 only (no timing table)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.data)
    trees = [str(Path(t).resolve()) for t in args.trees.split(",")]
    labels = args.labels.split(",") if args.labels else trees
    indices = [args.start + args.step * k for k in range(args.limit)]
    procs = {}
    for label, tree in zip(labels, trees):
        env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1")
        p = subprocess.Popen([sys.executable, __file__, "--worker", "--data", str(args.data)], env=env, cwd=tree,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(p.stdout.readline())
        print(f"{label}: {ready['codec']}", file=sys.stderr, flush=True)
        procs[label] = p

    def ask(label: str, i: int) -> dict:
        p = procs[label]
        p.stdin.write(f"{i}\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    for label in labels:
        ask(label, args.warmup)
    rows = {label: [] for label in labels}
    for k, i in enumerate(indices):
        order = labels if k % 2 == 0 else labels[::-1]  # who goes first alternates
        for label in order:
            r = ask(label, i)
            rows[label].append(r)
            if not r["exact"]:
                raise SystemExit(f"{label}: image {i} did not decode exactly")
            print(f"{i} {label:<10} encode {r['encode_s']:.3f} s  decode {r['decode_s']:.3f} s  {r['bytes']} bytes  "
                  f"{r['sha256'][:16]}", file=sys.stderr, flush=True)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    summary = {label: {"encode_s_median": statistics.median(r["encode_s"] for r in rs),
                       "decode_s_median": statistics.median(r["decode_s"] for r in rs),
                       "bytes_total": sum(r["bytes"] for r in rs),
                       "fingerprint": hashlib.sha256("".join(r["sha256"] for r in rs).encode()).hexdigest()}
               for label, rs in rows.items()}
    if args.fingerprint:
        for label, s in summary.items():
            print(f"{label}: {s['fingerprint']}  ({s['bytes_total']} bytes over {len(indices)} files)")
        return
    first = labels[0]
    for label, s in summary.items():
        s["encode_vs_first"] = s["encode_s_median"] / summary[first]["encode_s_median"]
        s["decode_vs_first"] = s["decode_s_median"] / summary[first]["decode_s_median"]
        print(f"{label:<10} encode {s['encode_s_median']:.3f} s ({s['encode_vs_first']:.3f}x)  decode "
              f"{s['decode_s_median']:.3f} s ({s['decode_vs_first']:.3f}x)  per image, medians of {len(indices)}; "
              f"files {s['fingerprint'][:16]}")
    if args.out:
        command = f"python bench/intnet_vs_v4_speed.py --trees {args.trees}"
        command += f" --labels {args.labels}" if args.labels else ""
        command += f" --limit {args.limit} --out {args.out}"
        args.out.write_text(json.dumps({
            "command": command, "images": f"{args.data.name} indices {indices[0]}..{indices[-1]} step {args.step}",
            "settings": "one torch thread, one search thread, default CodecConfig, each worker warmed up on image "
                        f"{args.warmup}", "summary": summary, "images_rows": rows}, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
