#!/usr/bin/env bash
# The GPU benchmarks in one go, for a session lent a GPU machine. Parts: accuracy (IMDB, ~5 min on an
# H200), speed (ours vs Trainer, ~4 min), check (packing logits and step speed, ~2 min), scaling (1 GPU vs
# all of them, only on a machine with several); default: all four, in that order.
# Here, first: ../shared/gpu/make_carry.sh   (fills .gpu/ with the fp16 MiniLM and the IMDB archive)
# Then run on the device, from the repository root, carrying .gpu:   bash bench/gpu_check.sh [PART ...]
# The GPU machine has torch, transformers and accelerate but not this package's model wheel, so the
# model and data come from .gpu/. Results land in $OUT (or bench/results) as JSON and logs.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1 BERTSENT_VOCAB_MODEL=.gpu/minilm16 HF_HUB_OFFLINE=1
out="${OUT:-bench/results}"
mkdir -p "$out"
imdb=.gpu/aclImdb_v1_labeled.tar.xz
parts="${*:-accuracy speed check scaling}"
# SMOKE=1: the same runs at toy sizes, to try the script on a CPU before spending GPU time on it
if [[ "${SMOKE:-}" == 1 ]]; then
  n_minilm=64 n_bert=32 n_pack=64 steps=2 limit=(--max-train-samples 64 --max-test-samples 32)
else
  n_minilm=25000 n_bert=8000 n_pack=4096 steps=40 limit=()
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
run() { local name=$1; shift; echo "== $name: $*"; timeout 300 python3 "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log" | grep -v "it/s\]$"; }
if [[ " $parts " == *" check "* ]]; then
  # Packed vs padded: the varlen kernel's logits, and training steps with and without attention dropout
  run gpu-packing-minilm bench/packing_check.py --model .gpu/minilm16 --data "$imdb:train" --samples $n_pack --steps $steps
  run gpu-packing-bertbase bench/packing_check.py --model bert-base --data "$imdb:train" --samples $n_pack --steps $steps
fi
if [[ " $parts " == *" speed "* ]]; then
  # MiniLM, the full IMDB train set, ours vs Trainer (target: ours >= 5x, >= 4,200 samples/s)
  run gpu-minilm-speed bench/train_speed.py --model .gpu/minilm16 --data "$imdb:train" --samples $n_minilm --eval-samples 0
  run gpu-minilm-speed-packed bench/train_speed.py --model .gpu/minilm16 --data "$imdb:train" --samples $n_minilm \
    --eval-samples 0 --only ours --packing --attention-dropout 0
  # BERT-base shape, random weights, ours vs Trainer (target: >= 1,400 samples/s; Trainer padded-512 reference 472/s)
  run gpu-bertbase-speed bench/train_speed.py --model bert-base --data "$imdb:train" --samples $n_bert --eval-samples 0
  run gpu-bertbase-speed-packed bench/train_speed.py --model bert-base --data "$imdb:train" --samples $n_bert \
    --eval-samples 0 --only ours --packing --attention-dropout 0
fi
if [[ " $parts " == *" accuracy "* ]]; then
  # Accuracy: the fast recipe, 3 epochs at most, whole run under 60 s (target: IMDB test >= 93.0%)
  run gpu-imdb-fast bench/imdb_accuracy.py --recipe fast --model .gpu/minilm16 --data "$imdb" --epochs 3 "${limit[@]}"
  run gpu-imdb-fast-packed bench/imdb_accuracy.py --recipe fast --model .gpu/minilm16 --data "$imdb" --epochs 3 \
    --packing --attention-dropout 0 "${limit[@]}"
  # On the H200 a batch-32 step is launch-bound (bench/RESULTS.md): what a larger batch costs in accuracy
  run gpu-imdb-fast-b128 bench/imdb_accuracy.py --recipe fast --model .gpu/minilm16 --data "$imdb" --epochs 3 \
    --batch-size 128 "${limit[@]}"
fi
if [[ " $parts " == *" scaling "* ]]; then
  # Data-parallel: ours on 1 GPU, then on every GPU (torchrun), same batch per GPU; prints the efficiency
  gpus=$(nvidia-smi -L | wc -l)
  if (( gpus > 1 )); then
    run gpu-minilm-scaling bench/train_speed.py --model .gpu/minilm16 --data "$imdb:train" --samples $n_minilm \
      --processes "$gpus"
  else
    echo "== scaling: one GPU here, nothing to measure"
  fi
fi
