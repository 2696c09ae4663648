"""IMDB test accuracy of a recipe: train on aclImdb train (25,000 reviews), score on aclImdb test (25,000).

Prints test accuracy and macro F1, and the whole run's wall time split into load (read the archive), train
(fit(): model load, tokenizing the training texts, the loop, validation, calibration, save; the loop alone
also shown), tokenize (the test texts) and evaluate (forward passes over the test set). Nothing is done
twice: the total is what a user's train-then-evaluate run costs (bench/gpu_check.sh also times the whole
process, imports and start-up included).

`--engine trainer`: the same run with Hugging Face `Trainer` in place of `fit` (the same train/validation
split, tokens, max length, batch, epochs, lr, warmup, weight decay, clipping; bf16 and fused AdamW on a GPU;
no evaluation or saving in its loop, so it keeps its last epoch), scored on the test set the same way.
`--score-variants fp32:64,bf16:256,...`: after the run, the test set scored again in each precision and batch
size (timed, with its accuracy): what scoring 25,000 reviews costs, and that bf16 keeps the labels.

    python bench/imdb_accuracy.py --recipe fast                       # GPU: the full run
    python bench/imdb_accuracy.py --recipe tutorial --model bert-base-uncased
    python bench/imdb_accuracy.py --max-train-samples 200 --max-test-samples 200 --epochs 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bertsent
from bertsent.data.sources import ordered_label_names, read_data, split_validation
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import encode, tokenize, truncate
from bertsent.runtime import scoring_dtype
from bertsent.training import RECIPES, TrainConfig, fit

from common import DEFAULT_IMDB, from_args, machine, model_spec, run_in_scratch, sample, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_IMDB, help="aclImdb folder or archive (default: the shared IMDB)")
    p.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    p.add_argument("--model", default="minilm", help="alias, folder, Hub id, or bert-base (random weights)")
    p.add_argument("--epochs", type=int, help="default: the recipe's")
    p.add_argument("--batch-size", help="default: the recipe's; a number or auto")
    p.add_argument("--lr", type=float, help="default: the recipe's (fast: by model size)")
    p.add_argument("--max-train-samples", type=int, help="train on a random sample (smoke runs)")
    p.add_argument("--max-test-samples", type=int, help="score a random sample of the test set (smoke runs)")
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of train held out to pick the best epoch and calibrate (0: none)",
    )
    p.add_argument("--packing", action=argparse.BooleanOptionalAction, help="default: the recipe's")
    p.add_argument("--attention-dropout", type=float, metavar="X", help="default: the model's")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--engine", choices=["bertsent", "trainer"], default="bertsent")
    p.add_argument("--trainer-group-by-length", action="store_true", help="Trainer: group_by_length sampling")
    p.add_argument("--compile", metavar="MODE", help="ours: torch.compile (default, reduce-overhead, ...)")
    p.add_argument("--max-tokens", type=int, help="ours: padded tokens per batch, at most")
    p.add_argument("--eval-batch-size", type=int, default=64, help="test scoring: sequences per batch")
    p.add_argument("--score-variants", default="", help="also score the test set as PRECISION:BATCH,... (timed)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_in_scratch(_main, args)


def _main(args, work: Path) -> int:
    spec = model_spec(args.model, work)
    clock = time.perf_counter()
    train = sample(read_data(args.data, default_split="train"), args.max_train_samples, args.seed)
    test = sample(read_data(f"{args.data}:test"), args.max_test_samples, args.seed + 1)
    load_s = time.perf_counter() - clock

    batch_size = args.batch_size if args.batch_size in (None, "auto") else int(args.batch_size)
    config = TrainConfig(
        model=spec,
        batch_size=batch_size,
        compile=args.compile or False,
        **from_args(args, "recipe", "epochs", "lr", "seed", "validation_fraction", "packing", "attention_dropout"),
        max_tokens=args.max_tokens,
    )
    validation = None
    if args.validation_fraction > 0:
        train, validation = split_validation(train, args.validation_fraction, args.seed)

    print(f"machine   {machine()}")
    print(f"date      {date.today().isoformat()}")
    print(f"command   python {' '.join(sys.argv)}")
    print(
        f"model     {args.model}; recipe {args.recipe}; train {len(train)} reviews, validation "
        f"{len(validation) if validation is not None else 0}, test {len(test)}",
        flush=True,
    )

    clock = time.perf_counter()
    if args.engine == "trainer":
        model, tokenizer, collator, classes, settings, loop_s = train_with_trainer(train, config, args, work)
        validation_accuracy = None
    else:
        out = work / "model"
        result = fit(train, validation, config, out, overwrite=True, progress=False, log=print, report=False)
        steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [r for r in steps if r.get("samples_per_s")]
        loop_s = len(train) * result.settings["epochs"] / steps[-1]["samples_per_s"] if steps else float("nan")
        loaded = bertsent.load(out)
        model, tokenizer, collator, classes = loaded.model, loaded.tokenizer, loaded.collator, loaded.classes_
        settings, validation_accuracy = result.settings, result.metrics.get("accuracy")
    train_s = time.perf_counter() - clock

    clock = time.perf_counter()  # the training texts are tokenized inside fit(), in train_s
    test_ids = encode(tokenizer, test.texts, settings["max_length"], settings["truncation"])
    tokenize_s = time.perf_counter() - clock
    device = next(model.parameters()).device
    clock = time.perf_counter()
    logits = predict_logits(
        model, test_ids, collator, args.eval_batch_size, device=device, autocast_dtype=scoring_dtype(device)
    )
    evaluate_s = time.perf_counter() - clock

    truth = np.array([classes.index(y) for y in test.labels])
    accuracy, f1 = scores(logits, truth, len(classes))
    variants = score_variants(args.score_variants, model, test_ids, collator, device, truth, logits)
    figures = {
        "engine": args.engine,
        "test_accuracy": accuracy,
        "test_f1_macro": f1,
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "train_s": train_s,
        "train_loop_s": loop_s,
        "evaluate_s": evaluate_s,
        "total_s": load_s + tokenize_s + train_s + evaluate_s,
        "settings": settings,
        "validation": validation_accuracy,
        "scoring": variants,
    }
    print(f"\ntest accuracy {accuracy:.4f}  macro F1 {figures['test_f1_macro']:.4f}  ({len(test)} reviews)")
    print(
        f"wall time: load {load_s:.1f} s, train {train_s:.1f} s (loop {loop_s:.1f} s), tokenize test "
        f"{tokenize_s:.1f} s, evaluate {evaluate_s:.1f} s; total {figures['total_s']:.1f} s"
    )
    for v in variants:
        print(
            f"scoring {len(test)} reviews in {v['precision']}, batch {v['batch_size']}: {v['seconds']:.2f} s "
            f"({len(test) / v['seconds']:,.0f}/s), accuracy {v['accuracy']:.4f}, labels as the first run's: "
            f"{v['same_labels']:.4%}"
        )
    if args.json:
        write_results(args.json, figures=figures)
    return 0


def scores(logits: np.ndarray, truth: np.ndarray, classes: int) -> tuple[float, float]:
    """Accuracy and macro F1."""
    predicted = logits.argmax(axis=1)
    f1s = []
    for c in range(classes):
        tp = np.sum((predicted == c) & (truth == c))
        precision = tp / max(1, np.sum(predicted == c))
        recall = tp / max(1, np.sum(truth == c))
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(predicted == truth)), float(np.mean(f1s))


def score_variants(spec: str, model, ids, collator, device, truth, reference) -> list[dict]:
    """The test set scored in each PRECISION:BATCH of `spec`, timed (after a warm-up batch), with its accuracy
    and its share of labels equal to `reference`'s."""
    import torch

    out = []
    for item in filter(None, spec.split(",")):
        precision, batch = item.split(":")
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        predict_logits(model, ids[: int(batch)], collator, int(batch), device=device, autocast_dtype=dtype)
        if device.type == "cuda":
            torch.cuda.synchronize()
        clock = time.perf_counter()
        logits = predict_logits(model, ids, collator, int(batch), device=device, autocast_dtype=dtype)
        seconds = time.perf_counter() - clock
        out.append(
            {
                "precision": precision,
                "batch_size": int(batch),
                "reviews": len(ids),
                "seconds": seconds,
                "accuracy": scores(logits, truth, logits.shape[1])[0],
                "same_labels": float(np.mean(logits.argmax(1) == reference.argmax(1))),
            }
        )
    return out


def train_with_trainer(train, config: TrainConfig, args, work: Path):
    """Hugging Face Trainer on the same examples and settings as `fit` would use (its resolved config)."""
    from train_speed import run_trainer

    tokenizer = hub.load_tokenizer(config.model)
    classes = ordered_label_names(train.labels)
    tokens = tokenize(tokenizer, train.texts)
    probe = hub.load_classifier(config.model, classes)
    settings = config.resolve(
        parameters=hub.parameter_count(probe),
        max_positions=hub.model_max_length(tokenizer, probe.config),
        token_lengths=[len(ids) for ids, _ in tokens],
        packing_supported=False,
        special_tokens=tokenizer.num_special_tokens_to_add(),
        device_type=runtime_device().type,
    )
    del probe
    ids = truncate(tokens, settings.max_length, settings.truncation)
    labels = [classes.index(y) for y in train.labels]
    trainer_args = argparse.Namespace(
        batch_size=settings.batch_size, epochs=settings.epochs, lr=settings.lr, seed=settings.seed
    )
    run = run_trainer(ids, labels, classes, config.model, trainer_args, work, args.trainer_group_by_length)
    collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    return run["model"], tokenizer, collator, classes, settings.as_dict(), run["train_s"]


def runtime_device():
    from bertsent.runtime import pick_device

    return pick_device()


if __name__ == "__main__":
    sys.exit(main())
