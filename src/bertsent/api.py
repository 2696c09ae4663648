"""The Python API behind every CLI command: train, evaluate and predict from data sources."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np

from . import model as models
from .data import TextDataset, check_trainable, read_data, split_validation
from .errors import BertsentError
from .evaluation import accuracy_by_length, compute_metrics, expected_calibration_error
from .prediction import SentimentModel, softmax
from .training import METRICS_LOG, TrainConfig, TrainResult, fit

DEFAULT_DATA = "rotten-tomatoes"
RUNS_DIR = "runs"


def default_out_dir(model: str, data: str) -> Path:
    """runs/<model>-<data>-<time>, and runs/latest pointing at it."""
    def short(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(name).split(":")[0]).name.split(".")[0]).strip("-")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(RUNS_DIR) / f"{short(model)}-{short(data)}-{stamp}"


def _link_latest(out: Path) -> None:
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    except OSError:  # e.g. no symlinks on this file system: the printed path is enough
        pass


def train(data: str | TextDataset = DEFAULT_DATA, eval_data: str | TextDataset | None = None, *,
          out: str | os.PathLike | None = None, text_column: str | None = None, label_column: str | None = None,
          encoding: str = "utf-8", drop_invalid: bool = False, overwrite: bool = False, resume: bool = False,
          progress: bool = True, log=print, report: bool = True, tensorboard: str | os.PathLike | bool | None = None,
          **settings) -> TrainResult:
    """Fine-tune a model on a data source; `settings` are TrainConfig fields (model, epochs, lr, ...).

    Writes report.html, metrics.json, errors.csv and charts into the model folder unless `report=False`;
    `tensorboard=True` (or a folder) also logs the training scalars for TensorBoard."""
    read = dict(text_column=text_column, label_column=label_column, encoding=encoding, drop_invalid=drop_invalid)
    config = TrainConfig(**{k: v for k, v in settings.items() if v is not None})
    models.resolve_model(config.model)  # a bad --model fails now, not after reading (or downloading) the data
    train_set, validation = _train_and_validation(data, eval_data, read, config, log)
    link = out is None
    out = Path(out) if out is not None else default_out_dir(config.model, str(data if isinstance(data, str) else "data"))
    result = fit(train_set, validation, config, out, overwrite=overwrite, resume=resume, progress=progress, log=log,
                 report=report, tensorboard=tensorboard)
    if link:
        _link_latest(out)
    return result


def _train_and_validation(data, eval_data, read: dict, config: TrainConfig, log):
    """The training data and its validation data: --eval-data, or a seeded split of --data, or none."""
    train_set = data if isinstance(data, TextDataset) else read_data(data, default_split="train", **read)
    check_trainable(train_set)  # before the validation split, so the message names the file itself
    validation = None
    if eval_data is not None:
        validation = eval_data if isinstance(eval_data, TextDataset) else read_data(
            eval_data, default_split="test", **read)
    for dataset in (train_set, validation):  # before the split: its parts no longer count what was dropped
        if dataset is not None and dataset.dropped:
            log(f"{dataset.name}: skipped {dataset.dropped} row(s) with an empty text or label (--drop-invalid)")
    if eval_data is None and config.validation_fraction > 0:
        train_set, validation = split_validation(train_set, config.validation_fraction, config.seed)
    return train_set, validation


def evaluate(model_dir: str | os.PathLike | SentimentModel, data: str | TextDataset, *,
             out: str | os.PathLike | None = None, text_column: str | None = None,
             label_column: str | None = None, encoding: str = "utf-8", drop_invalid: bool = False,
             batch_size: int = 64, neutral_band: float | None = None,
             report: str | os.PathLike | None = None) -> dict:
    """Metrics of a trained model on labeled data; written as JSON to `out` when given, and as a full
    report (metrics.json, report.html, errors.csv, charts) into the folder `report` when given."""
    check_neutral_band(neutral_band)
    model = model_dir if isinstance(model_dir, SentimentModel) else SentimentModel.load(model_dir, batch_size=batch_size)
    model.neutral_band = neutral_band
    dataset = data if isinstance(data, TextDataset) else read_data(
        data, text_column=text_column, label_column=label_column, encoding=encoding,
        drop_invalid=drop_invalid, default_split="test")
    from .errors import DataError

    unknown = sorted(set(dataset.labels) - set(model.classes_))
    if unknown:
        raise DataError(f"{dataset.name}: labels {', '.join(map(repr, unknown))} are not among the model's "
                        f"classes ({', '.join(model.classes_)}). Use data with the model's labels.")
    # Encode once: the ids for the model, the untruncated lengths for accuracy by length.
    logits, lengths = model.decision_function(dataset.texts, return_lengths=True)
    probs = softmax(logits, model.temperature)
    predicted = model.labels_from_proba(probs)
    metrics = compute_metrics(dataset.labels, predicted, model.classes_, probs)
    metrics["temperature"] = model.temperature
    uncalibrated = softmax(logits) if model.temperature != 1.0 else None  # the "before" curve, when it differs
    if len(dataset):
        index = {name: i for i, name in enumerate(model.classes_)}
        metrics["ece_uncalibrated"] = expected_calibration_error(
            softmax(logits), np.array([index[y] for y in dataset.labels]))
    if neutral_band:
        metrics["neutral_band"] = neutral_band
    metrics["by_length"] = accuracy_by_length(lengths, dataset.labels, predicted)
    metrics["data"] = {"source": dataset.name, "rows": len(dataset), "dropped": dataset.dropped,
                       "fingerprint": dataset.fingerprint()}
    if report is not None:
        from .report import write_report

        folder = None if isinstance(model_dir, SentimentModel) else Path(model_dir).expanduser()
        log_path = folder / METRICS_LOG if folder is not None and (folder / METRICS_LOG).is_file() else None
        metrics = write_report(
            report, texts=dataset.texts, y_true=dataset.labels, probs=probs, classes=model.classes_,
            predicted=predicted, lengths=lengths, probs_uncalibrated=uncalibrated, metrics=metrics,
            training_log=log_path, title=f"Evaluation of {folder.name if folder else 'a model'} on {dataset.name}",
            info={"model": str(folder) if folder else None, "data": dataset.name,
                  "temperature": model.temperature,
                  "neutral band": neutral_band if neutral_band else None})
    if out is not None:
        write_json_atomic(Path(out), metrics)
    return metrics


def check_neutral_band(neutral_band: float | None) -> None:
    if neutral_band is not None and not 0 <= neutral_band < 1:
        raise BertsentError(f"--neutral-band {neutral_band}: give a width in [0, 1), e.g. 0.2 (neutral below "
                            f"60% confidence).")


def write_json_atomic(path: Path, payload) -> None:
    from .report import write_atomic

    write_atomic(path, json.dumps(payload, indent=2))


# -- several seeds, several models -------------------------------------------------------

SUMMARY_METRICS = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "log_loss", "ece",
                   "ece_uncalibrated")


def _prepare_runs(data, eval_data, out, overwrite: bool, read: dict, settings: dict, flag: str, log):
    config = TrainConfig(**{k: v for k, v in settings.items() if v is not None})
    train_set, validation = _train_and_validation(data, eval_data, read, config, log)
    if validation is None:
        raise BertsentError(f"{flag} compares validation scores: give --eval-data, or a --validation-fraction above 0.")
    out = Path(out).expanduser() if out is not None else None
    if out is not None and out.exists() and not overwrite:
        raise BertsentError(f"{out}: already exists. Pass --overwrite to replace it, or another --out.")
    return config, train_set, validation, out


def train_seeds(data: str | TextDataset = DEFAULT_DATA, eval_data: str | TextDataset | None = None, *,
                seeds: int = 3, out: str | os.PathLike | None = None, text_column: str | None = None,
                label_column: str | None = None, encoding: str = "utf-8", drop_invalid: bool = False,
                overwrite: bool = False, progress: bool = True, log=print, report: bool = True,
                tensorboard: str | os.PathLike | bool | None = None, **settings) -> dict:
    """Train with seeds seed, seed+1, ... into OUT/seed-N on one validation split (drawn with the first
    seed), and write OUT/summary.json: each validation metric's mean and standard deviation."""
    if seeds < 1:
        raise BertsentError(f"--seeds {seeds}: must be at least 1.")
    if settings.pop("resume", False):
        raise BertsentError("--resume does not combine with --seeds: resume one run at a time with --out OUT/seed-N.")
    read = dict(text_column=text_column, label_column=label_column, encoding=encoding, drop_invalid=drop_invalid)
    config, train_set, validation, out = _prepare_runs(data, eval_data, out, overwrite, read, settings, "--seeds", log)
    link = out is None
    out = out or default_out_dir(config.model, str(data if isinstance(data, str) else "data"))
    runs = []
    for seed in range(config.seed, config.seed + seeds):
        log(f"-- seed {seed} ({seed - config.seed + 1} of {seeds})")
        board = Path(tensorboard) / f"seed-{seed}" if tensorboard not in (None, False, True) else tensorboard
        result = train(train_set, validation, out=out / f"seed-{seed}", overwrite=overwrite, progress=progress,
                       log=log, report=report, tensorboard=board, **{**settings, "seed": seed})
        runs.append({"seed": seed, "model_dir": str(result.model_dir), "best_epoch": result.best_epoch,
                     "train_seconds": round(result.train_seconds, 2),
                     "metrics": {k: result.metrics[k] for k in SUMMARY_METRICS if k in result.metrics}})
    summary = {"seeds": [r["seed"] for r in runs], "validation": validation.name, "n": len(validation),
               "std": "sample standard deviation (n-1); 0 for one seed", "runs": runs,
               "metrics": summarize(r["metrics"] for r in runs)}
    summary["metrics"].update(summarize({"train_seconds": r["train_seconds"]} for r in runs))
    write_json_atomic(out / "summary.json", summary)
    summary["out"] = str(out)
    if link:
        _link_latest(out)
    return summary


def summarize(rows) -> dict:
    """{metric: {"mean", "std", "values"}} over dicts of scores (sample std; 0 for a single value)."""
    values: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            values.setdefault(key, []).append(float(value))
    return {key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "values": v}
            for key, v in values.items()}


def format_seed_summary(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"{'metric':<18} {'mean':>8} {'std':>8}  " + "  ".join(f"{'seed ' + str(s):>9}" for s in seeds)]
    for key, stats in summary["metrics"].items():
        digits = 1 if key == "train_seconds" else 4
        lines.append(f"{key:<18} {stats['mean']:>8.{digits}f} {stats['std']:>8.{digits}f}  "
                     + "  ".join(f"{v:>9.{digits}f}" for v in stats["values"]))
    return "\n".join(lines)


COMPARE_COLUMNS = ("model", "accuracy", "f1_macro", "ece", "train_seconds", "predictions_per_s", "parameters",
                   "size_mb", "model_dir")
_NOT_MODEL_FILES = {"metrics.json", "report.html", "errors.csv", "loss.png", "confusion_matrix.png",
                    "reliability.png", "accuracy_by_length.png", METRICS_LOG}


def compare(model_names: list[str], data: str | TextDataset = DEFAULT_DATA,
            eval_data: str | TextDataset | None = None, *, out: str | os.PathLike | None = None,
            text_column: str | None = None, label_column: str | None = None, encoding: str = "utf-8",
            drop_invalid: bool = False, overwrite: bool = False, progress: bool = True, log=print,
            batch_size_predict: int = 64, **settings) -> dict:
    """Fine-tune each model on the same split; one table of validation accuracy, macro F1, ECE, train
    time, predictions per second, parameters and size on disk, written as OUT/compare.csv and .json."""
    import csv
    import io
    import time

    from .report import write_atomic

    names = [m.strip() for m in model_names if m and m.strip()]
    if not names:
        raise BertsentError("--models: give one or more models separated by commas, e.g. --models minilm,mpnet.")
    read = dict(text_column=text_column, label_column=label_column, encoding=encoding, drop_invalid=drop_invalid)
    config, train_set, validation, out = _prepare_runs(data, eval_data, out, overwrite, read, settings, "compare", log)
    out = out or Path(RUNS_DIR) / f"compare-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    rows, used = [], set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name).strip("-.") or "model"
        folder, k = base, 2
        while folder in used:  # the same model twice, or two folders with one name
            folder, k = f"{base}-{k}", k + 1
        used.add(folder)
        log(f"-- {name} ({len(rows) + 1} of {len(names)})")
        result = train(train_set, validation, out=out / folder, overwrite=overwrite, progress=progress, log=log,
                       **{**settings, "model": name})
        model = SentimentModel.load(result.model_dir, batch_size=batch_size_predict)
        model.predict_proba(validation.texts[:8])  # warm-up: first-call costs are not throughput
        clock = time.perf_counter()
        model.predict_proba(validation.texts)
        seconds = time.perf_counter() - clock
        size = sum(f.stat().st_size for f in Path(result.model_dir).rglob("*")
                   if f.is_file() and f.name not in _NOT_MODEL_FILES and "tensorboard" not in f.parts)
        metadata = models.read_metadata(result.model_dir)
        rows.append({"model": name, "accuracy": result.metrics.get("accuracy"),
                     "f1_macro": result.metrics.get("f1_macro"), "ece": result.metrics.get("ece"),
                     "train_seconds": round(result.train_seconds, 2),
                     "predictions_per_s": round(len(validation) / seconds, 1) if seconds > 0 else None,
                     "parameters": metadata.get("parameters", models.parameter_count(model.model)),
                     "size_mb": round(size / 1e6, 2), "model_dir": str(result.model_dir)})
    table = {"validation": validation.name, "n": len(validation), "train": train_set.name,
             "settings": {k: v for k, v in settings.items() if v is not None}, "models": rows}
    write_json_atomic(out / "compare.json", table)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COMPARE_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "compare.csv", buffer.getvalue())
    table["out"] = str(out)
    return table


def format_compare(table: dict) -> str:
    header = f"{'model':<24} {'accuracy':>8} {'macro F1':>8} {'ECE':>6} {'train s':>8} {'pred/s':>8} " \
             f"{'params':>8} {'size MB':>8}"
    lines = [header]
    for r in table["models"]:
        name = r["model"] if len(r["model"]) <= 24 else "..." + r["model"][-21:]
        lines.append(f"{name:<24} {r['accuracy'] or 0:>8.4f} {r['f1_macro'] or 0:>8.4f} {r['ece'] or 0:>6.3f} "
                     f"{r['train_seconds']:>8.1f} {r['predictions_per_s'] or 0:>8.1f} "
                     f"{r['parameters'] / 1e6:>7.1f}M {r['size_mb']:>8.1f}")
    return "\n".join(lines)


class SentimentClassifier:
    """scikit-learn style: `SentimentClassifier(epochs=2).fit(texts, labels).predict(texts)`."""

    def __init__(self, model: str = models.DEFAULT_MODEL, out: str | os.PathLike | None = None, **settings):
        self.model = model
        self.out = out
        self.settings = settings
        self.model_: SentimentModel | None = None
        self.result_: TrainResult | None = None

    def fit(self, texts, labels, eval_texts=None, eval_labels=None, progress: bool = False, log=print):
        train_set = TextDataset([str(t) for t in texts], [str(y) for y in labels], name="fit data")
        validation = (TextDataset([str(t) for t in eval_texts], [str(y) for y in eval_labels], name="eval data")
                      if eval_texts is not None else None)
        out = self.out or tempfile.mkdtemp(prefix="bertsent-")
        overwrite = self.out is None or Path(out).exists()
        self.result_ = train(train_set, validation, out=out, overwrite=overwrite, progress=progress, log=log,
                             model=self.model, **self.settings)
        self.model_ = SentimentModel.load(self.result_.model_dir)
        return self

    def _fitted(self) -> SentimentModel:
        if self.model_ is None:
            from .errors import BertsentError

            raise BertsentError("this SentimentClassifier is not fitted yet: call fit(texts, labels) first.")
        return self.model_

    @property
    def classes_(self) -> list[str]:
        return self._fitted().classes_

    def predict(self, texts) -> list[str]:
        return self._fitted().predict(texts)

    def predict_proba(self, texts):
        return self._fitted().predict_proba(texts)

    def save(self, folder: str | os.PathLike) -> Path:
        source = Path(self.result_.model_dir) if self.result_ else None
        self._fitted()
        shutil.copytree(source, folder, dirs_exist_ok=True)
        return Path(folder)
