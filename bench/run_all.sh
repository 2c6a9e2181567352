#!/usr/bin/env bash
# Every figure in BENCHMARKS.md, in one go (about 2 hours on this 2-core machine, plus an hour for the
# whole photo at the end). The timed runs
# come first and alone (the codec's PFR search uses every core by default); the rest is deterministic.
# Usage: bash bench/run_all.sh [MODEL]   (default: the shipped model)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/default.pt}
data=../shared/data/cifar10-test-png
mkdir -p bench/results
# Timed: the codec's file size against the ELBO, where the bits go, prefix rates, exactness, speed
# (default search threads, then one), and the time profile by component.
python bench/codec_cifar.py --data "$data" --limit 20 --model "$model" --out bench/results/codec_cifar.json
python bench/codec_cifar.py --data "$data" --limit 20 --learned-candidates 50 --learned-margin 10 --model "$model" \
    --out bench/results/codec_cifar_learned_everywhere.json
python bench/codec_cifar.py --data "$data" --limit 20 --search-threads 1 --model "$model" \
    --out bench/results/codec_cifar_1thread.json
python bench/profile_codec.py --data "$data" --limit 4 --model "$model" --out bench/results/profile_cifar.json
python bench/profile_codec.py --data "$data" --limit 4 --model "$model" --search-threads 1 --out bench/results/profile_cifar_1thread.json
python bench/profile_codec.py --data ../shared/data/photos --crop 128 --limit 1 --model "$model" \
    --out bench/results/profile_photo128.json
# The model's negative ELBO (issue: bits/dim at 100 and 1000 steps).
diffcodec nll "$data" --steps 100 --threads 1 --model "$model" --json > bench/results/nll_s100.json
diffcodec nll "$data" --steps 1000 --limit 50 --threads 1 --model "$model" --json > bench/results/nll_s1000_50.json
# The exact stage from several states against the ELBO's remaining terms (docs/codec.md).
python bench/exact_stage.py --data "$data" --limit 16 --steps 100 --model "$model" | tail -1 > bench/results/exact_stage.json
# The order of the exact stage's stages (previews at partial points against lossless size), under one linear model.
python bench/stage_order.py --data "$data" --limit 16 --t 31 --model "$model" | tail -1 > bench/results/stage_order.json
# A coarse pass (bins of w levels) before the exact stage: previews and lossless cost, a design study.
python bench/coarse_pass.py --data "$data" --limit 16 --t 31 --model "$model" | tail -1 > bench/results/coarse_pass_t31.json
python bench/coarse_pass.py --data "$data" --limit 16 --t 61 --model "$model" | tail -1 > bench/results/coarse_pass_t61.json
# The exact stage's default weights (DEFAULT_WEIGHTS in diffcodec/exact.py), refit: compare by eye, not written.
python bench/exact_weights.py --data "$data" --model "$model"
# Chunking, target gain and steps (docs/codec.md).
python bench/chunk_sweep.py --data "$data" --limit 10 --model "$model" --out bench/results/chunk_sweep.json \
    --settings '13,3,16,1.0;13,3,16,1.2;13,3,16,1.4;13,3,16,1.7;12,3,16,1.4;14,3,17,1.4;13,3,16,1.4,35;13,3,16,1.4,70'
python bench/truncation_series.py --model "$model" --out docs/truncation-series.png
# Rate–distortion on the test images, with the classical codecs at matched rates; then the whole
# chain (--exact-from-t 1), which keeps lossy prefixes up to t = 1 at the price of a larger lossless file.
diffcodec rd-curve "$data" --limit 100 --model "$model" --baselines --search-threads 1 \
    --csv bench/results/rd_cifar100.csv -o bench/results/rd_cifar100.png --json > bench/results/rd_cifar100.json
diffcodec rd-curve "$data" --limit 100 --model "$model" --exact-from-t 1 --search-threads 1 \
    --csv bench/results/rd_cifar100_full.csv -o bench/results/rd_cifar100_full.png --json > bench/results/rd_cifar100_full.json
# The coarse-to-fine exact stage (--exact-method coarse): sizes and the rate-distortion curve it gives.
python bench/codec_cifar.py --data "$data" --limit 20 --exact-method coarse --search-threads 1 --model "$model" \
    --out bench/results/codec_cifar_coarse.json
diffcodec rd-curve "$data" --limit 100 --model "$model" --exact-method coarse --search-threads 1 \
    --csv bench/results/rd_cifar100_coarse.csv -o bench/results/rd_cifar100_coarse.png --json > bench/results/rd_cifar100_coarse.json
python bench/truncation_series.py --model "$model" --exact-method coarse --stages 3,6,9 --out docs/truncation-series-coarse.png
# Classical codecs on all 500 test images, lossless and at their quality settings.
python bench/baselines_lossless.py --data "$data" --out bench/results/baselines_lossless.json
python bench/baselines_lossy.py --data "$data" --out bench/results/baselines_lossy.json
# diffcodec on all 500 (~75 minutes beside another job; resumable: rerun continues from the cache).
python bench/rd_folder.py --data "$data" --limit 500 --search-threads 1 --model "$model" --cache bench/results/rd_cifar500.jsonl \
    --csv bench/results/rd_cifar500.csv --out bench/results/rd_cifar500.json
# Photos: centre crops, lossless and lossy against the classical codecs.
python bench/photos.py --crop 64 --search-threads 1 --model "$model" --out bench/results/photos_crop64.json
python bench/photos.py --crop 128 --search-threads 1 --model "$model" --out bench/results/photos_crop128.json
python bench/photos.py --crop 0 --limit 1 --search-threads 1 --model "$model" --out bench/results/photos_full.json  # ~1 hour
python bench/photos.py --crop 0 --limit 1 --search-threads 1 --model "$model" --target-gain 1.0 \
    --out bench/results/photos_full_gain1.json  # the same photo aimed at the posterior itself
# What a prefix costs against its KL (design studies: one PFR chunk; prefixes per target gain).
python bench/pfr_overhead.py --chunks 200 --out bench/results/pfr_overhead.json
python bench/prefix_overhead.py --crop 128 --limit 4 --gains 1.0,1.4 --search-threads 1 --model "$model" \
    --out bench/results/prefix_overhead_crop128.json
python bench/rd_folder.py --data "$data" --limit 500 --exact-method coarse --search-threads 1 --model "$model" \
    --cache bench/results/rd_cifar500_coarse.jsonl --csv bench/results/rd_cifar500_coarse.csv \
    --out bench/results/rd_cifar500_coarse.json  # the coarse-to-fine files on all 500 (~40 minutes on one core)
# HEVC intra (x265 + libde265: apt-get install x265 libde265-examples) and the progressive files cut at their
# layers and scans (issue 19), beside baselines_lossy.json and the rd_cifar500 files above (~15 minutes on one core).
python bench/baselines_progressive.py --data "$data" --out bench/results/baselines_progressive.json
