"""Finishing a run: the best weights, temperature scaling, bertsent.json, the model files, the report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from bertsent.data.sources import TextDataset
from bertsent.environment import package_version
from bertsent.evaluation.baselines import add_baselines, tfidf_baseline
from bertsent.evaluation.explain import explain as explain_words
from bertsent.evaluation.metrics import fit_temperature
from bertsent.modeling import hub
from bertsent.modeling.packing import restore_attention
from bertsent.runtime import library_versions
from bertsent.training.loop import Run
from bertsent.training.records import METRICS_LOG


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict  # validation metrics of the kept model, calibrated
    best_epoch: float | None
    train_seconds: float
    settings: dict
    history: list = field(default_factory=list)


def finish(
    run: Run,
    tokenizer,
    train: TextDataset,
    validation: TextDataset | None,
    *,
    started: float,
    report: bool,
    baseline: str | None = None,
) -> TrainResult:
    """Keep the best evaluation's weights, calibrate on the validation data, write and publish the folder.
    The validation metrics get the baselines (`baseline="tfidf"`: that one too) and weak-model warnings."""
    config, selection = run.config, run.selection
    if config.packing:
        restore_attention(run.model)  # saved and loaded with plain SDPA attention
    if selection.weights is not None:
        run.model.load_state_dict(selection.weights)
    scores = temperature = None
    if run.validation_set is not None:
        # The kept evaluation's logits, or (when no evaluation ever improved, e.g. a NaN loss) the last model's.
        logits = selection.logits if selection.logits is not None else run.validation_set.logits(run.model)
        temperature = fit_temperature(logits, run.validation_set.y_index) if config.calibrate else 1.0
        scores = run.validation_set.score(logits, temperature)
        assert validation is not None  # the validation set's data
        _add_baselines(scores.metrics, train, validation, run.validation_set.classes, baseline, run.log)
    train_seconds = time.time() - started
    metadata = _metadata(run, train, validation, scores.metrics if scores else None, temperature, train_seconds)
    if run.runtime.is_main:
        work = run.folder.work
        run.model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        (work / hub.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        hub.write_calibration_texts(work, train.texts, config.seed)
        if report:
            # the most confident mistakes' words, shaded in the report (calibrated probabilities beside them)
            assert isinstance(config.max_length, int)  # resolved
            explain = partial(
                explain_words, run.model, tokenizer, max_length=config.max_length, temperature=temperature or 1.0
            )
            _write_report(work, validation, scores, metadata, run.log, explain)
        run.folder.publish()
    run.runtime.wait_for_everyone()  # no process returns before the folder is in place
    return TrainResult(
        run.folder.out,
        scores.metrics if scores else {},
        selection.epoch,
        train_seconds,
        metadata["settings"],
        selection.history,
    )


def _metadata(
    run: Run,
    train: TextDataset,
    validation: TextDataset | None,
    metrics: dict | None,
    temperature: float | None,
    train_seconds: float,
) -> dict:
    config = run.config
    return {
        "bertsent_version": package_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": config.model,
        # transformers types both as Optional; a classifier's config has them set
        "labels": [run.model.config.id2label[i] for i in range(run.model.config.num_labels)],  # type: ignore[index, arg-type]
        "max_length": config.max_length,
        "truncation": config.truncation,
        "stride": config.stride,  # windows: prediction scores in the same windows by default
        "temperature": temperature if temperature is not None else 1.0,
        "settings": config.as_dict() | {"micro_batch_size": run.micro.size},
        "processes": {
            "count": run.runtime.processes,
            "global_batch_size": config.batch_size * run.runtime.processes * config.grad_accum,
        },
        "data": {"train": _data_summary(train)} | ({"validation": _data_summary(validation)} if validation else {}),
        "metrics": {"validation": metrics, "best_epoch": run.selection.epoch, "history": run.selection.history},
        "parameters": hub.parameter_count(run.model),
        "train_seconds": round(train_seconds, 2),
        "device": run.runtime.device.type,
        "versions": library_versions(),
    }


def _add_baselines(metrics: dict, train: TextDataset, validation: TextDataset, classes, baseline, log) -> None:
    """The majority class from the training labels; TF-IDF (when asked) fitted on the same training split."""
    assert train.labels is not None and validation.labels is not None  # trained on and scored on: labeled
    tfidf = None
    if baseline == "tfidf":
        log(f"TF-IDF baseline: fitting on the {len(train)} training texts")
        try:
            tfidf = tfidf_baseline(train.texts, train.labels, validation.texts, validation.labels, classes)
            tfidf["train_source"] = train.name
        except Exception as exc:  # noqa: BLE001 - the trained model matters more than its baseline
            log(f"Warning: no TF-IDF baseline ({exc}); the model is saved.")
    add_baselines(metrics, validation.labels, classes, train_counts=train.label_counts(), tfidf=tfidf)


def _data_summary(dataset: TextDataset) -> dict:
    return {
        "source": dataset.name,
        "rows": len(dataset),
        "fingerprint": dataset.fingerprint(),
        "label_counts": dataset.label_counts(),
        "dropped": dataset.dropped,
    }


def _class_weights_text(metadata: dict) -> str | None:
    weights = metadata["settings"].get("class_weights")
    return ", ".join(f"{name} {w:.3g}" for name, w in zip(metadata["labels"], weights)) if weights else None


def _write_report(work: Path, validation: TextDataset | None, scores, metadata: dict, log, explain=None) -> None:
    """The report of a trained model on its validation data; a failure here costs the report, not the model."""
    started = time.time()
    try:
        from bertsent.evaluation.report import write_report

        info = {
            "model": metadata["base_model"],
            "validation": validation.name if validation is not None else None,
            "temperature": float(metadata["temperature"]),
            "best epoch": metadata["metrics"]["best_epoch"],
            "class weights": _class_weights_text(metadata),
        }
        if scores is None:
            write_report(work, training_log=work / METRICS_LOG, title="Training report", info=info)
        else:
            assert validation is not None  # the scores are its
            write_report(
                work,
                texts=validation.texts,
                y_true=validation.labels,
                scores=scores,
                training_log=work / METRICS_LOG,
                title="Training report (validation data)",
                info=info,
                explain=explain,
            )
    except Exception as exc:  # noqa: BLE001 - hours of training must not be lost to a chart
        log(f"Warning: could not write the report ({type(exc).__name__}: {exc}); the model is saved.")
    else:
        log(f"Report written in {time.time() - started:.1f} s: report.html")
