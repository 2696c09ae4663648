"""--class-weights auto against none on imbalanced real reviews: the Rotten Tomatoes snippets subsampled so
that a tenth are positive (the minority), for training and for testing alike.

Both runs: the same model, recipe, seed, training rows and validation split; only the class weights differ.
Both models are scored on the same test rows (from the built-in test split, never seen in training): an
equally imbalanced set (10% positive, as a deployed model would meet) and a balanced one. Prints the
minority class's precision, recall and F1, macro-F1 and accuracy for each.

    python bench/class_weights.py --json bench/results/cpu-class-weights.json
    python bench/class_weights.py --train-rows 1000 --test-rows 500 --model minilm      # quicker
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
from bertsent.data.sources import TextDataset, read_data

from common import machine, run_in_scratch

MINORITY = "positive"
ROWS = ("precision", "recall", "f1")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="minilm")
    p.add_argument("--recipe", default="fast")
    p.add_argument("--train-rows", type=int, default=2000, help="training rows, validation split included")
    p.add_argument("--test-rows", type=int, default=1000, help="rows in each test set")
    p.add_argument("--positive-share", type=float, default=0.1, help="share of positive rows (the minority)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, help="torch threads (default: the machine's cores)")
    p.add_argument("--weights", default="none,auto", help="the --class-weights settings to run (default none,auto)")
    p.add_argument("--json", metavar="FILE")
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="print one table from the JSON of runs made apart (e.g. side by side)",
    )
    return p.parse_args(argv)


def imbalanced(dataset: TextDataset, rows: int, share: float, seed: int, name: str) -> TextDataset:
    """`rows` rows of `dataset`, `share` of them positive, drawn at random (reproducibly) within each class."""
    rng = np.random.RandomState(seed)
    labels = np.array(dataset.labels)
    n_positive = round(rows * share)
    picked = []
    for label, n in ((MINORITY, n_positive), ("negative", rows - n_positive)):
        pool = np.flatnonzero(labels == label)
        if n > len(pool):
            raise SystemExit(f"{dataset.name}: only {len(pool)} {label} rows, {n} wanted. Lower the row counts.")
        picked += rng.choice(pool, n, replace=False).tolist()
    return dataset.subset(sorted(picked), name)


def scores(metrics: dict) -> dict:
    minority = metrics["per_class"][MINORITY]
    return {
        **{f"minority_{k}": round(minority[k], 4) for k in ROWS},
        "f1_macro": round(metrics["f1_macro"], 4),
        "accuracy": round(metrics["accuracy"], 4),
        "n": metrics["n"],
    }


def run(args, work: Path) -> int:
    train_all = read_data("rotten-tomatoes", default_split="train")
    test_all = read_data("rotten-tomatoes:test")
    share = args.positive_share
    train = imbalanced(train_all, args.train_rows, share, args.seed, f"rotten-tomatoes:train ({share:.0%} positive)")
    tests = {
        f"test, {share:.0%} positive": imbalanced(test_all, args.test_rows, share, args.seed + 1, "imbalanced test"),
        "test, balanced": imbalanced(test_all, args.test_rows, 0.5, args.seed + 2, "balanced test"),
    }
    results = []
    for weights in args.weights.split(","):
        print(f"-- --class-weights {weights}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = bertsent.train(
            train,
            out=work / weights,
            model=args.model,
            recipe=args.recipe,
            seed=args.seed,
            class_weights=weights,
            progress=False,
            report=False,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        seconds = time.perf_counter() - started
        row = {"class_weights": weights, "train_seconds": round(seconds, 1), "best_epoch": result.best_epoch}
        row["weights"] = json.loads((result.model_dir / "bertsent.json").read_text())["settings"]["class_weights"]
        row["validation"] = scores(result.metrics)
        for name, test in tests.items():
            row[name] = scores(bertsent.evaluate(result.model_dir, test))
        results.append(row)
    report = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "command": "python bench/class_weights.py " + " ".join(sys.argv[1:]),
        "model": args.model,
        "recipe": args.recipe,
        "seed": args.seed,
        "train": {"source": train.name, "rows": len(train), "labels": train.label_counts()},
        "tests": {name: {"rows": len(t), "labels": t.label_counts()} for name, t in tests.items()},
        "runs": results,
    }
    print(table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def table(report: dict) -> str:
    lines = [
        f"{report['train']['source']}: {report['train']['rows']} rows {report['train']['labels']}; "
        f"{report['model']}, {report['recipe']} recipe, seed {report['seed']}; {report['machine']}",
        f"{'class weights':<14} {'scored on':<22} {'minority P':>10} {'minority R':>10} {'minority F1':>11} "
        f"{'macro F1':>8} {'accuracy':>8}",
    ]
    for row in report["runs"]:
        for name in ("validation", *report["tests"]):
            s = row[name]
            lines.append(
                f"{row['class_weights']:<14} {name + ' (' + str(s['n']) + ')':<22} {s['minority_precision']:>10.4f} "
                f"{s['minority_recall']:>10.4f} {s['minority_f1']:>11.4f} {s['f1_macro']:>8.4f} {s['accuracy']:>8.4f}"
            )
        lines.append(
            f"{'':<14} trained in {row['train_seconds']} s, best epoch {row['best_epoch']}, weights {row['weights']}"
        )
    return "\n".join(lines)


def merge(paths: list[str]) -> dict:
    """One report from several: the same data, model and seed, each file's runs."""
    reports = [json.loads(Path(path).read_text()) for path in paths]
    for key in ("train", "tests", "model", "recipe", "seed"):
        if any(r[key] != reports[0][key] for r in reports):
            raise SystemExit(f"--merge: the runs differ in {key}; merge runs of one setup only.")
    return reports[0] | {"runs": [run for r in reports for run in r["runs"]], "merged": paths}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.merge:
        report = merge(args.merge)
        print(table(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    return run_in_scratch(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
