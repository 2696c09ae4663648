"""Packed (unpadded) against padded batches: same logits? which trains faster? One table, to decide defaults.

On the same length-bucketed batches of real reviews, it first compares the two paths' logits (eval mode,
the device's autocast precision), then times training steps (forward, backward, fused AdamW) for:
padded / packed, each with the model's attention dropout and with none. On CUDA, packed without
attention dropout runs PyTorch's flash varlen kernel; every other packed case runs the padded-attention
fallback. Only the steps after the warm-up are timed, with the device synchronized.

    python bench/packing_check.py --model minilm --samples 2048              # CPU or GPU
    python bench/packing_check.py --model bert-base --samples 4096           # BERT-base shape, random weights
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bertsent.data.sources import read_data
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator, LengthBucketBatchSampler
from bertsent.modeling.packing import PackedClassifier, PackedCollator, varlen_kernel
from bertsent.modeling.tokens import encode

from common import DEFAULT_IMDB, machine, model_spec, run_in_scratch, sample, training_flops, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm", help="alias, folder, Hub id, or bert-base (random weights)")
    p.add_argument("--data", default=DEFAULT_IMDB + ":train")
    p.add_argument("--samples", type=int, default=2048, help="reviews to draw batches from")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=40, help="timed training steps per variant (after 3 warm-up)")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", metavar="FILE")
    return p.parse_args(argv)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    return run_in_scratch(_main, parse_args(argv))


def _main(args, work: Path) -> int:
    spec = model_spec(args.model, work)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    data = sample(read_data(args.data, default_split="train"), args.samples, 0)
    tokenizer = hub.load_tokenizer(spec)
    ids = encode(tokenizer, data.texts, args.max_length, "head+tail")
    labels = [int(y == data.labels[0]) for y in data.labels]
    sampler = LengthBucketBatchSampler([len(x) for x in ids], args.batch_size, shuffle=True, seed=0)
    batches = sampler.batches()
    needed = args.steps + 3
    batches = (batches * (needed // len(batches) + 1))[:needed]
    padded_collator = Collator(
        tokenizer.pad_token_id, tokenizer.padding_side, pad_to_multiple_of=8 if device.type == "cuda" else None
    )
    packed_collator = PackedCollator()

    print(f"machine   {machine()}")
    print(f"date      {date.today().isoformat()}")
    print(f"command   python {' '.join(sys.argv)}")
    print(
        f"model     {args.model}; {len(ids)} reviews, batch {args.batch_size}, max length {args.max_length}; "
        f"autocast {amp}; varlen kernel: "
        f"{'used' if varlen_kernel() and device.type == 'cuda' else 'not used (needs CUDA and PyTorch >= 2.10)'}",
        flush=True,
    )

    # -- 1. same logits
    torch.manual_seed(0)
    model = hub.load_classifier(spec, ["negative", "positive"], attention_dropout=0.0).to(device).eval()
    examples = [(ids[i], labels[i]) for i in batches[0]]
    with torch.no_grad(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        padded = model(**to_device(padded_collator(examples), device)).logits.float()
        packed = PackedClassifier(model)(**to_device(packed_collator(examples), device)).logits.float()
    difference = float((padded - packed).abs().max())
    scale = float(padded.abs().max())
    print(f"logits    max |padded - packed| = {difference:.2e} (largest logit {scale:.2f})")
    del model

    # -- 2. speed
    rows = []
    for packing in (False, True):
        for dropout in (None, 0.0):
            torch.manual_seed(0)
            model = hub.load_classifier(spec, ["negative", "positive"], attention_dropout=dropout).to(device)
            network = PackedClassifier(model) if packing else model
            network.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
            collate = packed_collator if packing else padded_collator
            tokens = samples = 0
            for step, indices in enumerate(batches):
                if step == 3:
                    sync(device)
                    clock = time.perf_counter()
                batch = to_device(collate([(ids[i], labels[i]) for i in indices]), device)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = network(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step >= 3:
                    samples += len(indices)
                    tokens += sum(len(ids[i]) for i in indices)
            sync(device)
            seconds = time.perf_counter() - clock
            lengths = [len(ids[i]) for indices in batches[3:] for i in indices]
            flops = training_flops(model, lengths)
            rows.append(
                {
                    "packing": packing,
                    "attention_dropout": model.config.attention_probs_dropout_prob,
                    "samples_per_s": samples / seconds,
                    "real_tokens_per_s": tokens / seconds,
                    "tflops_real": flops / seconds / 1e12,
                }
            )
            del model, network, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()

    print(
        f"\n{'batches':<8} {'attn dropout':>12} {'samples/s':>10} {'real tok/s':>11} {'TFLOP/s real':>13} "
        f"{'vs padded':>9}"
    )
    base = rows[0]["samples_per_s"]
    for row in rows:
        print(
            f"{'packed' if row['packing'] else 'padded':<8} {row['attention_dropout']:12g} "
            f"{row['samples_per_s']:10.1f} {row['real_tokens_per_s']:11.0f} {row['tflops_real']:13.3f} "
            f"{row['samples_per_s'] / base:8.2f}x"
        )
    if args.json:
        write_results(args.json, logit_difference=difference, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
