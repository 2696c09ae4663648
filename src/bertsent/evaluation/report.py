"""The evaluation report: metrics.json, errors.csv, PNG charts and one self-contained report.html.

`write_report` is called at the end of every `train` (into the model folder) and by `evaluate
--report DIR`. Charts are drawn with matplotlib's Agg backend (no pyplot, no display), each PNG is
embedded in report.html as a base64 data URI, so the page opens offline on its own. Every file is
written under a temporary name and renamed into place.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from bertsent.errors import BertsentError
from bertsent.evaluation.baselines import add_baselines, baseline_rows
from bertsent.evaluation.metrics import Scores, score_probs
from bertsent.files import write_atomic

METRICS_FILE = "metrics.json"
HTML_FILE = "report.html"
ERRORS_FILE = "errors.csv"
LOSS_PNG = "loss.png"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"
LENGTH_PNG = "accuracy_by_length.png"
REPORT_FILES = (METRICS_FILE, HTML_FILE, ERRORS_FILE, LOSS_PNG, CONFUSION_PNG, RELIABILITY_PNG, LENGTH_PNG)
ERRORS_SHOWN = 25  # rows of errors.csv shown in report.html
EXPLAINED = 3  # most confident mistakes shown with their words shaded, when the report is given `explain`

COLORS = {
    "train": "#9db4d6",
    "train_avg": "#1f4e99",
    "validation": "#d1495b",
    "bar": "#3d7dca",
    "before": "#e59f3b",
    "after": "#3d7dca",
    "ideal": "#888888",
}


# -- files ---------------------------------------------------------------------------------------


def read_training_log(path: str | os.PathLike | None) -> list[dict]:
    """The records of a metrics.jsonl (training steps and validation scores); [] when there is none."""
    if path is None or not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # e.g. a line cut by an interrupted run
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def error_rows(
    texts: list[str], y_true: list[str], y_pred: list[str], probs: np.ndarray, classes: list[str]
) -> list[dict]:
    """Misclassified examples, most confident first, with the probability of every class."""
    rows: list[dict[str, Any]] = []
    for i, (truth, guess) in enumerate(zip(y_true, y_pred)):
        if truth != guess:
            row = {
                "index": i,
                "text": texts[i],
                "label": truth,
                "predicted": guess,
                "confidence": float(probs[i].max()),
            }
            row.update({f"p_{c}": float(p) for c, p in zip(classes, probs[i])})
            rows.append(row)
    rows.sort(key=lambda r: (-r["confidence"], r["index"]))
    return rows


def errors_csv(rows: list[dict], classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["index", "text", "label", "predicted", "confidence"] + [f"p_{c}" for c in classes])
    for r in rows:
        writer.writerow(
            [r["index"], r["text"], r["label"], r["predicted"], f"{r['confidence']:.6f}"]
            + [f"{r[f'p_{c}']:.6f}" for c in classes]
        )
    return buffer.getvalue()


# -- charts --------------------------------------------------------------------------------------


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, without pyplot and its global state
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white")
    return buffer.getvalue()


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    head = np.cumsum(values[: window - 1]) / np.arange(1, window)
    return np.concatenate([head, np.convolve(values, kernel, mode="valid")])


def plot_training(records: list[dict]) -> bytes | None:
    """Train loss per step (raw and smoothed) and validation loss; validation accuracy and F1 beside."""
    steps = [r for r in records if r.get("split") is None and "loss" in r]
    val = [r for r in records if r.get("split") == "validation" and "loss" in r]
    if not steps and not val:
        return None
    figure = _figure(9.6, 3.8)
    ax_loss, ax_score = figure.subplots(1, 2)
    if steps:
        x = np.array([r["step"] for r in steps])
        y = np.array([r["loss"] for r in steps], dtype=float)
        ax_loss.plot(x, y, color=COLORS["train"], linewidth=0.8, label="train (per step)")
        window = max(1, len(y) // 25)
        if window > 1:
            ax_loss.plot(
                x,
                _moving_average(y, window),
                color=COLORS["train_avg"],
                linewidth=1.8,
                label=f"train ({window}-step average)",
            )
    if val:
        _plot_records(ax_loss, val, "step", "loss", "o-", color=COLORS["validation"], linewidth=1.8, label="validation")
    ax_loss.set(title="Loss", xlabel="optimizer step", ylabel="cross-entropy")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    if val:
        for key, style in (("accuracy", "o-"), ("f1_macro", "s--")):
            if all(key in r for r in val):
                _plot_records(ax_score, val, "step", key, style, label=key.replace("_", " "))
        ax_score.set(title="Validation scores", xlabel="optimizer step", ylim=(-0.02, 1.02))
        ax_score.grid(alpha=0.3)
        ax_score.legend(fontsize=8)
    else:
        ax_score.axis("off")
        ax_score.text(0.5, 0.5, "no validation data", ha="center", va="center", color="#666")
    return _png(figure)


def _plot_records(ax, records: list[dict], x: str, y: str, *style, **options) -> None:
    """One field of `records` against another, on `ax`."""
    ax.plot([r[x] for r in records], [r[y] for r in records], *style, **options)


def plot_confusion(matrix: list[list[int]], labels: list[str], classes: list[str]) -> bytes:
    """Counts, coloured by the share of each true class's row."""
    counts = np.array(matrix, dtype=float)
    rows = [i for i, name in enumerate(labels) if name in classes or counts[i].sum() > 0]  # no empty "neutral" row
    counts = counts[rows]
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    size = 1.6 + 1.1 * max(len(labels), 2)
    figure = _figure(size + 1.2, size)
    ax = figure.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0)
    ax.set_yticks(range(len(rows)), [labels[i] for i in rows])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return _png(figure)


def plot_reliability(after: list[dict], before: list[dict] | None, ece_after: float, ece_before: float | None) -> bytes:
    """Accuracy against confidence per bin; the diagonal is perfect calibration."""
    figure = _figure(5.6, 4.6)
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color=COLORS["ideal"], label="perfectly calibrated")
    width = (after[0]["hi"] - after[0]["lo"]) if after else 1 / 15
    ax.bar(
        [b["lo"] + width / 2 for b in after],
        [b["accuracy"] for b in after],
        width=width * 0.9,
        color=COLORS["after"],
        alpha=0.55,
        edgecolor=COLORS["after"],
        label=f"{'calibrated' if before is not None else 'model'} accuracy (ECE {ece_after:.3f})",
    )
    _plot_records(ax, after, "confidence", "accuracy", "o-", color=COLORS["after"], markersize=4)
    if before is not None:
        label = f"before calibration (ECE {ece_before:.3f})"
        _plot_records(ax, before, "confidence", "accuracy", "s--", color=COLORS["before"], markersize=4, label=label)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence (top-class probability)",
        ylabel="accuracy",
        title="Reliability diagram",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _png(figure)


def plot_length(buckets: list[dict], overall: float) -> bytes:
    figure = _figure(6.4, 3.8)
    ax = figure.subplots()
    names = [f"{b['min_tokens']}-{b['max_tokens']}" for b in buckets]
    bars = ax.bar(names, [b["accuracy"] for b in buckets], color=COLORS["bar"])
    for bar, b in zip(bars, buckets):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height() + 0.01,
            f"{b['accuracy']:.1%}\nn={b['n']}",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(overall, color=COLORS["validation"], linestyle="--", linewidth=1, label=f"overall {overall:.1%}")
    ax.set(ylim=(0, 1.15), xlabel="review length (tokens)", ylabel="accuracy", title="Accuracy by review length")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(figure)


# -- the report ----------------------------------------------------------------------------------


def write_report(
    folder: str | os.PathLike,
    *,
    texts: list[str] | None = None,
    y_true: list[str] | None = None,
    probs: np.ndarray | None = None,
    classes: list[str] | None = None,
    predicted: list[str] | None = None,
    lengths=None,
    probs_uncalibrated: np.ndarray | None = None,
    scores: Scores | None = None,
    training_log: str | os.PathLike | list | None = None,
    title: str = "bertsent report",
    info: dict | None = None,
    explain=None,
) -> dict:
    """Write metrics.json, errors.csv, the PNG charts and report.html into `folder`.

    Give either `scores` (from `metrics.score_logits`) or `probs`: the (calibrated) probabilities in
    `classes` order, with `predicted` the labels given (default argmax), `probs_uncalibrated` for the
    "before" curve and `lengths` (token lengths) for the length buckets. `training_log` is a
    metrics.jsonl path or its records. Without labeled data only the training curves are drawn.
    `explain(texts, target=labels)` (e.g. `SentimentModel.explain`, or `bertsent.evaluation.explain.explain` bound to a
    model and tokenizer), when given, shades the words of the most confident mistakes.
    Returns the metrics as written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = training_log if isinstance(training_log, list) else read_training_log(training_log)
    if scores is None and probs is not None and y_true is not None and len(y_true):
        assert classes is not None, "probs come with their classes"
        scores = score_probs(
            probs, y_true, classes, predicted=predicted, lengths=lengths, probs_uncalibrated=probs_uncalibrated
        )
    has_data = scores is not None and y_true is not None and len(y_true) > 0
    metrics = dict(scores.metrics) if scores is not None else {}
    classes = scores.classes if scores is not None and has_data else []
    # predictions made elsewhere: no training labels to count
    if has_data and y_true is not None and "baselines" not in metrics:
        add_baselines(metrics, y_true, classes)
    images: dict[str, bytes] = {}
    errors: list[dict] = []
    if scores is not None and y_true is not None and has_data:
        errors = error_rows(texts or [""] * len(y_true), y_true, scores.predicted, scores.probs, classes)
        images[CONFUSION_PNG] = plot_confusion(metrics["confusion_matrix"], metrics["labels"], classes)
        before = metrics.get("reliability_uncalibrated") if scores.probs_uncalibrated is not None else None
        images[RELIABILITY_PNG] = plot_reliability(
            metrics["reliability"],
            before,
            metrics["ece"],
            metrics.get("ece_uncalibrated") if before is not None else None,
        )
        if metrics.get("by_length"):
            images[LENGTH_PNG] = plot_length(metrics["by_length"], metrics["accuracy"])
    explained = explain_mistakes(errors, classes, explain) if has_data and explain is not None else None
    training_png = plot_training(records)
    if training_png is not None:
        images[LOSS_PNG] = training_png

    for stale in set(REPORT_FILES) - set(images) - {METRICS_FILE, HTML_FILE, ERRORS_FILE}:
        (folder / stale).unlink(missing_ok=True)  # e.g. an older report's chart this one has no data for
    for name, data in images.items():
        write_atomic(folder / name, data)
    if has_data:
        write_atomic(folder / ERRORS_FILE, errors_csv(errors, classes))
    write_atomic(folder / METRICS_FILE, json.dumps(metrics, indent=2))
    page = render_html(metrics, images, errors, classes, title, info or {}, has_data, explained)
    write_atomic(folder / HTML_FILE, page)
    return metrics


def explain_mistakes(errors: list[dict], classes: list[str], explain, count: int = EXPLAINED) -> list | str | None:
    """Word attributions of the `count` most confident mistakes, each for the class the model chose; a note
    instead when they cannot be had (Captum missing, or the explainer failed: the report goes on)."""
    rows = errors[:count]
    if not rows:
        return None
    # "neutral" from a band: its class
    targets = [classes[int(np.argmax([r[f"p_{c}"] for c in classes]))] for r in rows]
    try:
        return list(explain([r["text"] for r in rows], target=targets))
    except BertsentError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a chart's worth of extra: never the report's end
        return f"the attributions could not be computed ({type(exc).__name__}: {exc})"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;background:#f5f6f8;color:#1d2330}
main{max-width:1040px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.6em;margin:0 0 4px}
h2{font-size:1.2em;margin:28px 0 10px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6472;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:10px 16px;min-width:120px}
.card .v{font-size:1.5em;font-weight:600}.card .k{color:#5b6472;font-size:.85em}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:4px 18px 14px;margin-top:18px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:.9em;margin:8px 0}
th,td{border-bottom:1px solid #e6e8ec;padding:4px 10px;text-align:right;vertical-align:top}
th{background:#f0f2f5}td.t,th.t{text-align:left}
td.text{text-align:left;max-width:520px;word-wrap:break-word}
.note{color:#5b6472;font-size:.88em}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
article{border-left:3px solid #dde1e7;padding:2px 12px;margin:4px 0 14px}article .head{font-weight:600}
article .text{line-height:1.9}.w{border-radius:3px;padding:1px 2px}
.legend span{padding:1px 6px;border-radius:3px;margin-right:8px}
.warn{background:#fdecea;border:1px solid #d1495b;border-radius:8px;padding:8px 14px;margin:14px 0 0;color:#7a1c27}
"""


def _img(images: dict, name: str, alt: str) -> str:
    if name not in images:
        return ""
    data = base64.b64encode(images[name]).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def render_html(
    metrics: dict,
    images: dict,
    errors: list[dict],
    classes: list[str],
    title: str,
    info: dict,
    has_data: bool,
    explained: list | str | None = None,
) -> str:
    """One self-contained page: inline CSS, charts as data URIs, no scripts, no external links."""
    e = html.escape
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
        f"<body><main><h1>{e(title)}</h1>"
    ]
    subtitle = [
        f"{e(str(k))}: {e(f'{v:.4g}' if isinstance(v, float) else str(v))}"
        for k, v in info.items()
        if v not in (None, "", {})
    ]
    parts.append(f"<p class='sub'>{' &middot; '.join(subtitle + [f'written {created}'])}</p>")

    if has_data:
        cards = [
            ("accuracy", metrics.get("accuracy")),
            ("macro F1", metrics.get("f1_macro")),
            ("ROC-AUC", metrics.get("roc_auc")),
            ("log loss", metrics.get("log_loss")),
            ("ECE", metrics.get("ece")),
            ("examples", metrics.get("n")),
        ]
        if "ece_uncalibrated" in metrics:
            cards.insert(5, ("ECE before calibration", metrics["ece_uncalibrated"]))
        parts.append(
            "<div class='cards'>"
            + "".join(
                f"<div class='card'><div class='v'>{_fmt(v)}</div><div class='k'>{e(k)}</div></div>"
                for k, v in cards
                if v is not None
            )
            + "</div>"
        )
        parts.append(_baselines_html(metrics))
    else:
        parts.append("<p class='note'>No labeled validation data: only the training curves are shown.</p>")

    if LOSS_PNG in images:
        parts.append(
            "<section><h2>Training</h2>"
            + _img(images, LOSS_PNG, "training and validation loss")
            + "<p class='note'>From metrics.jsonl: the training loss of every optimizer step and the "
            "validation scores of every evaluation.</p></section>"
        )
    if not has_data:
        parts.append("</main></body></html>")
        return "".join(parts)

    per_class = metrics.get("per_class", {})
    rows = "".join(
        f"<tr><td class='t'>{e(name)}</td><td>{s['precision']:.4f}</td><td>{s['recall']:.4f}</td>"
        f"<td>{s['f1']:.4f}</td><td>{s['support']}</td></tr>"
        for name, s in per_class.items()
    )
    rows += (
        f"<tr><th class='t'>macro</th><th>{_fmt(metrics.get('precision_macro'))}</th>"
        f"<th>{_fmt(metrics.get('recall_macro'))}</th><th>{_fmt(metrics.get('f1_macro'))}</th>"
        f"<th>{metrics.get('n', '')}</th></tr>"
    )
    parts.append(
        "<section><h2>Per class</h2><div class='row'><div><table><tr><th class='t'>class</th>"
        "<th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
        + rows
        + "</table>"
        + _imbalance_html(per_class, info)
        + (
            f"<p class='note'>Predicted as neutral (neutral band): "
            f"{sum(1 for r in errors if r['predicted'] == 'neutral')} examples, counted as errors.</p>"
            if "neutral" in metrics.get("labels", []) and "neutral" not in classes
            else ""
        )
        + "</div><div>"
        + _img(images, CONFUSION_PNG, "confusion matrix")
        + "</div></div></section>"
    )

    temperature = info.get("temperature")
    calibration = (
        f"<p>Expected calibration error (15 bins): <b>{_fmt(metrics.get('ece_uncalibrated'))}</b> "
        f"before temperature scaling, <b>{_fmt(metrics.get('ece'))}</b> after"
        + (f" (temperature {temperature:.3f})" if isinstance(temperature, float) else "")
        + ".</p>"
        if "ece_uncalibrated" in metrics
        else f"<p>Expected calibration error (15 bins): <b>{_fmt(metrics.get('ece'))}</b>.</p>"
    )
    parts.append(
        "<section><h2>Calibration</h2>"
        + calibration
        + _img(images, RELIABILITY_PNG, "reliability diagram")
        + "<p class='note'>Each point is a confidence bin: a calibrated model's accuracy equals its "
        "confidence (the dotted diagonal).</p></section>"
    )

    if metrics.get("by_length"):
        rows = "".join(
            f"<tr><td class='t'>{b['min_tokens']}-{b['max_tokens']}</td><td>{b['n']}</td>"
            f"<td>{b['accuracy']:.4f}</td></tr>"
            for b in metrics["by_length"]
        )
        parts.append(
            "<section><h2>Accuracy by review length</h2><div class='row'><div>"
            + _img(images, LENGTH_PNG, "accuracy by review length")
            + "</div><div><table><tr>"
            "<th class='t'>tokens</th><th>examples</th><th>accuracy</th></tr>" + rows + "</table>"
            "<p class='note'>Length in tokens before truncation; buckets hold about equal counts.</p>"
            "</div></div></section>"
        )

    head = "".join(f"<th>p({e(c)})</th>" for c in classes)
    rows = "".join(
        f"<tr><td>{r['index']}</td><td class='text'>{e(_short(r['text']))}</td><td class='t'>"
        f"{e(r['label'])}</td><td class='t'>{e(r['predicted'])}</td>"
        + "".join(f"<td>{r[f'p_{c}']:.3f}</td>" for c in classes)
        + "</tr>"
        for r in errors[:ERRORS_SHOWN]
    )
    parts.append(
        f"<section><h2>Errors</h2><p>{len(errors)} of {metrics.get('n', 0)} examples misclassified"
        + (f"; the {min(len(errors), ERRORS_SHOWN)} most confident mistakes:" if errors else ".")
        + "</p>"
        + (
            f"<table><tr><th>row</th><th class='t'>text</th><th class='t'>true</th>"
            f"<th class='t'>predicted</th>{head}</tr>{rows}</table>"
            if errors
            else ""
        )
        + f"<p class='note'>All of them, with every class's probability: {ERRORS_FILE} next to this file."
        "</p></section>"
    )
    if explained is not None:
        parts.append(_mistakes_html(explained, errors))
    parts.append("</main></body></html>")
    return "".join(parts)


def _baselines_html(metrics: dict) -> str:
    """Weak-model warnings, then the model's accuracy and macro F1 beside the baselines' (see baselines.py)."""
    if not metrics.get("baselines"):
        return ""
    e = html.escape
    warnings = "".join(f"<p class='warn'><b>Warning:</b> {e(w)}</p>" for w in metrics.get("warnings", []))
    rows = [("this model", metrics)] + baseline_rows(metrics["baselines"])
    cells = "".join(
        f"<tr><td class='t'>{e(name)}</td><td>{_fmt(r['accuracy'])}</td><td>{_fmt(r['f1_macro'])}</td></tr>"
        for name, r in rows
    )
    majority = metrics["baselines"]["majority"]
    return (
        warnings
        + "<section><h2>Baselines</h2><table><tr><th class='t'></th><th>accuracy</th><th>macro F1</th></tr>"
        + cells
        + "</table><p class='note'>On the same data: always answering the majority class (from "
        + e(majority["from"])
        + "), and guessing each class with equal chance (expected macro F1: the mean over classes of "
        "2p(1/k)/(p+1/k), p a class's share). A model should beat both.</p></section>"
    )


def _imbalance_html(per_class: dict, info: dict) -> str:
    """With imbalanced classes, accuracy hides a neglected minority: point at per-class recall and macro F1."""
    support = [s["support"] for s in per_class.values() if s["support"]]
    if len(support) < 2 or min(support) >= 0.5 * max(support):
        return ""
    weighted = info.get("class weights")
    advice = (
        f"trained with class weights ({html.escape(str(weighted))})"
        if weighted
        else "training with --class-weights auto (and --metric f1_macro) usually raises the minority's recall"
    )
    return (
        "<p class='note'>The classes are imbalanced (the smallest has under half the examples of the largest): "
        f"per-class recall and macro F1 say more than accuracy; {advice}.</p>"
    )


def _mistakes_html(explained: list | str, errors: list[dict]) -> str:
    """The most confident mistakes with their words shaded, or why they are not."""
    from bertsent.evaluation.explain import explanation_html, legend_html

    head = "<section><h2>Why the most confident mistakes</h2>"
    if isinstance(explained, str):
        return head + f"<p class='note'>No word attributions: {html.escape(explained)}</p></section>"
    items = "".join(
        f"<p class='note'>row {r['index']}, true label <b>{html.escape(str(r['label']))}</b>:</p>" + explanation_html(x)
        for r, x in zip(errors, explained)
    )
    return (
        head
        + legend_html("the predicted label")
        + items
        + "<p class='note'>Layer integrated gradients on the embedding layer: each word's push towards the "
        "label the model chose, in log-odds (hover a word for its score).</p></section>"
    )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
