#!/usr/bin/env bash
# Install diffcodec and run the main job on the bundled sample images:
# encode one image, decode several prefixes of its file, then draw the rate–distortion curve.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check .
out=quickstart-output
mkdir -p "$out"

img=examples/images/cifar10-test-00000.png
diffcodec encode "$img" -o "$out/image.dfc"
diffcodec info "$out/image.dfc"
for t in 600 300 100 0; do
  diffcodec decode "$out/image.dfc" --stop-at-t "$t" -o "$out/decoded-t$t.png"
done
# A prefix is a file too: cut one without re-encoding, and decode it.
diffcodec truncate "$out/image.dfc" --stop-at-t 300 -o "$out/image-t300.dfc"
diffcodec decode "$out/image-t300.dfc" -o "$out/from-prefix.png"
# Most of a lossless file is its exact stage; a prefix ending inside it is x_0 exact in part.
diffcodec truncate "$out/image.dfc" --max-bytes 1200 -o "$out/image-1200-bytes.dfc"
diffcodec decode "$out/image-1200-bytes.dfc" -o "$out/from-1200-bytes.png"
cmp <(python -c "import sys;from PIL import Image;import numpy as np;print(np.asarray(Image.open(sys.argv[1])).tobytes().hex())" "$img") \
    <(python -c "import sys;from PIL import Image;import numpy as np;print(np.asarray(Image.open(sys.argv[1])).tobytes().hex())" "$out/decoded-t0.png") \
  && echo "full decode is bit-exact"

diffcodec rd-curve examples/images --csv "$out/rd.csv" -o "$out/rd.png"
echo "outputs in $out/: decoded-t*.png, rd.csv, rd.png"
