"""Training on long reviews: `--truncation windows` against head+tail, for the same budget, on IMDB.

Fine-tunes a model (default: the packaged MiniLM) at a short length (default 128 tokens) on a reproducible
sample of IMDB train reviews, three ways:
  head+tail       each review cut to its first and last tokens: one example per review;
  windows, same texts  every window of each review (at most --max-windows), the same reviews: more examples;
  windows, same steps  the windows of the first reviews of the same sample, as many examples as head+tail had:
                  the same optimizer steps and sequences (the budget matched), fewer reviews.
Each model is scored on a reproducible sample of IMDB test reviews longer than --min-tokens (default 512),
cutting them head+tail at the training length and in windows of it (prediction's `--long`), and at 512
head+tail for reference. No validation split: every run trains its epochs and keeps the last weights.

    python bench/train_windows.py --train-texts 1000 --test-samples 300
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bertsent
from bertsent.data.sources import read_data
from bertsent.modeling import hub
from bertsent.modeling.tokens import tokenize
from bertsent.training import TrainConfig
from bertsent.training.fit import encode_examples

from common import DEFAULT_IMDB, Table, from_args, machine, run_in_scratch, sample_indices, write_results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=DEFAULT_IMDB, help="an aclImdb folder or archive (default: the shared copy)")
    p.add_argument("--model", default="minilm")
    p.add_argument("--max-length", type=int, default=128, help="training length (tokens per text or window)")
    p.add_argument("--train-texts", type=int, default=1000, help="train reviews sampled (head+tail, same texts)")
    p.add_argument("--test-samples", type=int, default=300, help="test reviews longer than --min-tokens scored")
    p.add_argument("--min-tokens", type=int, default=512)
    p.add_argument("--max-windows", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--runs", default="head+tail,windows-steps", help="which runs, in order (also: windows-texts)")
    p.add_argument("--with-512", action="store_true", help="also score each model head+tail at 512 tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", metavar="FILE")
    return p.parse_args(argv)


def examples(tokens, settings: dict, max_length: int, special_tokens: int):
    """The training examples a run builds from these texts (fit's own `encode_examples`): ids and owners."""
    config = TrainConfig(max_length=max_length, **settings).resolve(
        parameters=0, max_positions=512, token_lengths=[], packing_supported=False, special_tokens=special_tokens
    )
    ids, _, owner = encode_examples(tokens, [0] * len(tokens), config)
    return ids, owner


def score(model_dir: Path, texts: list[str], y: np.ndarray, with_512: bool) -> dict:
    """Accuracy of a model on the test reviews, cut head+tail or scored in windows at the training length."""
    out = {}
    ways = [("head+tail", dict(truncation="head+tail")), ("windows", dict(truncation="windows"))]
    ways += [("head+tail@512", dict(truncation="head+tail", max_length=512))] if with_512 else []
    for name, settings in ways:
        model = bertsent.load(model_dir, backend="torch", **settings)
        started = time.perf_counter()
        predicted = np.array([model.classes_.index(label) for label in model.predict(texts)])
        out[name] = {"accuracy": float(np.mean(predicted == y)), "seconds": time.perf_counter() - started}
    return out


def main(args, work: Path) -> int:
    train_all = read_data(args.data + ":train")
    test_all = read_data(args.data + ":test")
    tokenizer = hub.load_tokenizer(args.model)
    special = tokenizer.num_special_tokens_to_add()

    # Shuffled, so that the first reviews of the sample (the same-steps run's) hold both labels.
    chosen = np.random.RandomState(args.seed).permutation(sample_indices(len(train_all), args.train_texts, args.seed))
    train = train_all.subset(chosen, f"IMDB train ({len(chosen)} sampled)")
    train_tokens = tokenize(tokenizer, train.texts)
    train_lengths = [len(ids) for ids, _ in train_tokens]
    windowed = dict(truncation="windows", max_windows=args.max_windows)
    _, owner = examples(train_tokens, windowed, args.max_length, special)
    per_text = np.bincount(owner, minlength=len(train))
    # The same steps: the sample's first reviews whose windows add up to the head+tail run's sequence count.
    same_steps = int(np.searchsorted(np.cumsum(per_text), len(train), side="right"))

    test_lengths = np.array([len(ids) for ids, _ in tokenize(tokenizer, test_all.texts)])
    eligible = np.flatnonzero(test_lengths > args.min_tokens)
    picked = eligible[sample_indices(len(eligible), args.test_samples, args.seed)]
    test_texts = [test_all.texts[i] for i in picked]
    test_labels = [test_all.labels[i] for i in picked]

    print(f"machine   {machine()}\ndate      {date.today()}\ncommand   python {' '.join(sys.argv)}")
    print(
        f"train     {train.name}: tokens median {int(np.median(train_lengths))}, "
        f"{np.mean(np.array(train_lengths) > args.max_length):.0%} over {args.max_length}; "
        f"{int(per_text.sum())} windows of {args.max_length} (side by side, at most {args.max_windows} a text)"
    )
    print(
        f"test      IMDB test: {len(eligible)} of {len(test_all)} reviews longer than {args.min_tokens} tokens; "
        f"{len(picked)} sampled (tokens median {int(np.median(test_lengths[picked]))})"
    )
    runs = {
        "head+tail": (train, dict(truncation="head+tail")),
        "windows-steps": (
            train.subset(range(same_steps), f"{train.name}, first {same_steps}"),
            windowed,
        ),
        "windows-texts": (train, windowed),
    }
    rows = []
    table = Table(
        ("run", "<15"),
        ("texts", ">6"),
        ("examples", ">8"),
        ("tokens", ">8"),
        ("steps", ">6"),
        ("train s", ">8.0f"),
        ("acc head+tail", ">13.4f"),
        ("acc windows", ">11.4f"),
        ("acc h+t@512", ">11.4f"),
    )
    print("\n" + table.header(), flush=True)
    for name in args.runs.split(","):
        dataset, settings = runs[name]
        started = time.perf_counter()
        result = bertsent.train(
            dataset,
            None,
            out=work / name,
            **from_args(args, "model", "max_length", "epochs", "batch_size", "seed"),
            validation_fraction=0.0,
            calibrate=False,
            progress=False,
            log=lambda *_: None,
            report=False,
            **settings,
        )
        seconds = time.perf_counter() - started
        y = np.array([result_classes(result).index(label) for label in test_labels])
        accuracy = score(result.model_dir, test_texts, y, args.with_512)
        log = [json.loads(line) for line in (result.model_dir / "metrics.jsonl").read_text().splitlines()]
        steps = max(record["step"] for record in log)
        ids, _ = examples(train_tokens[: len(dataset)], settings, args.max_length, special)
        row = {"run": name, "texts": len(dataset), "examples": len(ids), "tokens": sum(map(len, ids))}
        row |= {"steps": steps, "train_seconds": seconds}
        row |= {f"accuracy_{k}": v["accuracy"] for k, v in accuracy.items()}
        rows.append(row)
        shown = (name, len(dataset), len(ids), row["tokens"], steps, seconds, row["accuracy_head+tail"])
        print(table.row(*shown, row["accuracy_windows"], row.get("accuracy_head+tail@512")), flush=True)
    if args.json:
        write_results(args.json, rows=rows)
    return 0


def result_classes(result) -> list[str]:
    return json.loads((result.model_dir / hub.METADATA_FILE).read_text())["labels"]


if __name__ == "__main__":
    sys.exit(run_in_scratch(main, parse_args()))
