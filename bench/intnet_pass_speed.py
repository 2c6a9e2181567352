"""Seconds per network pass: the integer networks (models/intnet.py) against the float ones, one torch thread.

    python bench/intnet_pass_speed.py [--repeats 30] [--out bench/results/intnet_pass_speed.json]

The shipped model's U-Net on batches of 1 and 16 (32×32, one timestep, random x_t) and its context
network on batch 1 and 6 (the encoder's plan batches the six colour stages); the float and integer
forms take turns in each repeat, and the median over repeats is reported, so a change in the
machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from diffcodec.models.checkpoint import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model()
    ints = model.integer()
    gen = torch.Generator().manual_seed(0)
    rows = {}
    with torch.no_grad():
        for b in [int(v) for v in args.batches.split(",")]:
            x = torch.randn(b, model.config.in_channels, 32, 32, generator=gen)
            t = torch.full((b,), 100, dtype=torch.long)
            calls = {"float": lambda: model.net(x, t), "int": lambda: ints.net(x, t)}
            cx = [torch.randn(b, 3, 32, 32, generator=gen) for _ in range(5)]
            ls = torch.zeros(b)
            ccalls = {"float": lambda: model.context(*cx, ls), "int": lambda: ints.context(*cx, ls)}
            for net, fns in (("unet", calls), ("context", ccalls)):
                times = {k: [] for k in fns}
                for fn in fns.values():
                    fn()  # warm-up (the integer U-Net caches its time embedding)
                for _ in range(args.repeats):
                    for k, fn in fns.items():
                        start = time.perf_counter()
                        fn()
                        times[k].append(time.perf_counter() - start)
                med = {k: statistics.median(v) for k, v in times.items()}
                rows[f"{net}_batch{b}"] = {"float_s": med["float"], "int_s": med["int"], "int_vs_float": med["int"] / med["float"]}
                print(f"{net:<8} batch {b:>2}: float {med['float'] * 1e3:7.2f} ms  int {med['int'] * 1e3:7.2f} ms  "
                      f"int/float {med['int'] / med['float']:.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"command": f"python bench/intnet_pass_speed.py --repeats {args.repeats} --batches {args.batches} --out {args.out}",
                                        "torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
