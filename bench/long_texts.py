"""What each way of scoring long texts gets, for one trained model, on IMDB test reviews.

Strategies: `--long head|tail|head+tail|windows` at a length (512: the model's limit; or the length the model
was trained at, e.g. 64 for the default Rotten Tomatoes model). Prints accuracy, macro F1, ROC-AUC and
reviews/s for each, on a reproducible sample of the reviews longer than --min-tokens (default 512 when the
length is 512: the reviews that get cut), or on all lengths with --min-tokens 0.

    python bench/long_texts.py runs/latest --samples 400                        # reviews > 512 tokens
    python bench/long_texts.py runs/latest --samples 500 --min-tokens 0 \\
        --strategies head+tail@512,windows@64,head+tail@64                       # length shift
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bertsent
from bertsent.data.sources import read_data
from bertsent.modeling.tokens import tokenize

from common import DEFAULT_IMDB, Table, machine, sample_indices, write_results

DEFAULT_STRATEGIES = "head@512,tail@512,head+tail@512,windows@512"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--data", default=DEFAULT_IMDB + ":test", help="labeled data (default: IMDB test)")
    p.add_argument("--samples", type=int, default=400, help="reviews to score (a reproducible sample)")
    p.add_argument("--min-tokens", type=int, help="only reviews longer than this (default: the largest length)")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="LONG@LENGTH[/STRIDE],... (stride: half a window)")
    p.add_argument("--backend", default="torch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    return p.parse_args(argv)


def parse_strategy(text: str) -> tuple[str, int, int | None]:
    long, _, rest = text.partition("@")
    length, _, stride = rest.partition("/")
    return long, int(length), int(stride) if stride else None


def main(argv=None) -> int:
    args = parse_args(argv)
    strategies = [parse_strategy(s) for s in args.strategies.split(",")]
    model = bertsent.load(args.model_dir, backend=args.backend)
    dataset = read_data(args.data)
    lengths = np.array([len(ids) for ids, _ in tokenize(model.tokenizer, dataset.texts)])
    floor = args.min_tokens if args.min_tokens is not None else max(length for _, length, _ in strategies)
    eligible = np.flatnonzero(lengths > floor)
    chosen = eligible[sample_indices(len(eligible), args.samples, args.seed)]
    texts = [dataset.texts[i] for i in chosen]
    y = np.array([model.classes_.index(dataset.labels[i]) for i in chosen])
    print(f"machine   {machine()}\ndate      {date.today()}\ncommand   python {' '.join(sys.argv)}")
    print(
        f"data      {dataset.name}: {len(eligible)} of {len(dataset)} reviews longer than {floor} tokens; "
        f"{len(texts)} sampled (tokens: median {int(np.median(lengths[chosen]))}, max {lengths[chosen].max()}); "
        f"model trained at {model.metadata.get('max_length')} tokens"
    )
    rows = []
    table = Table(
        ("strategy", "<22"), ("accuracy", ">9.4f"), ("macro F1", ">9.4f"), ("ROC-AUC", ">8.4f"), ("reviews/s", ">10.1f")
    )
    print("\n" + table.header())
    for truncation, length, stride in strategies:
        model.truncation, model.max_length = truncation, length
        model.stride = stride or max(1, length // 2)
        start = time.perf_counter()
        probs = model.predict_proba(texts)
        seconds = time.perf_counter() - start
        predicted = probs.argmax(axis=1)
        row = {
            "strategy": f"{truncation}@{length}" + (f"/{model.stride}" if truncation == "windows" else ""),
            "accuracy": float(np.mean(predicted == y)),
            "f1_macro": float(f1_score(y, predicted, average="macro")),
            "roc_auc": float(roc_auc_score(y, probs[:, 1])) if probs.shape[1] == 2 else None,
            "reviews_per_s": len(texts) / seconds,
        }
        rows.append(row)
        shown = (row["strategy"], row["accuracy"], row["f1_macro"], row["roc_auc"], row["reviews_per_s"])
        print(table.row(*shown), flush=True)
    if args.json:
        write_results(args.json, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
