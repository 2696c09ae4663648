"""Training speed: bertsent's engine against Hugging Face `transformers.Trainer`, in one run.

Both train the same model from the same initial weights on the same token ids (same max length and
truncation, tokenized once, outside the clocks), with the same batch size, epochs, learning rate, warmup
(10%, linear decay), weight decay (0.01) and gradient clipping (1.0). Trainer runs at its best
configuration for this task: dynamic padding (DataCollatorWithPadding, to a multiple of 8 on GPU), bf16 and
TF32 on GPU, fused AdamW, no evaluation, no saving, no logging, no reports. Ours runs the fast recipe
(length-bucketed batches) with no validation and no calibration.

The clocks time training only: from the first batch to the end of the last optimizer step. Ours: the
training loop's own samples/s in metrics.jsonl (started right before the first batch); Trainer: a callback
from on_train_begin to on_train_end. Model loading, tokenization and saving are outside both clocks.

    python bench/train_speed.py                                   # CPU target: packaged MiniLM, 2,000 reviews
    python bench/train_speed.py --model bert-base --samples 8000  # GPU: BERT-base shape, random weights
    python bench/train_speed.py --processes 8 --samples 25000     # scaling: ours on 1 process, then on 8

With `--processes N`, ours trains once in this process and once on N processes (torchrun, one GPU each),
with the same batch per process (N times the global batch), and the script prints the scaling efficiency:
samples/s on N processes / (N x samples/s on one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bertsent.data.sources import ordered_label_names, read_data
from bertsent.environment import launched_processes, process_rank
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import encode
from bertsent.runtime import set_seed
from bertsent.training import TrainConfig, auto_lr, fit

from common import (
    DEFAULT_IMDB,
    from_args,
    machine,
    model_spec,
    run_in_scratch,
    sample,
    sample_indices,
    training_flops,
    write_results,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="minilm",
        help="alias, folder, Hub id, or bert-base (BertConfig(), random weights, packaged vocab); default minilm",
    )
    p.add_argument("--data", default=DEFAULT_IMDB + ":train", help="training data source (default: IMDB train)")
    p.add_argument(
        "--eval-data",
        help="accuracy-parity data (default: the :test split of an aclImdb --data, else held-out rows of --data)",
    )
    p.add_argument("--samples", type=int, default=2000, help="training reviews, sampled at random (default 2000)")
    p.add_argument("--eval-samples", type=int, default=500, help="reviews to score both models on (0: skip)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, help="peak learning rate for both (default: ours by model size)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--truncation", default="head", choices=["head", "tail", "head+tail"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--only", choices=["ours", "trainer"], help="run one side only")
    p.add_argument("--packing", action="store_true", help="ours on packed (unpadded) batches")
    p.add_argument(
        "--attention-dropout",
        type=float,
        metavar="X",
        help="ours: dropout on attention probabilities (default: the model's)",
    )
    p.add_argument(
        "--trainer-group-by-length",
        action="store_true",
        help="also time Trainer with train_sampling_strategy='group_by_length'",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="also train ours on N processes (torchrun) and print "
        "the scaling efficiency; implies --only ours --eval-samples 0",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return p.parse_args(argv)


def run_ours(train, spec: str, args, work: Path) -> dict:
    given = from_args(args, "epochs", "batch_size", "lr", "max_length", "truncation", "seed", "packing")
    config = TrainConfig(
        model=spec,
        recipe="fast",
        validation_fraction=0.0,
        calibrate=False,
        attention_dropout=args.attention_dropout,
        **given,
    )
    out = work / "ours"
    result = fit(
        train, None, config, out, overwrite=True, progress=False, log=lambda *_: None, report=False
    )  # no HTML report either
    if process_rank():  # under torchrun only the main process writes the log and the model
        return {}
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "samples_per_s" in r]
    samples = len(train) * args.epochs
    per_s = steps[-1]["samples_per_s"]
    return {
        "samples_per_s": per_s,
        "train_s": samples / per_s,
        "steps": len(steps),
        "mean_loss": float(np.mean([r["loss"] for r in steps])),
        "fit_total_s": result.train_seconds,
        "model": hub.load_classifier(str(out)),
    }


def run_trainer(train_ids, train_labels, label_names, spec: str, args, work: Path, group_by_length=False) -> dict:
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    tokenizer = hub.load_tokenizer(spec)
    set_seed(args.seed)  # as fit() does before loading: both start from the same classifier head
    model = hub.load_classifier(spec, label_names)
    hub.set_padding_token(model, tokenizer)
    cuda = torch.cuda.is_available()
    dataset = [
        {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": y} for ids, y in zip(train_ids, train_labels)
    ]

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_train_end(self, *_, **__):
            self.end = time.perf_counter()

    clock = Clock()
    settings = dict(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0.1,
        weight_decay=0.01,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        bf16=cuda and torch.cuda.is_bf16_supported(),
        tf32=True if cuda else None,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
    )
    # Other transformers 5.x releases (the GPU machine's is older than this machine's) name two of these
    # differently: a warmup ratio in `warmup_ratio`, and `group_by_length=True`.
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" not in fields:
        settings["group_by_length"] = settings.pop("train_sampling_strategy") == "group_by_length"
    if "warmup_ratio" in fields:
        settings["warmup_ratio"] = settings.pop("warmup_steps")
    training_args = TrainingArguments(**settings)
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None)
    trainer = Trainer(model=model, args=training_args, data_collator=collator, train_dataset=dataset, callbacks=[clock])
    output = trainer.train()
    seconds = clock.end - clock.start
    return {
        "samples_per_s": len(dataset) * args.epochs / seconds,
        "train_s": seconds,
        "steps": output.global_step,
        "mean_loss": output.training_loss,
        "model": trainer.model,
    }


def accuracy(model, ids, labels, tokenizer) -> float:
    collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    logits = predict_logits(model, ids, collator, batch_size=64)
    return float(np.mean(logits.argmax(axis=1) == np.array(labels)))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.processes > 1 or launched_processes() > 1:  # Trainer and the test scoring run on one process only
        args.only, args.eval_samples = "ours", 0
    if process_rank():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the other processes print nothing
    return run_in_scratch(_main, args)


def run_processes(args, work: Path) -> dict:
    """Ours on `args.processes` processes: this script again under torchrun; its figures from its JSON."""
    figures = work / "processes.json"
    argv, skip = [], False
    for arg in sys.argv[1:]:  # the same arguments, but --processes and --json (and their values)
        if not skip and arg.split("=")[0] not in ("--processes", "--json"):
            argv.append(arg)
        skip = arg in ("--processes", "--json")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               str(args.processes), __file__, *argv, "--json", str(figures)]  # fmt: skip
    subprocess.run(command, check=True)
    return json.loads(figures.read_text())["figures"]["ours"]


def report(args, runs: dict, flops: float, eval_set, score) -> dict:
    """Print the table (and the ratios), return the figures; `score(model)` is a model's test accuracy."""
    unit, scale = ("TFLOP/s", 1e12) if torch.cuda.is_available() else ("GFLOP/s", 1e9)
    figures = {}
    print(
        f"\n{'engine':<16} {'samples/s':>10} {'train s':>9} {'steps':>6} {unit + ' real':>13} "
        f"{'mean loss':>10} {'accuracy':>9}"
    )
    for name, run in runs.items():
        acc = score(run["model"]) if eval_set is not None and "model" in run else None
        figures[name] = {k: v for k, v in run.items() if k != "model"} | {
            "flops_per_s": flops / run["train_s"],
            "accuracy": acc,
        }
        print(
            f"{name:<16} {run['samples_per_s']:10.2f} {run['train_s']:9.1f} {run['steps']:6d} "
            f"{flops / run['train_s'] / scale:13.2f} {run['mean_loss']:10.4f} "
            f"{'' if acc is None else f'{acc:9.4f}'}"
        )
    scaled = runs.get(f"ours_{args.processes}_processes")
    if scaled:
        speedup = scaled["samples_per_s"] / runs["ours"]["samples_per_s"]
        figures["scaling_efficiency"] = speedup / args.processes
        print(
            f"\nscaling 1 -> {args.processes} processes: {speedup:.2f}x samples/s, efficiency "
            f"{speedup / args.processes:.1%} (batch {args.batch_size} per process)"
        )
    if "ours" in runs and "trainer" in runs:
        ratio = runs["ours"]["samples_per_s"] / runs["trainer"]["samples_per_s"]
        figures["ratio_ours_over_trainer"] = ratio
        print(f"\nours / Trainer: {ratio:.2f}x samples/s")
        if "trainer_grouped" in runs:
            print(
                f"ours / Trainer (group_by_length): "
                f"{runs['ours']['samples_per_s'] / runs['trainer_grouped']['samples_per_s']:.2f}x samples/s"
            )
        if eval_set is not None:
            print(
                f"accuracy on {len(eval_set)} held-out reviews ({eval_set.name}): ours "
                f"{figures['ours']['accuracy']:.4f}, Trainer {figures['trainer']['accuracy']:.4f}"
            )
    return figures


def _main(args, work: Path) -> int:
    spec = model_spec(args.model, work)
    full = read_data(args.data, default_split="train")
    train = sample(full, args.samples, args.seed)
    label_names = ordered_label_names(train.labels)
    index = {name: i for i, name in enumerate(label_names)}
    train_labels = [index[y] for y in train.labels]
    tokenizer = hub.load_tokenizer(spec)
    train_ids = encode(tokenizer, train.texts, args.max_length, args.truncation)
    lengths = [len(x) for x in train_ids]

    eval_set = eval_ids = eval_labels = None
    if args.eval_samples:
        if args.eval_data or args.data.endswith(":train"):
            source = args.eval_data or args.data[: -len(":train")] + ":test"
            eval_set = sample(read_data(source, default_split="test"), args.eval_samples, args.seed + 1)
        else:
            held_out = sorted(set(range(len(full))) - set(sample_indices(len(full), args.samples, args.seed)))
            eval_set = sample(full.subset(held_out), args.eval_samples, args.seed + 1)
        eval_ids = encode(tokenizer, eval_set.texts, args.max_length, args.truncation)
        eval_labels = [index[y] for y in eval_set.labels]

    probe = hub.load_classifier(spec, label_names)
    if args.lr is None:
        args.lr = auto_lr(hub.parameter_count(probe))
    flops = training_flops(probe, lengths, args.epochs)
    del probe

    print(f"machine   {machine()}")
    print(f"date      {date.today().isoformat()}")
    print(f"command   python {' '.join(sys.argv)}")
    print(f"model     {args.model} ({spec})")
    print(
        f"data      {train.name}: {len(train)} reviews, {sum(lengths)} real tokens (mean {np.mean(lengths):.0f}, "
        f"max {max(lengths)}), max length {args.max_length}, {args.truncation} truncation"
    )
    print(
        f"settings  epochs {args.epochs}, batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}; ours: "
        f"{'packed' if args.packing else 'padded'} batches, attention dropout "
        f"{'the model' + chr(39) + 's' if args.attention_dropout is None else args.attention_dropout}"
    )
    sys.stdout.flush()

    runs = {}
    if args.only in (None, "ours"):
        runs["ours"] = run_ours(train, spec, args, work)
    if process_rank():
        return 0
    if args.processes > 1:
        runs[f"ours_{args.processes}_processes"] = run_processes(args, work)
    if args.only in (None, "trainer"):
        runs["trainer"] = run_trainer(train_ids, train_labels, label_names, spec, args, work)
    if args.trainer_group_by_length:
        runs["trainer_grouped"] = run_trainer(train_ids, train_labels, label_names, spec, args, work, True)

    figures = report(args, runs, flops, eval_set, lambda model: accuracy(model, eval_ids, eval_labels, tokenizer))
    if args.json:
        write_results(args.json, figures=figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
