"""What each command does: call the Python API, then print with `tables`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bertsent.cli.parser import given, prediction_settings, serve_limits, training_settings
from bertsent.cli.tables import (
    format_audit,
    format_compare,
    format_data_info,
    format_explanations,
    format_explanations_jsonl,
    format_export,
    format_metrics,
    format_models,
    format_predictions,
    format_seed_summary,
    format_tune,
)
from bertsent.errors import BertsentError
from bertsent.extras import require_extra

EXAMPLE = "This is a really good movie. I loved it and will watch again"


def say(message: str) -> None:
    """Progress and notes go to stderr, so stdout holds only results."""
    print(message, file=sys.stderr, flush=True)


def _columns(args) -> dict:
    """How a labeled source is read: add_data_flags' values."""
    return given(args, "text_column", "label_column", "encoding", "label_map")


def _loading(args) -> dict:
    """What loading a model may do beyond safetensors and JSON (add_loading_flags): off unless asked."""
    return given(args, "allow_pickle", "trust_remote_code")


def _reading(args) -> dict:
    """How a labeled source is read, bad rows included: DataOptions' fields."""
    return _columns(args) | {"drop_invalid": args.drop_invalid}


def _load_options(args) -> dict:
    """How `predict` and `serve` load and run the model: bertsent.load's keywords."""
    return given(args, "batch_size", "neutral_band") | prediction_settings(args)


def _data_options(args) -> dict:
    return _reading(args) | {"overwrite": args.overwrite, "progress": not args.quiet, "log": say}


def cmd_train(args) -> int:
    from bertsent.workflows import run as api

    settings = training_settings(args)  # --model included: it is a TrainConfig setting too
    options = _data_options(args) | given(args, "out", "tensorboard", "baseline") | {"report": not args.no_report}
    options |= _loading(args)
    if args.seeds is not None:
        return _train_seeds(args, options, settings)
    resume = given(args, "resume", "resume_with_checkpoint_settings")
    result = api.train(args.data, args.eval_data, **resume, **options, **settings)
    if result.metrics:
        print(
            f"\nValidation metrics (best epoch {result.best_epoch}, calibrated, temperature "
            f"{result.metrics['temperature']:.3f}):"
        )
        print(format_metrics(result.metrics))
    print(f"\nTrained in {result.train_seconds:.1f} s. Model: {result.model_dir}")
    if not args.no_report and (result.model_dir / "report.html").exists():
        print(f"Report: {result.model_dir / 'report.html'}")
    print(f'Try it: bertsent predict {result.model_dir} "{EXAMPLE}"')
    return 0


def _train_seeds(args, options: dict, settings: dict) -> int:
    from bertsent.workflows.experiments import train_seeds

    resume = args.resume or args.resume_with_checkpoint_settings
    summary = train_seeds(args.data, args.eval_data, seeds=args.seeds, resume=resume, **options, **settings)
    print(
        f"\nValidation metrics over {len(summary['seeds'])} seeds ({summary['validation']}, "
        f"{summary['n']} examples; std: sample standard deviation):"
    )
    print(format_seed_summary(summary))
    print(f"\nModels in {summary['out']}/seed-N; summary: {Path(summary['out']) / 'summary.json'}")
    return 0


def cmd_compare(args) -> int:
    from bertsent.workflows.experiments import compare

    table = compare(
        args.models.split(","),
        args.data,
        args.eval_data,
        **given(args, "out", "baseline"),
        **_data_options(args),
        **_loading(args),
        **training_settings(args),
    )
    print(f"\nValidation on {table['validation']} ({table['n']} examples):")
    print(format_compare(table))
    print(f"\nTable written to {Path(table['out']) / 'compare.csv'} and compare.json")
    return 0


def cmd_tune(args) -> int:
    from bertsent.workflows.tune import SEARCHED, tune

    require_extra("tune", "tune")
    settings = training_settings(args)
    space = {name: settings.pop(name) for name in SEARCHED if name in settings}
    options = _reading(args) | _loading(args) | {"progress": not args.quiet, "log": say}
    searching = given(args, "trials", "storage", "study_name", "timeout", "out")
    summary = tune(args.data, args.eval_data, space=space, **searching, **options, **settings)
    print(format_tune(summary))
    return 0


def cmd_audit(args) -> int:
    require_extra("audit", "audit")
    from bertsent.workflows.audit import audit

    options = _data_options(args) | _loading(args) | given(args, "out", "drop", "folds")
    result = audit(args.data, **options, **training_settings(args))
    print(
        f"\n{result.source}: {len(result.labels)} rows, {len(result)} flagged as likely mislabeled "
        f"({args.folds} folds, {result.seconds / 60:.1f} min)"
    )
    print(format_audit(result.issues, args.top))
    print(f"\nAll issues: {result.csv_path}\nPage: {result.html_path}")
    if result.cleaned_path:
        print(f"Data without the flagged rows: {result.cleaned_path}")
    return 0


def cmd_evaluate(args) -> int:
    from bertsent.workflows import run as api

    _check_prediction_flags(args, "metrics.json")
    options = given(args, "out", "report", "batch_size", "neutral_band", "baseline", "train_data")
    options |= _reading(args) | prediction_settings(args)
    metrics = api.evaluate(args.model_dir, args.data, progress=not args.quiet, **options)
    print(f"{metrics['data']['source']}: {metrics['data']['rows']} examples")
    print(format_metrics(metrics))
    if args.out:
        print(f"\nMetrics written to {args.out}")
    if args.report:
        print(f"Report written to {Path(args.report) / 'report.html'}")
    return 0


def cmd_predict(args) -> int:
    from bertsent.files import write_atomic
    from bertsent.prediction.predictor import load

    _check_prediction_flags(args, "predictions.jsonl")
    options = _load_options(args)
    if args.file:
        return _predict_file(args, options)
    if args.keep_columns or args.resume or args.shard or args.chunk_rows is not None or args.format == "tsv":
        raise BertsentError("--keep-columns, --resume, --shard, --chunk-rows and --format tsv are for --file F.")
    texts = list(args.texts) or _stdin_texts()
    if not texts:
        raise BertsentError("no texts to label. Give them as arguments, with --file F, or on standard input.")
    suffix = Path(args.out).suffix.lower() if args.out else ""
    fmt = args.format or {".jsonl": "jsonl", ".csv": "csv"}.get(suffix, "table")
    predictor = load(args.model_dir, **options)
    records = predictor.predict_records(texts)
    text = format_predictions(records, predictor.classes_, fmt)
    if args.out:
        write_atomic(Path(args.out), text)
        say(f"{len(records)} predictions written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _predict_file(args, options: dict) -> int:
    """--file: streamed in chunks into --out (resumable, sharded), or onto stdout."""
    from bertsent.environment import process_rank
    from bertsent.prediction import files as bulk

    if args.texts:
        raise BertsentError("give texts as arguments or --file F, not both.")
    bulk.check_output_flags(args.out, args.shard, args.resume, args.overwrite)  # else ignored, all rows scored
    reading = given(args, "text_column", "keep_columns", "encoding")
    reading.update(progress=not args.quiet, **({} if args.chunk_rows is None else {"chunk_rows": args.chunk_rows}))
    if args.out is None and args.format in (None, "table"):
        if args.keep_columns:
            raise BertsentError("--keep-columns: the table shows no other columns; pass --format jsonl|csv|tsv.")
        for i, records in enumerate(bulk.iter_predictions(args.model_dir, args.file, **reading, **options)):
            table = format_predictions(records, list(records[0]["probs"]), "table") if records else ""
            sys.stdout.write(table if i == 0 else table.split("\n", 1)[-1])  # one header
        return 0
    result = bulk.predict_file(
        args.model_dir,
        args.file,
        args.out,
        **given(args, "resume", "overwrite", "shard"),
        fmt=args.format,
        log=say,
        **reading,
        **options,
    )
    if args.out and process_rank() == 0:
        say(_written(result))
    return 0


def _written(result: dict) -> str:
    if result["output_rows"] is None:
        return f"{result['out']}: complete already; nothing to do."
    line = f"{result['output_rows']:,} predictions written to {result['out']}"
    if result["resumed_rows"]:
        line += f" ({result['resumed_rows']:,} of them by the interrupted run)"
    if result["shard"] and not result["merged"]:
        line += f"; when every part is done: bertsent merge {result['out'].rsplit('.part-', 1)[0]}"
    return line


def cmd_merge(args) -> int:
    from bertsent.prediction.shards import merge_parts

    if args.out:
        out, parts = args.out, args.paths or None
    elif len(args.paths) == 1:
        out, parts = args.paths[0], None
    else:
        raise BertsentError("give OUT (its parts OUT.part-I-of-N are found beside it), or --out OUT and the parts.")
    _check_out_file(out, "predictions.jsonl")
    result = merge_parts(out, parts, fmt=args.format, progress=not args.quiet, **given(args, "overwrite", "keep_parts"))
    say(f"{result['rows']:,} predictions from {result['parts']} parts merged into {result['out']}")
    return 0


def cmd_data(args) -> int:
    from bertsent.data.sources import DataOptions, describe
    from bertsent.modeling.hub import load_tokenizer

    reading = DataOptions(**_reading(args))  # a malformed map fails before the data
    dataset = reading.read(args.source, require_labels=False)
    info = describe(dataset, load_tokenizer(args.model, trust_remote_code=args.trust_remote_code))
    if "label_map" in dataset.meta:  # the counts before the map; info["labels"] has them after
        info["label_map"] = dataset.meta["label_map"]
    print(json.dumps(info, indent=2) if args.json else format_data_info(info, args.model))
    return 0


def cmd_export(args) -> int:
    require_extra("onnx", "export")
    from bertsent.prediction.export import export_onnx

    exporting = given(args, "int8", "data", "max_drop") | _columns(args) | _loading(args)
    result = export_onnx(args.model_dir, log=say, progress=not args.quiet, **exporting)
    print(format_export(result))
    return 0


def cmd_models(args) -> int:
    from bertsent.modeling.hub import list_offline_models

    rows = list_offline_models()
    print(json.dumps(rows, indent=2) if args.json else format_models(rows))
    return 0


def cmd_serve(args) -> int:
    from bertsent.serving.server import stop_on_sigterm

    with stop_on_sigterm():  # SIGTERM from here on (while the libraries load, too) exits 0
        return _serve(args)
    return 0  # stopped by SIGTERM


def _serve(args) -> int:
    import os

    require_extra("serve", "serve")
    from bertsent.evaluation.metrics import check_neutral_band
    from bertsent.prediction.predictor import check_weights
    from bertsent.serving.limits import API_KEY_ENV
    from bertsent.serving.server import is_local, serve

    check_neutral_band(args.neutral_band)
    check_weights(Path(args.model_dir).expanduser(), args.backend, allow_pickle=args.allow_pickle)  # before serving
    if args.api_key is not None and not args.api_key.strip():
        raise BertsentError(f"--api-key: give a key (an empty one would let anyone in), or set {API_KEY_ENV}.")
    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if not is_local(args.host) and key is None:
        say(
            f"Warning: serving on {args.host} without an API key: anyone who can reach this machine can use the "
            f"model. Set --api-key KEY (or ${API_KEY_ENV}) to require Authorization: Bearer KEY."
        )
    host = f"[{args.host}]" if ":" in args.host else args.host
    announce = (
        f"Serving {args.model_dir} on http://{host}:{args.port}: a page at /, POST /predict, API docs at /docs. "
        "The model loads in the background; GET /health answers 200 once it is ready."
    )
    serve(
        args.model_dir,
        announce=lambda: say(announce),
        api_key=key,
        **given(args, "host", "port", "log_level", "access_log"),
        load_options=_load_options(args),
        cors_origins=args.cors_origin or (),
        **serve_limits(args),
    )
    return 0


def cmd_explain(args) -> int:
    from bertsent.evaluation.explain import explanations_page, import_captum
    from bertsent.files import write_atomic
    from bertsent.prediction.predictor import load

    import_captum()  # before loading anything: a missing package is said at once
    if args.html:
        _check_out_file(args.html, "explanations.html", "--html")
    texts = list(args.texts) or _stdin_texts()
    if not texts:
        raise BertsentError("no texts to explain. Give them as arguments, or on standard input (one a line).")
    predictor = load(args.model_dir, backend="torch", max_length=args.max_length, **_loading(args))
    found = predictor.explain(texts, target=args.target, n_steps=args.steps)
    if args.format == "jsonl":
        sys.stdout.write(format_explanations_jsonl(found))
    else:
        sys.stdout.write(format_explanations(found, top=args.top, color=sys.stdout.isatty()))
    if args.html:
        write_atomic(Path(args.html), explanations_page(found, f"Why {Path(args.model_dir).name} said so"))
        say(f"Shaded words written to {args.html}")
    return 0


def _check_prediction_flags(args, out_example: str) -> None:
    """What `predict` and `evaluate` check alike before any work: the backend's extra, --out, --neutral-band."""
    from bertsent.evaluation.metrics import check_neutral_band

    _check_backend(args.backend)
    _check_out_file(args.out, out_example)
    check_neutral_band(args.neutral_band)


def _check_backend(backend: str) -> None:
    """An ONNX backend asked for by name needs the onnx extra (auto falls back to torch without an export)."""
    if backend in ("onnx", "onnx-int8"):
        require_extra("onnx", f"--backend {backend}", "onnxruntime")


def _stdin_texts() -> list[str]:
    """Standard input's non-blank lines (none from a terminal); bytes that are not UTF-8 become U+FFFD
    instead of strings the tokenizer refuses."""
    if sys.stdin is None or sys.stdin.isatty():
        return []
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _check_out_file(out: str | None, example: str, flag: str = "--out") -> None:
    """Refuse an output file that is a folder or cannot be written before any work, not after it."""
    from bertsent.files import check_writable

    if out is None:
        return
    if not out.strip():
        raise BertsentError(f"{flag}: give a file name, e.g. {flag} {example}.")
    if Path(out).is_dir():
        raise BertsentError(f"{flag} {out}: is a folder; give a file name, e.g. {flag} {Path(out) / example}.")
    problem = check_writable(out)
    if problem:
        raise BertsentError(f"{flag} {out}: cannot write there ({problem}). Choose a folder you can write to.")


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "merge": cmd_merge,
    "data": cmd_data,
    "models": cmd_models,
    "export": cmd_export,
    "compare": cmd_compare,
    "audit": cmd_audit,
    "tune": cmd_tune,
    "serve": cmd_serve,
    "explain": cmd_explain,
}
