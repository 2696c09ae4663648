"""`bertsent` on the command line: a thin layer over the Python API.

Exit codes: 0 done, 2 a user error (one line on stderr says what to do), 1 an internal error.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import warnings
from pathlib import Path

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text-column", metavar="C", help="column holding the text (detected when unambiguous)")
    parser.add_argument("--label-column", metavar="C", help="column holding the label (detected when unambiguous)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the data files (default utf-8)")
    parser.add_argument("--drop-invalid", action="store_true",
                        help="skip rows with an empty text or label instead of stopping")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .training import RECIPES

    parser = argparse.ArgumentParser(
        prog="bertsent", description="Fine-tune, evaluate and use BERT-family sentiment models, offline by default.")
    parser.add_argument("--version", action="version", version=f"bertsent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="fine-tune a model on labeled text",
                                description="Fine-tune a model. With no arguments: the packaged MiniLM on "
                                            "the Rotten Tomatoes snippets.")
    train.add_argument("--data", default="rotten-tomatoes", metavar="SRC",
                       help="training data: a file, an aclImdb folder/archive, imdb or rotten-tomatoes "
                            "(default; aclImdb sources use their train split unless SRC:test is given)")
    train.add_argument("--eval-data", metavar="SRC", help="validation data (default: a stratified 10%% split of --data)")
    _add_data_flags(train)
    train.add_argument("--model", default="minilm", metavar="M",
                       help="alias (minilm, mpnet), local folder or Hub id (default minilm)")
    train.add_argument("--out", metavar="DIR", help="model folder to write (default runs/<model>-<data>-<time>)")
    train.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    train.add_argument("--recipe", default="fast", choices=sorted(RECIPES),
                       help="default settings: fast (ours) or tutorial (pad to 512, batch 6, Adam 2e-5, 1 epoch)")
    train.add_argument("--epochs", type=int, metavar="N")
    train.add_argument("--batch-size", type=_batch_size, metavar="N|auto",
                       help="sequences per batch, at most (auto: the recipe's, run in micro-batches that fit in "
                            "memory)")
    train.add_argument("--max-tokens", type=int, metavar="N", help="padded tokens per batch, at most")
    train.add_argument("--grad-accum", type=int, default=1, metavar="N", help="batches per optimizer step")
    train.add_argument("--lr", type=float, metavar="X", help="peak learning rate (default: by model size)")
    train.add_argument("--max-length", metavar="N|auto", help="tokens per text (auto: 99th percentile of the data)")
    train.add_argument("--truncation", choices=["head", "tail", "head+tail"],
                       help="which part of a long text to keep (default head+tail)")
    train.add_argument("--seed", type=int, default=42, metavar="N")
    train.add_argument("--max-train-samples", type=int, metavar="N", help="train on a random sample of N rows")
    train.add_argument("--validation-fraction", type=float, default=0.1, metavar="X",
                       help="share held out for validation when --eval-data is not given (0: none)")
    train.add_argument("--metric", default="accuracy", choices=["accuracy", "f1_macro", "loss"],
                       help="validation metric that picks the best epoch")
    train.add_argument("--early-stopping", type=int, metavar="N", help="stop after N evaluations without gain")
    train.add_argument("--eval-every", type=int, metavar="N", help="also evaluate every N steps")
    train.add_argument("--checkpoint-every", type=int, metavar="N", help="save a checkpoint every N steps")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    train.add_argument("--compile", action="store_true", help="torch.compile the model")
    train.add_argument("--packing", action=argparse.BooleanOptionalAction,
                       help="train on unpadded batches: sequences end to end, attention kept within each "
                            "(BERT-architecture models; on CUDA with --attention-dropout 0 it uses the flash "
                            "varlen kernel)")
    train.add_argument("--attention-dropout", type=float, metavar="X",
                       help="dropout on attention probabilities (default: the model's, 0.1 for BERT); 0 trains "
                            "long texts about 1.5x faster on CPU")
    train.add_argument("--no-calibrate", action="store_true", help="skip temperature scaling")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    # -- reports, seeds, TensorBoard
    train.add_argument("--seeds", type=int, metavar="N",
                       help="train N times (seeds --seed, --seed+1, ...) into OUT/seed-N; print mean and std")
    train.add_argument("--tensorboard", nargs="?", const=True, metavar="DIR",
                       help="also log to TensorBoard (default MODEL_DIR/tensorboard; needs bertsent[tensorboard])")
    train.add_argument("--no-report", action="store_true", help="skip report.html, metrics.json and the charts")

    evaluate = commands.add_parser("evaluate", help="score a trained model on labeled data")
    evaluate.add_argument("model_dir", metavar="MODEL_DIR")
    evaluate.add_argument("--data", required=True, metavar="SRC",
                          help="labeled data (aclImdb sources use their test split unless SRC:train is given)")
    _add_data_flags(evaluate)
    evaluate.add_argument("--out", metavar="FILE", help="write the metrics as JSON")
    evaluate.add_argument("--report", metavar="DIR",
                          help="write metrics.json, report.html, errors.csv and charts into DIR")
    evaluate.add_argument("--batch-size", type=int, default=64, metavar="N")
    evaluate.add_argument("--neutral-band", type=float, metavar="X", help="binary models: report unsure as neutral")

    predict = commands.add_parser("predict", help="label new texts")
    predict.add_argument("model_dir", metavar="MODEL_DIR")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (or --file, or stdin)")
    predict.add_argument("--file", metavar="F", help="CSV/TSV/JSONL/JSON/Parquet/plain-lines file of texts")
    predict.add_argument("--text-column", metavar="C")
    predict.add_argument("--encoding", default="utf-8")
    predict.add_argument("--out", metavar="F", help="write here instead of stdout")
    predict.add_argument("--format", choices=["table", "jsonl", "csv"], help="default: table, or from --out's suffix")
    predict.add_argument("--batch-size", type=int, default=64, metavar="N")
    predict.add_argument("--neutral-band", type=float, metavar="X",
                         help="binary models: below 0.5+X/2 confidence the label is 'neutral'")

    compare = commands.add_parser("compare", help="fine-tune several models on one split and compare them",
                                  description="Fine-tune each model on the same training data and validation "
                                              "split; print and write one table (OUT/compare.csv, .json).")
    compare.add_argument("--models", required=True, metavar="A,B,...", help="models to compare, comma-separated")
    compare.add_argument("--data", default="rotten-tomatoes", metavar="SRC", help="training data")
    compare.add_argument("--eval-data", metavar="SRC", help="validation data (default: a 10%% split of --data)")
    _add_data_flags(compare)
    compare.add_argument("--out", metavar="DIR", help="folder for the models and the table (default runs/compare-<time>)")
    compare.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    compare.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    compare.add_argument("--epochs", type=int, metavar="N")
    compare.add_argument("--batch-size", type=int, metavar="N")
    compare.add_argument("--lr", type=float, metavar="X", help="peak learning rate (default: by model size)")
    compare.add_argument("--max-length", metavar="N|auto")
    compare.add_argument("--seed", type=int, default=42, metavar="N")
    compare.add_argument("--max-train-samples", type=int, metavar="N")
    compare.add_argument("--validation-fraction", type=float, default=0.1, metavar="X")
    compare.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    compare.add_argument("--device", default="auto")
    compare.add_argument("--quiet", action="store_true", help="no progress bar")

    data = commands.add_parser("data", help="size, labels and token lengths of a data source")
    data.add_argument("source", metavar="SRC")
    _add_data_flags(data)
    data.add_argument("--model", default="minilm", metavar="M", help="tokenizer for the token lengths")
    data.add_argument("--json", action="store_true", help="print JSON")

    models = commands.add_parser("models", help="models usable offline on this machine")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser


# TrainConfig fields that train and compare take from flags of the same name, when given.
TRAIN_SETTINGS = ("model", "recipe", "epochs", "batch_size", "max_tokens", "grad_accum", "lr", "truncation", "seed",
                  "max_train_samples", "validation_fraction", "metric", "early_stopping", "eval_every",
                  "checkpoint_every", "precision", "device", "compile", "packing", "attention_dropout")


def _train_settings(args) -> dict:
    """Checked training settings from the flags a command has."""
    settings = {name: getattr(args, name) for name in TRAIN_SETTINGS if hasattr(args, name)}
    max_length = getattr(args, "max_length", None)
    if max_length is not None and max_length != "auto":
        if not max_length.isdigit() or int(max_length) < 8:
            raise _usage(f"--max-length {max_length}: give a whole number of tokens (at least 8) or 'auto'.")
        max_length = int(max_length)
    settings["max_length"] = max_length
    for name in ("epochs", "batch_size", "grad_accum"):
        value = settings.get(name)
        if isinstance(value, int) and value < 1:
            raise _usage(f"--{name.replace('_', '-')} {value}: must be at least 1.")
    if not 0 <= settings["validation_fraction"] < 1:
        raise _usage(f"--validation-fraction {settings['validation_fraction']}: must be in [0, 1).")
    dropout = settings.get("attention_dropout")
    if dropout is not None and not 0 <= dropout < 1:
        raise _usage(f"--attention-dropout {dropout}: must be in [0, 1).")
    if hasattr(args, "no_calibrate"):
        settings["calibrate"] = not args.no_calibrate
    return settings


def _data_options(args) -> dict:
    return dict(text_column=args.text_column, label_column=args.label_column, encoding=args.encoding,
                drop_invalid=args.drop_invalid, overwrite=args.overwrite, progress=not args.quiet, log=_say)


def cmd_train(args) -> int:
    from . import api

    settings = _train_settings(args)
    options = _data_options(args) | dict(out=args.out, report=not args.no_report, tensorboard=args.tensorboard)
    if args.seeds is not None:
        return _train_seeds(args, options, settings)
    result = api.train(args.data, args.eval_data, resume=args.resume, **options, **settings)
    from .evaluation import format_metrics

    if result.metrics:
        print(f"\nValidation metrics (best epoch {result.best_epoch}, calibrated, temperature "
              f"{json.loads((result.model_dir / 'bertsent.json').read_text())['temperature']:.3f}):")
        print(format_metrics(result.metrics))
    print(f"\nTrained in {result.train_seconds:.1f} s. Model: {result.model_dir}")
    if not args.no_report and (result.model_dir / "report.html").exists():
        print(f"Report: {result.model_dir / 'report.html'}")
    print(f"Try it: bertsent predict {result.model_dir} \"This is a really good movie. I loved it and will watch again\"")
    return 0


def _train_seeds(args, options: dict, settings: dict) -> int:
    from . import api

    summary = api.train_seeds(args.data, args.eval_data, seeds=args.seeds, resume=args.resume, **options, **settings)
    print(f"\nValidation metrics over {len(summary['seeds'])} seeds ({summary['validation']}, "
          f"{summary['n']} examples; std: sample standard deviation):")
    print(api.format_seed_summary(summary))
    print(f"\nModels in {summary['out']}/seed-N; summary: {Path(summary['out']) / 'summary.json'}")
    return 0


def cmd_compare(args) -> int:
    from . import api

    settings = _train_settings(args)
    settings.pop("model", None)
    table = api.compare(args.models.split(","), args.data, args.eval_data, out=args.out, **_data_options(args),
                        **settings)
    print(f"\nValidation on {table['validation']} ({table['n']} examples):")
    print(api.format_compare(table))
    print(f"\nTable written to {Path(table['out']) / 'compare.csv'} and compare.json")
    return 0


def cmd_evaluate(args) -> int:
    from . import api
    from .evaluation import format_metrics

    _check_out_file(args.out, "metrics.json")
    metrics = api.evaluate(args.model_dir, args.data, out=args.out, text_column=args.text_column,
                           label_column=args.label_column, encoding=args.encoding, drop_invalid=args.drop_invalid,
                           batch_size=args.batch_size, neutral_band=args.neutral_band, report=args.report)
    print(f"{metrics['data']['source']}: {metrics['data']['rows']} examples")
    print(format_metrics(metrics))
    if args.out:
        print(f"\nMetrics written to {args.out}")
    if args.report:
        print(f"Report written to {Path(args.report) / 'report.html'}")
    return 0


def cmd_predict(args) -> int:
    from .data import read_data
    from .prediction import load

    _check_out_file(args.out, "predictions.jsonl")
    texts = list(args.texts)
    if args.file:
        texts += read_data(args.file, text_column=args.text_column, encoding=args.encoding,
                           texts_only=True).texts
    if not texts and not sys.stdin.isatty():
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise _usage("no texts to label. Give them as arguments, with --file F, or on standard input.")
    fmt = args.format or {".jsonl": "jsonl", ".csv": "csv"}.get(Path(args.out).suffix.lower() if args.out else "", "table")
    from .api import check_neutral_band

    check_neutral_band(args.neutral_band)
    model = load(args.model_dir, batch_size=args.batch_size, neutral_band=args.neutral_band)
    records = model.predict_records(texts)
    text = _render(records, model.classes_, fmt)
    if args.out:
        from .report import write_atomic

        write_atomic(Path(args.out), text)
        print(f"{len(records)} predictions written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _render(records: list[dict], classes: list[str], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["text", "label"] + [f"p_{c}" for c in classes])
        for r in records:
            writer.writerow([r["text"], r["label"]] + [r["probs"][c] for c in classes])
        return buffer.getvalue()
    width = max(5, *(len(r["label"]) for r in records))
    lines = [f"{'label':<{width}}  confidence  text"]
    for r in records:
        short = " ".join(r["text"].split())
        short = short if len(short) <= 70 else short[:67] + "..."
        lines.append(f"{r['label']:<{width}}  {max(r['probs'].values()):10.3f}  {short}")
    return "\n".join(lines) + "\n"


def cmd_data(args) -> int:
    from .data import describe, read_data
    from .model import load_tokenizer

    dataset = read_data(args.source, text_column=args.text_column, label_column=args.label_column,
                        encoding=args.encoding, drop_invalid=args.drop_invalid, require_labels=False)
    info = describe(dataset, load_tokenizer(args.model))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"source    {info['source']}")
    print(f"rows      {info['rows']}" + (f"  ({info['dropped']} invalid rows skipped)" if info["dropped"] else ""))
    if info.get("splits"):
        print("splits    " + ", ".join(f"{k} {v}" for k, v in info["splits"].items()))
    if info["labels"]:
        total = sum(info["labels"].values())
        print("labels    " + ", ".join(f"{k} {v} ({v / total:.1%})" for k, v in info["labels"].items()))
    else:
        print("labels    none (no label column)")
    for key, unit in (("characters", "chars"), ("tokens", f"tokens ({args.model})")):
        s = info[key]
        print(f"{unit:<9} mean {s['mean']:.0f}, min {s['min']}, median {s['p50']}, p90 {s['p90']}, "
              f"p95 {s['p95']}, p99 {s['p99']}, max {s['max']}")
    over = info["tokens"]["over_max_length"]
    print(f"longer than {over['max_length']} tokens: {over['share']:.1%}")
    return 0


def cmd_models(args) -> int:
    from .model import list_offline_models

    rows = list_offline_models()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        mark = "yes" if row["available"] else "no "
        print(f"{row['name']:<12} available: {mark}  {row['description']}")
        if row["path"]:
            print(f"{'':<12} {row['path']}")
    print("\nAlso usable: any local Hugging Face model folder (--model /path/to/folder), "
          "or a Hub id when online.")
    return 0


def _check_out_file(out: str | None, example: str) -> None:
    """Refuse an --out that is a folder before any work, not after it."""
    if out and Path(out).is_dir():
        raise _usage(f"--out {out}: is a folder; give a file name, e.g. --out {Path(out) / example}.")


def _batch_size(text: str) -> int | str:
    """--batch-size: a whole number or 'auto'."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of sequences or 'auto'") from None


def _usage(message: str) -> Exception:
    from .errors import BertsentError

    return BertsentError(message)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "data": cmd_data,
            "models": cmd_models, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    from .errors import BertsentError

    try:
        return COMMANDS[args.command](args)
    except BertsentError as exc:
        print(f"bertsent {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"bertsent {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug of ours: say so briefly, full traceback on request
        if os.environ.get("BERTSENT_DEBUG"):
            raise
        print(f"bertsent {args.command}: internal error: {type(exc).__name__}: {exc} "
              f"(set BERTSENT_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
