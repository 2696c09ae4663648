#!/usr/bin/env bash
# The GPU benchmarks in one go (about 10 minutes on an H100/H200), for a session lent a GPU machine.
# Here, first: ../shared/gpu/make_carry.sh   (fills .gpu/ with the fp16 MiniLM and the IMDB archive)
# Then run on the device, from the repository root, carrying .gpu:   bash bench/gpu_check.sh
# The GPU machine has torch, transformers and accelerate but not this package's model wheel, so the
# model and data come from .gpu/. Results land in $OUT (or bench/results) as JSON and logs.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1 BERTSENT_VOCAB_MODEL=.gpu/minilm16 HF_HUB_OFFLINE=1
out="${OUT:-bench/results}"
mkdir -p "$out"
imdb=.gpu/aclImdb_v1_labeled.tar.xz
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
run() { local name=$1; shift; echo "== $name: $*"; timeout 300 python3 "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log" | grep -v "it/s\]$"; }
# MiniLM, the full IMDB train set, ours vs Trainer (target: ours >= 5x, >= 4,200 samples/s)
run gpu-minilm-speed bench/train_speed.py --model .gpu/minilm16 --data "$imdb:train" --samples 25000 --eval-samples 0
# BERT-base shape, random weights, ours vs Trainer (target: >= 1,400 samples/s; Trainer padded-512 reference 472/s)
run gpu-bertbase-speed bench/train_speed.py --model bert-base --data "$imdb:train" --samples 8000 --eval-samples 0
# Accuracy: the fast recipe, 3 epochs at most, whole run under 60 s (target: IMDB test >= 93.0%)
run gpu-imdb-fast bench/imdb_accuracy.py --recipe fast --model .gpu/minilm16 --data "$imdb" --epochs 3
