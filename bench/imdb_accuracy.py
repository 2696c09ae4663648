"""IMDB test accuracy of a recipe: train on aclImdb train (25,000 reviews), score on aclImdb test (25,000).

Prints test accuracy and macro F1, and the whole run's wall time split into load (read the archive), train
(fit(): model load, tokenizing the training texts, the loop, validation, calibration, save; the loop alone
also shown), tokenize (the test texts) and evaluate (forward passes over the test set). Nothing is done
twice: the total is what a user's train-then-evaluate run costs.

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
from bertsent import model as models
from bertsent.data import read_data, split_validation
from bertsent.inference import predict_logits
from bertsent.training import RECIPES, TrainConfig, fit

from common import DEFAULT_IMDB, machine, model_spec, run_in_scratch, sample


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
        recipe=args.recipe,
        epochs=args.epochs,
        batch_size=batch_size,
        lr=args.lr,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        packing=args.packing,
        attention_dropout=args.attention_dropout,
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

    out = work / "model"
    clock = time.perf_counter()
    result = fit(train, validation, config, out, overwrite=True, progress=False, log=print, report=False)
    train_s = time.perf_counter() - clock
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if r.get("samples_per_s")]
    loop_s = len(train) * result.settings["epochs"] / steps[-1]["samples_per_s"] if steps else float("nan")

    model = bertsent.load(out)
    clock = time.perf_counter()  # the training texts are tokenized inside fit(), in train_s
    test_ids = models.encode(model.tokenizer, test.texts, result.settings["max_length"], result.settings["truncation"])
    tokenize_s = time.perf_counter() - clock
    clock = time.perf_counter()
    logits = predict_logits(model.model, test_ids, model.collator, model.batch_size, device=model.device)
    evaluate_s = time.perf_counter() - clock

    truth = np.array([model.classes_.index(y) for y in test.labels])
    predicted = logits.argmax(axis=1)
    accuracy = float(np.mean(predicted == truth))
    f1s = []
    for c in range(len(model.classes_)):
        tp = np.sum((predicted == c) & (truth == c))
        precision = tp / max(1, np.sum(predicted == c))
        recall = tp / max(1, np.sum(truth == c))
        f1s.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    figures = {
        "test_accuracy": accuracy,
        "test_f1_macro": float(np.mean(f1s)),
        "load_s": load_s,
        "tokenize_s": tokenize_s,
        "train_s": train_s,
        "train_loop_s": loop_s,
        "evaluate_s": evaluate_s,
        "total_s": load_s + tokenize_s + train_s + evaluate_s,
        "settings": result.settings,
        "validation": result.metrics.get("accuracy"),
    }
    print(f"\ntest accuracy {accuracy:.4f}  macro F1 {figures['test_f1_macro']:.4f}  ({len(test)} reviews)")
    print(
        f"wall time: load {load_s:.1f} s, train {train_s:.1f} s (loop {loop_s:.1f} s), tokenize test "
        f"{tokenize_s:.1f} s, evaluate {evaluate_s:.1f} s; total {figures['total_s']:.1f} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"machine": machine(), "date": date.today().isoformat(), "argv": sys.argv, "figures": figures},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
