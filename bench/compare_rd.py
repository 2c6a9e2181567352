"""Compare two diffcodec rate–distortion runs of ``bench/rd_folder.py`` at fixed rates.

    python bench/compare_rd.py bench/results/rd_cifar500.json bench/results/rd_cifar500_v5.json

Prints, for each file, the lossless rate and the pooled RMSE (0–255) at fixed rates, interpolated
linearly in log-rate between the curve's points (as ``bench/baselines_progressive.py`` does), and
the second run's ratio to the first.  ``--json OUT`` writes the same table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from diffcodec.rdcurve import rmse_at_rate

RATES = (0.12, 0.18, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)



def lossy_curve(run: dict) -> list[tuple[float, float]]:
    """(bits/dim, RMSE) of every point but the exact image."""
    points = run["curve"]["points"] if "curve" in run else run["points"]  # older runs wrote the curve at the top
    return [(p["rate_bpd"], p["rmse"]) for p in points if p["rmse"] > 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", type=Path)
    ap.add_argument("other", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in (args.base, args.other)]
    if runs[0]["images"] != runs[1]["images"]:
        raise SystemExit(f"different image counts: {runs[0]['images']} vs {runs[1]['images']}")
    table = {str(p): [rmse_at_rate(lossy_curve(r), rate) for rate in RATES] for p, r in zip((args.base, args.other), runs)}
    a, b = table.values()
    ratios = [None if x is None or y is None else y / x for x, y in zip(a, b)]
    lossless = [r.get("lossless_bpd", math.nan) for r in runs]
    print(f"lossless bits/dim: {lossless[0]:.4f} -> {lossless[1]:.4f} ({100 * (lossless[1] / lossless[0] - 1):+.2f}%)")
    print("| rate (bits/dim) | " + " | ".join(f"{r:g}" for r in RATES) + " |")
    print("|---" * (len(RATES) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join("-" if e is None else f"{e:.2f}" for e in row) + " |")
    print("| ratio | " + " | ".join("-" if q is None else f"{q:.3f}" for q in ratios) + " |")
    if args.json:
        args.json.write_text(json.dumps({"rates": RATES, "rmse": table, "ratio": ratios, "lossless_bpd": dict(zip(table, lossless)),
                                         "command": "python bench/compare_rd.py " + " ".join(map(str, (args.base, args.other)))},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
