#!/usr/bin/env bash
# Install diffcodec and run the main job on the bundled sample images:
# encode one image, cut its file into smaller files and decode them, then draw the rate–distortion curve.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "installing diffcodec with pip (a minute or so on a fresh machine)…" >&2
python -m pip install --quiet --disable-pip-version-check .
out=quickstart-output
mkdir -p "$out"

img=examples/images/cifar10-test-00000.png
diffcodec encode "$img" -o "$out/image.dfc"
diffcodec info "$out/image.dfc"
# A prefix is a file too: cut the file without re-encoding (no model needed) and decode each cut file.
# Each lands on the file's truncation point nearest above T (within 1.5×T): larger files, sharper images.
for t in 1000 500 300 100 50; do
  diffcodec truncate "$out/image.dfc" --stop-at-t "$t" -o "$out/image-t$t.dfc"
  diffcodec decode "$out/image-t$t.dfc" -o "$out/cut-t$t.png"
done
# decode --stop-at-t T on the whole file gives the same image as the file truncate cuts for T.
diffcodec decode "$out/image.dfc" --stop-at-t 300 -o "$out/decoded-t300.png"
cmp "$out/decoded-t300.png" "$out/cut-t300.png" && echo "decode --stop-at-t 300 = decode of the cut file"
diffcodec decode "$out/image.dfc" -o "$out/decoded.png"
cmp <(python -c "import sys;from PIL import Image;import numpy as np;print(np.asarray(Image.open(sys.argv[1])).tobytes().hex())" "$img") \
    <(python -c "import sys;from PIL import Image;import numpy as np;print(np.asarray(Image.open(sys.argv[1])).tobytes().hex())" "$out/decoded.png") \
  && echo "full decode is bit-exact"

diffcodec rd-curve examples/images --csv "$out/rd.csv" -o "$out/rd.png"
echo "outputs in $out/: cut-t*.png (from the cut files image-t*.dfc), decoded.png, rd.csv, rd.png"
