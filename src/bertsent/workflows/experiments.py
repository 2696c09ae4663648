"""Experiments made of several training runs: the same model over seeds, several models on one split."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bertsent.checks import whole
from bertsent.data.sources import DataOptions, TextDataset
from bertsent.errors import BertsentError
from bertsent.evaluation.baselines import check_baseline
from bertsent.evaluation.report import REPORT_FILES
from bertsent.files import partial_folder, publish_folder, remove_path, write_atomic, write_json_atomic
from bertsent.modeling import hub
from bertsent.prediction.predictor import SentimentModel
from bertsent.training import METRICS_LOG, TrainConfig
from bertsent.workflows.run import (
    DEFAULT_DATA,
    RUNS_DIR,
    default_out_dir,
    link_latest,
    train,
    train_config,
    training_data,
)

SUMMARY_METRICS = (
    "accuracy",
    "f1_macro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
    "log_loss",
    "ece",
    "ece_uncalibrated",
)
COMPARE_COLUMNS = (
    "model",
    "accuracy",
    "f1_macro",
    "ece",
    "train_seconds",
    "predictions_per_s",
    "parameters",
    "size_mb",
    "model_dir",
    "warnings",
)
_NOT_MODEL_FILES = set(REPORT_FILES) | {METRICS_LOG}


def _prepare_runs(
    data, eval_data, out, overwrite: bool, reading: DataOptions, settings: dict, flag: str, log
) -> tuple[TrainConfig, TextDataset, TextDataset, Path | None]:
    config = train_config(settings)
    train_set, validation = training_data(data, eval_data, reading, config, log)
    if validation is None:
        raise BertsentError(f"{flag} compares validation scores: give --eval-data, or a --validation-fraction above 0.")
    out = Path(out).expanduser() if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise BertsentError(f"{out}: is a file, not a folder. Pass another --out.")
    if out is not None and out.exists() and not overwrite:
        raise BertsentError(f"{out}: already exists. Pass --overwrite to replace it, or another --out.")
    return config, train_set, validation, out


def train_seeds(
    data: str | TextDataset = DEFAULT_DATA,
    eval_data: str | TextDataset | None = None,
    *,
    seeds: int = 3,
    out: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    report: bool = True,
    tensorboard: str | os.PathLike | bool | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    baseline: str | None = None,
    **settings,
) -> dict:
    """Train with seeds seed, seed+1, ... into OUT/seed-N on one validation split (drawn with the first
    seed), and write OUT/summary.json: each validation metric's mean and standard deviation."""
    whole("seeds", seeds, 1)
    if settings.pop("resume", False):
        raise BertsentError("--resume does not combine with --seeds: resume one run at a time with --out OUT/seed-N.")
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)
    config, train_set, validation, out = _prepare_runs(
        data, eval_data, out, overwrite, reading, settings, "--seeds", log
    )
    link = out is None
    out = out or default_out_dir(config.model, str(data if isinstance(data, str) else "data"))
    work = _start_partial(out)
    runs = []
    for seed in range(config.seed, config.seed + seeds):
        log(f"-- seed {seed} ({seed - config.seed + 1} of {seeds})")
        board = Path(tensorboard) / f"seed-{seed}" if isinstance(tensorboard, (str, os.PathLike)) else tensorboard
        result = train(
            train_set,
            validation,
            out=work / f"seed-{seed}",
            progress=progress,
            log=log,
            report=report,
            tensorboard=board,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            baseline=baseline,
            **{**settings, "seed": seed},
        )
        runs.append(
            {
                "seed": seed,
                "model_dir": str(out / f"seed-{seed}"),
                "best_epoch": result.best_epoch,
                "train_seconds": round(result.train_seconds, 2),
                "metrics": {k: result.metrics[k] for k in SUMMARY_METRICS if k in result.metrics},
                "warnings": result.metrics.get("warnings", []),
            }
        )
    summary: dict[str, Any] = {
        "seeds": [r["seed"] for r in runs],
        "validation": validation.name,
        "n": len(validation),
        "std": "sample standard deviation (n-1); 0 for one seed",
        "runs": runs,
        "metrics": summarize(r["metrics"] for r in runs),
    }
    summary["metrics"].update(summarize({"train_seconds": r["train_seconds"]} for r in runs))
    write_json_atomic(work / "summary.json", summary)
    publish_folder(work, out)
    summary["out"] = str(out)
    if link:
        link_latest(out)
    return summary


def summarize(rows) -> dict:
    """{metric: {"mean", "std", "values"}} over dicts of scores (sample std; 0 for a single value)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, []).append(float(value))
    return {
        key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
        for key, v in values.items()
    }


def compare(
    model_names: list[str],
    data: str | TextDataset = DEFAULT_DATA,
    eval_data: str | TextDataset | None = None,
    *,
    out: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    batch_size_predict: int = 64,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    baseline: str | None = None,
    **settings,
) -> dict:
    """Fine-tune each model on the same split; one table of validation accuracy, macro F1, ECE, train
    time, predictions per second, parameters and size on disk, written as OUT/compare.csv and .json, with the
    baselines (majority class, uniform guess; `baseline="tfidf"`: TF-IDF + logistic regression) on the same split
    and each model's weak-model warnings. `allow_pickle`, `trust_remote_code`: as `train` takes them."""
    check_baseline(baseline)
    names = [m.strip() for m in model_names if m and m.strip()]
    if not names:
        raise BertsentError("--models: give one or more models separated by commas, e.g. --models minilm,mpnet.")
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)
    for name in names:  # every model is found before the first one trains: a typo must not cost a run
        hub.check_safe_weights(hub.resolve_model(name), allow_pickle)
    loading: dict[str, Any] = dict(allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
    _, train_set, validation, out = _prepare_runs(data, eval_data, out, overwrite, reading, settings, "compare", log)
    out = out or Path(RUNS_DIR) / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    work = _start_partial(out)
    rows: list[dict[str, Any]] = []
    for name, folder in zip(names, _folder_names(names)):
        log(f"-- {name} ({len(rows) + 1} of {len(names)})")
        result = train(
            train_set,
            validation,
            out=work / folder,
            progress=progress,
            log=log,
            baseline=baseline,
            **loading,
            **{**settings, "model": name},
        )
        row = _compare_row(name, result, validation, batch_size_predict, trust_remote_code)
        rows.append(row | {"model_dir": str(out / folder), "warnings": result.metrics.get("warnings", [])})
        baselines = result.metrics.get("baselines", {})  # the same split for every model: the same baselines
    table = {
        "validation": validation.name,
        "n": len(validation),
        "train": train_set.name,
        "settings": {k: v for k, v in settings.items() if v is not None},
        "models": rows,
        "baselines": baselines,
    }
    write_json_atomic(work / "compare.json", table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COMPARE_COLUMNS)
    writer.writeheader()
    # A row per model; the baselines, the same for all, are in compare.json and the printed table.
    writer.writerows(r | {"warnings": " | ".join(r["warnings"])} for r in rows)
    write_atomic(work / "compare.csv", buffer.getvalue())
    publish_folder(work, out)
    table["out"] = str(out)
    return table


def _start_partial(out: Path) -> Path:
    """The hidden folder the runs are written into, emptied of what a failed earlier attempt left; it becomes
    OUT only once every run is done, so a failure leaves no half-filled OUT that blocks the rerun."""
    work = partial_folder(out)
    remove_path(work)
    work.mkdir(parents=True)
    return work


def _folder_names(names: list[str]) -> list[str]:
    """A folder name for each model; the same model twice, or two folders with one name, get -2, -3, ..."""
    used, folders = set(), []
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name).strip("-.") or "model"
        folder, k = base, 2
        while folder in used:
            folder, k = f"{base}-{k}", k + 1
        used.add(folder)
        folders.append(folder)
    return folders


def _compare_row(name: str, result, validation: TextDataset, batch_size: int, trust_remote_code=False) -> dict:
    model = SentimentModel.load(result.model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code)
    model.predict_proba(validation.texts[:8])  # warm-up: first-call costs are not throughput
    clock = time.perf_counter()
    model.predict_proba(validation.texts)
    seconds = time.perf_counter() - clock
    size = sum(
        f.stat().st_size
        for f in Path(result.model_dir).rglob("*")
        if f.is_file() and f.name not in _NOT_MODEL_FILES and "tensorboard" not in f.parts
    )
    metadata = hub.read_metadata(result.model_dir)
    return {
        "model": name,
        "accuracy": result.metrics.get("accuracy"),
        "f1_macro": result.metrics.get("f1_macro"),
        "ece": result.metrics.get("ece"),
        "train_seconds": round(result.train_seconds, 2),
        "predictions_per_s": round(len(validation) / seconds, 1) if seconds > 0 else None,
        "parameters": metadata.get("parameters", hub.parameter_count(model.model)),
        "size_mb": round(size / 1e6, 2),
        "model_dir": str(result.model_dir),
    }
