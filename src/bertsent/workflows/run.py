"""The Python API behind the CLI: train and evaluate from data sources (files, archives, built-in names)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bertsent.data.labels import LabelMap, describe_map, relabel
from bertsent.data.sources import DataOptions, TextDataset, check_trainable, ordered_label_names, split_validation
from bertsent.defaults import DEFAULT_DATA, RUNS_DIR
from bertsent.errors import BertsentError, DataError
from bertsent.evaluation.baselines import TFIDF_STEPS, add_baselines, check_baseline, tfidf_baseline
from bertsent.evaluation.metrics import check_neutral_band, score_logits
from bertsent.files import check_writable, partial_folder, write_json_atomic
from bertsent.modeling import hub
from bertsent.prediction.predictor import SentimentModel, renamed_long
from bertsent.progress import progress_bar
from bertsent.runtime import Runtime
from bertsent.training import METRICS_LOG, TrainConfig, TrainResult, fit
from bertsent.training.config import check_class_weights
from bertsent.training.fit import resume_config


def train(
    data: str | TextDataset = DEFAULT_DATA,
    eval_data: str | TextDataset | None = None,
    *,
    out: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | LabelMap | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    resume_with_checkpoint_settings: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    report: bool = True,
    tensorboard: str | os.PathLike | bool | None = None,
    baseline: str | None = None,
    **settings: Any,
) -> TrainResult:
    """Fine-tune a model on a data source; `settings` are TrainConfig fields (model, epochs, lr, ...).

    Writes report.html, metrics.json, errors.csv and charts into the model folder unless `report=False`;
    `tensorboard=True` (or a folder) also logs the training scalars for TensorBoard. Under torchrun or
    accelerate launch, every process calls this and they train together; only the main one writes.
    `label_map` ("1,2=negative;3=neutral;4,5=positive", or a dict) turns the data's labels into classes.
    `resume`: continue the interrupted run in `out`; settings given here must equal its checkpoint's (those left
    out are the checkpoint's), or `resume_with_checkpoint_settings` (which implies resume) continues with the
    checkpoint's. `allow_pickle`: load pytorch_model.bin weights (a crafted file can run code);
    `trust_remote_code`: run Python code shipped with the model. Both off by default.
    The validation metrics hold the majority-class and uniform-guess baselines and warnings for a model that does
    not beat them; `baseline="tfidf"` adds TF-IDF + logistic regression fitted on the training split."""
    check_baseline(baseline)
    config = train_config(settings)
    given = {name for name, value in settings.items() if value is not None}
    resume = resume or resume_with_checkpoint_settings
    if resume:  # the checkpoint's settings, before the data is split with them (seed, validation fraction)
        if out is None:
            raise BertsentError("--resume: give --out, the folder of the interrupted run to continue.")
        config = resume_config(out, config, given, resume_with_checkpoint_settings, overwrite=overwrite)
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)  # a bad map fails now
    check_output_folders(out, tensorboard)
    runtime = Runtime(config.device, config.precision)
    log = runtime.main_only(log)
    with runtime.main_process_first():  # downloads and unpacks once, into the cache the others then read
        # a bad --model (or one with pickle weights only) fails now, not after reading (or downloading) the data
        hub.check_safe_weights(hub.resolve_model(config.model), allow_pickle)
        train_set, validation = training_data(data, eval_data, reading, config, log)
    link = out is None
    if out is None:  # the main process's clock names the folder for all
        out = runtime.broadcast(default_out_dir(config.model, data if isinstance(data, str) else "data"))
    result = fit(
        train_set,
        validation,
        config,
        out,
        overwrite=overwrite,
        resume=resume,
        given=given,
        resume_with_checkpoint_settings=resume_with_checkpoint_settings,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        progress=progress,
        log=log,
        report=report,
        tensorboard=tensorboard,
        baseline=baseline,
    )
    if link and runtime.is_main:
        link_latest(Path(out))
    return result


def check_output_folders(out, tensorboard) -> None:
    """--out and --tensorboard, checked before the model and the data: a folder that cannot be written fails now."""
    if out is not None and not str(out).strip():
        raise BertsentError("--out: give a folder name, or leave --out out for runs/<model>-<data>-<time>.")
    for flag, folder in (("--out", out), ("--tensorboard", tensorboard)):
        if folder in (None, True, False):
            continue
        if Path(folder).expanduser().is_file():  # --overwrite replaces model folders, never a user's file
            raise BertsentError(f"{flag} {folder}: is a file, not a folder. Pass another {flag}.")
        problem = check_writable(Path(folder).expanduser() / "probe")  # a file inside: the folder must take files
        if problem:
            raise BertsentError(f"{flag} {folder}: cannot write there ({problem}). Choose a folder you can write to.")


def train_config(settings: dict) -> TrainConfig:
    """A TrainConfig from keyword settings (None: not given); a misspelt name is a user error too."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise BertsentError(f"unknown setting {unknown[0]!r}. Training settings are: {', '.join(sorted(names))}.")
    return TrainConfig(**{k: v for k, v in settings.items() if v is not None})


def training_data(data, eval_data, reading: DataOptions, config: TrainConfig, log):
    """The training data and its validation data: --eval-data, or a seeded split of --data, or none; both read
    (and relabeled) as `reading` says."""
    train_set = reading.read(data, default_split="train")
    check_trainable(train_set)  # before the validation split, so the message names the file itself
    check_class_weights(config.class_weights, ordered_label_names(train_set.labels))  # before any model is trained
    validation = None
    if eval_data is not None:
        validation = reading.read(eval_data, default_split="test")
    for dataset in (train_set, validation):  # before the split: its parts no longer count what was dropped
        if dataset is not None and dataset.dropped:
            log(f"{dataset.name}: skipped {dataset.dropped} row(s) with an empty text or label (--drop-invalid)")
        if dataset is not None and describe_map(dataset):
            log(describe_map(dataset))
    if eval_data is None and config.validation_fraction > 0:
        train_set, validation = split_validation(train_set, config.validation_fraction, config.seed)
    return train_set, validation


def default_out_dir(model: str, data: str) -> Path:
    """runs/<model>-<data>-<time>."""

    def short(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(name).split(":")[0]).name.split(".")[0]).strip("-")

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(RUNS_DIR) / f"{short(model)}-{short(data)}-{stamp}"
    # Two runs started within the same second (a script, a docs page) get folders of their own: -2, -3, ...
    taken = 1
    out = base
    while out.exists() or partial_folder(out).exists():
        taken += 1
        out = base.with_name(f"{base.name}-{taken}")
    return out


def link_latest(out: Path) -> None:
    """runs/latest points at the newest run."""
    latest = out.parent / "latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(out.name)
    except OSError:  # e.g. no symlinks on this file system: the printed path is enough
        pass


def evaluate(
    model_dir: str | os.PathLike | SentimentModel,
    data: str | TextDataset,
    *,
    out: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | LabelMap | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    batch_size: int = 64,
    neutral_band: float | None = None,
    report: str | os.PathLike | None = None,
    backend: str = "auto",
    truncation: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
    threads: int | None = None,
    progress: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    baseline: str | None = None,
    train_data: str | TextDataset | None = None,
    long: str | None = None,
) -> dict:
    """Metrics of a trained model on labeled data; written as JSON to `out` when given, and as a full
    report (metrics.json, report.html, errors.csv, charts) into the folder `report` when given.
    They hold the majority-class and uniform-guess baselines and warnings for a model that does not beat them;
    `baseline="tfidf"` adds TF-IDF + logistic regression fitted on the model's training split, rebuilt from
    `train_data` or the training source the model folder records (read with the same columns and label map).

    backend, truncation (`long`: its deprecated old name), max_length, stride, threads, allow_pickle and
    trust_remote_code say how the model is loaded and run, as in `bertsent.load`;
    `progress` shows a progress bar on stderr; `label_map` as in `train`."""
    check_neutral_band(neutral_band)
    check_baseline(baseline)
    if train_data is not None and baseline != "tfidf":
        raise BertsentError("--train-data is the TF-IDF baseline's training data: give it with --baseline tfidf.")
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)  # a bad map fails now
    for flag, target in (("--out", out), ("--report", Path(report) / "metrics.json" if report else None)):
        problem = check_writable(target) if target is not None else None
        if problem:
            raise BertsentError(f"{flag} {target}: cannot write there ({problem}). Choose a folder you can write to.")
    if isinstance(model_dir, SentimentModel):
        predictor = model_dir
    else:
        predictor = SentimentModel.load(
            model_dir,
            batch_size=batch_size,
            backend=backend,
            truncation=renamed_long(long, truncation),
            max_length=max_length,
            stride=stride,
            threads=threads,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
        )
    predictor.neutral_band = neutral_band
    dataset = reading.read(data, default_split="test")
    assert dataset.labels is not None  # read with labels required
    unknown = sorted(set(dataset.labels) - set(predictor.classes_))
    if unknown:
        raise DataError(
            f"{dataset.name}: labels {', '.join(map(repr, unknown))} are not among the model's "
            f"classes ({', '.join(predictor.classes_)}). Use data with the model's labels."
        )
    tfidf_train = None
    if baseline == "tfidf":  # read (and checked) before the scoring, which may take long
        tfidf_train = baseline_training_data(predictor, train_data, reading)
    # Encode once: the ids for the model, the untruncated lengths for accuracy by length.
    with progress_bar(len(dataset), "Scoring", enabled=progress) as bar:
        logits, lengths = predictor.decision_function(dataset.texts, return_lengths=True, progress=bar)
    scores = score_logits(
        logits,
        dataset.labels,
        predictor.classes_,
        temperature=predictor.temperature,
        neutral_band=neutral_band,
        lengths=lengths,
    )
    tfidf = None
    if tfidf_train is not None:
        train_set, same = tfidf_train
        assert train_set.labels is not None  # baseline_training_data checked them
        with progress_bar(TFIDF_STEPS, "TF-IDF baseline", enabled=progress, unit="steps") as bar:
            tfidf = tfidf_baseline(
                train_set.texts, train_set.labels, dataset.texts, dataset.labels, predictor.classes_, progress=bar
            )
        tfidf |= {"train_source": train_set.name, "same_as_model": same}
    counts = predictor.metadata.get("data", {}).get("train", {}).get("label_counts")
    metrics = add_baselines(scores.metrics, dataset.labels, predictor.classes_, train_counts=counts, tfidf=tfidf)
    metrics["model"] = {
        "backend": predictor.backend_name,
        "truncation": predictor.truncation,
        "max_length": predictor.max_length,
        "stride": predictor.stride if predictor.truncation == "windows" else None,
        "temperature": predictor.temperature,
    }
    metrics["data"] = {
        "source": dataset.name,
        "rows": len(dataset),
        "dropped": dataset.dropped,
        "fingerprint": dataset.fingerprint(),
    }
    if "label_map" in dataset.meta:
        metrics["data"]["label_map"] = dataset.meta["label_map"]
    if report is not None:
        from bertsent.evaluation.report import write_report

        folder = None if isinstance(model_dir, SentimentModel) else Path(model_dir).expanduser()
        log_path = folder / METRICS_LOG if folder is not None and (folder / METRICS_LOG).is_file() else None
        metrics = write_report(
            report,
            texts=dataset.texts,
            y_true=dataset.labels,
            scores=scores,
            training_log=log_path,
            title=f"Evaluation of {folder.name if folder else 'a model'} on {dataset.name}",
            info={
                "model": str(folder) if folder else None,
                "data": dataset.name,
                "temperature": predictor.temperature,
                "neutral band": neutral_band if neutral_band else None,
            },
            explain=predictor.explain,
        )
    if out is not None:
        write_json_atomic(Path(out), metrics)
    return metrics


TRAIN_PART = " (train part)"  # how split_validation names the training part


def baseline_training_data(
    predictor: SentimentModel, train_data: str | TextDataset | None, reading: DataOptions
) -> tuple[TextDataset, bool]:
    """The TF-IDF baseline's training data for `evaluate`: `train_data`, else the training source the model
    folder records, made into the model's training split as training made it (seeded validation split, then
    --max-train-samples); and whether it is that split (its fingerprint equals the recorded one)."""
    from bertsent.training.fit import sample_rows

    recorded = predictor.metadata.get("data", {}).get("train", {})
    settings = predictor.metadata.get("settings", {})
    source = train_data
    if source is None:
        if not recorded.get("source"):
            raise BertsentError("--baseline tfidf: the model folder records no training data; pass --train-data SRC.")
        source = recorded["source"].removesuffix(TRAIN_PART)
    try:
        # the label map apart: a label it does not cover is not a file that "cannot be read here"
        dataset = replace(reading, label_map=None).read(source, default_split="train")
    except BertsentError as exc:  # e.g. a relative path from another folder, a file since moved
        if train_data is not None:
            raise
        raise DataError(
            f"--baseline tfidf: the model's training data cannot be read here ({exc}). Pass --train-data SRC."
        ) from None
    dataset = relabel(dataset, reading.label_map)
    assert dataset.labels is not None  # read with labels required
    unknown = sorted(set(dataset.labels) - set(predictor.classes_))
    if unknown:
        raise DataError(
            f"--baseline tfidf: {dataset.name}: labels {', '.join(map(repr, unknown))} are not among the model's "
            f"classes ({', '.join(predictor.classes_)}). Give the model's training data, with its --label-map."
        )
    candidates = [dataset]
    seed = settings.get("seed", 42)
    if recorded.get("source", "").endswith(TRAIN_PART) and settings.get("validation_fraction"):
        with contextlib.suppress(DataError):  # too small to split: not the data the model was trained on
            candidates.append(split_validation(dataset, settings["validation_fraction"], seed)[0])
    candidates += [sample_rows(c, settings.get("max_train_samples"), seed) for c in candidates]
    for candidate in candidates:
        if candidate.fingerprint() == recorded.get("fingerprint"):
            return candidate, True
    # Not the model's training split (other data, or the file changed): the data as given, or as training cut it.
    return (dataset if train_data is not None else candidates[-1]), False
