"""What the integer networks (models/intnet.py) cost against the float ones, in file size and time.

    python bench/intnet_cost.py --limit 20 --out bench/results/intnet_cost.json

Encodes validation images (training-set indices 3500, 3525, ... of the lossless CIFAR-10 array: the
test images are kept for final figures) four times with the format-5 codec, whose integer model is
swapped for: the float networks, the integer U-Net only, the integer context networks only, and both
(the codec as it ships); lossless bits/dim, and seconds per image to encode and to decode (every decode
checked exact), for each.  Only the networks differ
between the rows (schedule, randomness and the rest are format 5's exact ones), so the rows measure
what making the networks integer costs.  A float row's file is not portable: it is a measurement.
One torch thread, one search thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffcodec.codec import CodecConfig, decode, encode
from diffcodec.models.checkpoint import load_model
from diffcodec.models.intnet import IntContextNet, IntSpec, IntUNet
from diffcodec.models.checkpoint import CONTEXT_INT_SPEC, UNET_INT_SPEC

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-lossless-4000.npy"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--unet-spec", default=None, help="IntSpec fields for the U-Net, as JSON (default: the format's)")
    ap.add_argument("--context-spec", default=None, help="IntSpec fields for the context networks, as JSON (default: the format's)")
    ap.add_argument("--variants", default="float,int_unet,int_context,int_both", help="which rows, comma separated")
    ap.add_argument("--out", type=Path, default=Path("bench/results/intnet_cost.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = np.load(args.data)
    indices = list(range(3500, 4000, 25))[: args.limit]
    unet_spec = IntSpec(**json.loads(args.unet_spec)) if args.unet_spec else UNET_INT_SPEC
    context_spec = IntSpec(**json.loads(args.context_spec)) if args.context_spec else CONTEXT_INT_SPEC
    names = [n for n in ("float", "int_unet", "int_context", "int_both") if n in args.variants.split(",")]
    models = {}
    for name in names:
        model = load_model()
        ints = model.integer()  # what the codec runs; its networks swapped below
        ints.net = IntUNet(model.net, unet_spec) if name in ("int_unet", "int_both") else model.net
        if name in ("int_context", "int_both"):
            ints.context, ints.coarse = IntContextNet(model.context, context_spec), IntContextNet(model.coarse, context_spec)
        else:
            ints.context, ints.coarse = model.context, model.coarse
        models[name] = model
    rows = {name: {"bits": [], "encode_seconds": 0.0, "decode_seconds": 0.0} for name in names}
    with torch.no_grad():
        for i in indices:  # the variants take turns on each image, so a change in the machine's load hits them alike
            for name, model in models.items():
                start = time.perf_counter()
                data = encode(images[i], "RGB", model, CodecConfig(search_threads=1)).data
                middle = time.perf_counter()
                if not np.array_equal(decode(data, model).pixels, images[i]):
                    raise SystemExit(f"{name}: image {i} did not decode exactly")
                row = rows[name]
                row["encode_seconds"] += (middle - start) / len(indices)
                row["decode_seconds"] += (time.perf_counter() - middle) / len(indices)
                row["bits"].append(8 * len(data))
    for name, row in rows.items():
        row["bpd"] = sum(row["bits"]) / (len(indices) * images[0].size)
        print(f"{name:<12} {row['bpd']:.4f} bits/dim  encode {row['encode_seconds']:.2f} s  "
              f"decode {row['decode_seconds']:.2f} s per image", flush=True)
    if "float" in rows:
        for row in rows.values():
            row["vs_float"] = row["bpd"] / rows["float"]["bpd"]
            row["encode_vs_float"] = row["encode_seconds"] / rows["float"]["encode_seconds"]
            row["decode_vs_float"] = row["decode_seconds"] / rows["float"]["decode_seconds"]
    command = f"python bench/intnet_cost.py --limit {args.limit} --variants {','.join(names)}"
    command += f" --unet-spec '{args.unet_spec}'" if args.unet_spec else ""
    command += f" --context-spec '{args.context_spec}'" if args.context_spec else ""
    out = {"command": command + f" --out {args.out}", "images": f"{args.data.name} indices {indices[0]}..{indices[-1]} step 25",
           "unet_spec": unet_spec.to_dict(), "context_spec": context_spec.to_dict(), "torch": torch.__version__, "rows": rows}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
