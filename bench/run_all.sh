#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, in one go (about 45 minutes on one core; the two halves below
# are independent and can run in parallel on two).
# Usage: bash bench/run_all.sh [MODEL]   (default: the shipped model)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/default.pt}
data=../shared/data/cifar10-test-png
mkdir -p bench/results
# The model's negative ELBO (issue: bits/dim at 100 and 1000 steps).
diffcodec nll "$data" --steps 100 --threads 1 --model "$model" --json > bench/results/nll_s100.json
diffcodec nll "$data" --steps 1000 --limit 50 --threads 1 --model "$model" --json > bench/results/nll_s1000_50.json
# The codec: file size against the ELBO, where the bits go, prefix rates, exactness, speed.
python bench/codec_cifar.py --data "$data" --limit 20 --model "$model" --out bench/results/codec_cifar.json
python bench/chunk_sweep.py --data "$data" --limit 6 --model "$model" --out bench/results/chunk_sweep.json
python bench/profile_codec.py --data "$data" --limit 4 --model "$model" --out bench/results/profile_cifar.json
python bench/profile_codec.py --data ../shared/data/photos --crop 128 --limit 1 --model "$model" \
    --out bench/results/profile_photo128.json
python bench/truncation_series.py --model "$model" --out docs/truncation-series.png
# Rate–distortion on the test images, with the classical codecs at matched rates.
diffcodec rd-curve "$data" --limit 100 --model "$model" --baselines \
    --csv bench/results/rd_cifar100.csv -o bench/results/rd_cifar100.png --json > bench/results/rd_cifar100.json
# Classical lossless codecs on all 500 test images.
python bench/baselines_lossless.py --data "$data" --out bench/results/baselines_lossless.json
# Photos: centre crops, lossless and lossy against the classical codecs.
python bench/photos.py --crop 64 --model "$model" --out bench/results/photos_crop64.json
python bench/photos.py --crop 128 --model "$model" --out bench/results/photos_crop128.json
