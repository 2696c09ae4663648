"""Label audit: which rows of a labeled data set are most likely mislabeled.

Confident learning (cleanlab): the data is cut into k stratified folds; for each fold a model is trained
on the other folds and scores the held-out one, so every row gets probabilities from a model that never
saw it. cleanlab's `find_label_issues` flags the rows whose given label disagrees with those
out-of-fold probabilities, ranked by self-confidence (the probability of the given label, lowest first).
Writes label_issues.csv, label_issues.html and, with `drop`, a copy of the data without the flagged rows.
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .api import DEFAULT_DATA, RUNS_DIR, train, train_config, training_data
from .data import TextDataset, ordered_label_names, read_table, table_format
from .errors import BertsentError
from .files import check_writable, write_atomic
from .prediction import SentimentModel
from .progress import progress_bar

ISSUES_CSV = "label_issues.csv"
ISSUES_HTML = "label_issues.html"
ISSUE_COLUMNS = ("row", "text", "given_label", "suggested_label", "score")
LOADING_OPTIONS = ("allow_pickle", "trust_remote_code")
HTML_SHOWN = 200  # rows of label_issues.csv shown on the page
# Formats the cleaned copy keeps (compressed inputs are written uncompressed); others become CSV.
SAME_FORMAT = {"csv": ".csv", "tsv": ".tsv", "jsonl": ".jsonl", "json": ".json", "parquet": ".parquet"}


@dataclass
class AuditResult:
    """What `audit` found. `issues` holds the flagged rows, most likely mislabeled first (row: data rows
    counted from 1, as read); `scores` is every row's label quality (0: surely wrong, 1: surely right)."""

    issues: pd.DataFrame
    scores: np.ndarray
    pred_probs: np.ndarray  # out-of-fold probabilities, one column per class
    classes: list[str]
    labels: list[str]
    folds: int
    seconds: float
    out: Path | None = None
    csv_path: Path | None = None
    html_path: Path | None = None
    cleaned_path: Path | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.issues)

    def ranking(self) -> np.ndarray:
        """Every row number (from 0), most likely mislabeled first: the flagged rows in their order, then
        the rest by label quality."""
        flagged = self.issues["row"].to_numpy() - 1
        rest = np.setdiff1d(np.argsort(self.scores, kind="stable"), flagged, assume_unique=True)
        rest = rest[np.argsort(self.scores[rest], kind="stable")]
        return np.concatenate([flagged, rest]).astype(int)


def audit(
    data: str | TextDataset = DEFAULT_DATA,
    *,
    folds: int = 5,
    out: str | os.PathLike | None = None,
    drop: bool = False,
    text_column: str | None = None,
    label_column: str | None = None,
    label_map: str | dict | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log=print,
    **settings,
) -> AuditResult:
    """Train `folds` models, each on the other folds, score every row out of fold, and rank the rows most
    likely mislabeled with cleanlab. `settings` are training settings (model, epochs, lr, seed, ...); the seed
    also draws the folds; `label_map` relabels as in `train`. Writes label_issues.csv, label_issues.html and,
    with `drop`, the data without the flagged rows into `out` (default runs/audit-<data>-<time>)."""
    _require_cleanlab()
    # train's own options, not TrainConfig's; passed on only when set (older `train`s lack them)
    loading = {k: v for k in LOADING_OPTIONS if (v := settings.pop(k, None))}
    config = train_config(settings)
    read = dict(text_column=text_column, label_column=label_column, encoding=encoding, drop_invalid=drop_invalid)
    if label_map is not None:
        read["label_map"] = label_map
    # Read (and relabel) as `train` does; the folds, not a validation split, hold rows out here.
    dataset, _ = training_data(data, None, read, replace(config, validation_fraction=0.0), log)
    check_folds(folds, dataset.labels)
    out = _prepare_out(out, dataset, overwrite)
    classes = ordered_label_names(dataset.labels)
    clock = time.perf_counter()
    pred_probs = out_of_fold_probs(dataset, classes, folds, config.seed, settings | loading, progress, log)
    result = rank_issues(dataset, classes, pred_probs, folds)
    result.seconds = time.perf_counter() - clock
    source = data if isinstance(data, (str, os.PathLike)) else None
    write_outputs(result, dataset, out, drop, source, encoding)
    return result


def _require_cleanlab() -> None:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise BertsentError("audit needs cleanlab: pip install 'bertsent[audit]'.") from None


def check_folds(folds, labels: list[str]) -> None:
    """Every fold must hold at least one row of every class: 2 <= folds <= the smallest class's count."""
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise BertsentError(f"--folds {folds}: give a whole number of at least 2 (5 is usual).")
    name, smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
    if folds > smallest:
        raise BertsentError(
            f"--folds {folds}: class '{name}' has only {smallest} row(s), and every fold needs one of each class. "
            f"Use --folds {smallest} or fewer, or add rows of '{name}'."
        )


def _prepare_out(out, dataset: TextDataset, overwrite: bool) -> Path:
    """The output folder, checked before any training: not a finished audit (without overwrite), writable."""
    if out is None:
        short = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.name.split(":")[0]).name.split(".")[0]).strip("-")
        out = Path(RUNS_DIR) / f"audit-{short or 'data'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out = Path(out).expanduser()
    if (out / ISSUES_CSV).exists() and not overwrite:
        raise BertsentError(f"{out}: already holds an audit. Pass --overwrite to replace it, or another --out.")
    problem = check_writable(out / ISSUES_CSV)
    if problem:
        raise BertsentError(f"--out {out}: cannot write there ({problem}). Choose a folder you can write to.")
    return out


def out_of_fold_probs(
    dataset: TextDataset, classes: list[str], folds: int, seed: int, settings: dict, progress: bool, log
) -> np.ndarray:
    """Probabilities for every row from a model trained on the folds that do not hold it (columns: classes)."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.array(dataset.labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred_probs = np.zeros((len(dataset), len(classes)), dtype=np.float64)
    quiet = lambda *_: None  # noqa: E731 - each fold's own training chatter would bury the audit's
    with (
        tempfile.TemporaryDirectory(prefix="bertsent-audit-") as work,
        progress_bar(folds, "Folds", enabled=progress, unit="folds") as advance,
    ):
        for k, (train_idx, held_idx) in enumerate(splitter.split(np.zeros(len(labels)), labels), start=1):
            log(f"-- fold {k} of {folds}: training on {len(train_idx)} rows, scoring {len(held_idx)}")
            folder = Path(work) / f"fold-{k}"
            train(
                dataset.subset(train_idx, f"{dataset.name} (fold {k} training part)"),
                out=folder,
                progress=progress,
                log=quiet,
                report=False,
                **settings,
            )
            model = SentimentModel.load(folder, backend="torch")
            missing = [c for c in classes if c not in model.classes_]
            if missing:
                raise BertsentError(
                    f"fold {k}: no '{missing[0]}' row was left to train on (--max-train-samples too small?). "
                    "Raise --max-train-samples or drop it."
                )
            probs = model.predict_proba([dataset.texts[i] for i in held_idx])
            pred_probs[held_idx] = probs[:, [model.classes_.index(c) for c in classes]]
            del model
            shutil.rmtree(folder, ignore_errors=True)  # a model per fold adds up: keep one on disk at a time
            if advance:
                advance(1)
    return pred_probs


def rank_issues(dataset: TextDataset, classes: list[str], pred_probs: np.ndarray, folds: int) -> AuditResult:
    """cleanlab's flagged rows, ranked by self-confidence, with each row's label quality score."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {c: i for i, c in enumerate(classes)}
    given = np.array([index[label] for label in dataset.labels])
    # Rows sum to 1 up to float error; cleanlab checks the sums strictly.
    pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)
    ranked = find_label_issues(given, pred_probs, return_indices_ranked_by="self_confidence")
    scores = get_label_quality_scores(given, pred_probs)
    issues = pd.DataFrame(
        {
            "row": ranked + 1,
            "text": [dataset.texts[i] for i in ranked],
            "given_label": [dataset.labels[i] for i in ranked],
            "suggested_label": [classes[j] for j in pred_probs[ranked].argmax(axis=1)],
            "score": np.round(scores[ranked], 6),
        },
        columns=list(ISSUE_COLUMNS),
    )
    return AuditResult(issues, scores, pred_probs, classes, list(dataset.labels), folds, 0.0, source=dataset.name)


def write_outputs(
    result: AuditResult, dataset: TextDataset, out: Path, drop: bool, source=None, encoding: str = "utf-8"
) -> None:
    result.out = out
    result.csv_path = out / ISSUES_CSV
    write_atomic(result.csv_path, result.issues.to_csv(index=False))
    result.html_path = out / ISSUES_HTML
    write_atomic(result.html_path, render_html(result))
    if drop:
        result.cleaned_path = write_cleaned(dataset, result.issues["row"].to_numpy() - 1, out, source, encoding)


def write_cleaned(dataset: TextDataset, flagged: np.ndarray, out: Path, source=None, encoding: str = "utf-8") -> Path:
    """The data without the flagged rows: the input file's own columns and format when it is a table read
    row for row (no rows skipped as invalid), else CSV of text and label."""
    keep = np.setdiff1d(np.arange(len(dataset)), flagged)
    frame, fmt, stem = _source_table(dataset, source, encoding)
    if frame is None:
        frame = pd.DataFrame({"text": dataset.texts, "label": dataset.labels})
        fmt = "csv"
    path = out / f"{stem}.cleaned{SAME_FORMAT[fmt]}"
    write_atomic(path, _table_bytes(frame.iloc[keep].reset_index(drop=True), fmt))
    return path


def _source_table(dataset: TextDataset, source, encoding: str) -> tuple[pd.DataFrame | None, str | None, str]:
    """The input file's table as read, its format and name stem; (None, None, stem) when not a plain table."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(str(source or dataset.name).split(":")[0]).name).strip("-")
    stem = stem.split(".")[0] or "data"
    path = Path(str(source)).expanduser() if source is not None else None
    if path is None or not path.is_file() or dataset.dropped:
        return None, None, stem
    try:
        fmt, _ = table_format(path)
    except BertsentError:
        return None, None, stem
    if fmt not in SAME_FORMAT:
        return None, None, stem
    frame = read_table(path, encoding)
    return (frame, fmt, stem) if len(frame) == len(dataset) else (None, None, stem)


def _table_bytes(frame: pd.DataFrame, fmt: str) -> bytes | str:
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    if fmt in ("csv", "tsv"):
        return frame.to_csv(index=False, sep="," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return frame.to_json(orient="records", lines=True, force_ascii=False)
    return frame.to_json(orient="records", force_ascii=False, indent=1)


def render_html(result: AuditResult, shown: int = HTML_SHOWN) -> str:
    """One self-contained page (inline CSS, no scripts, no external links) of the top issues."""
    e = html.escape
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    counts = Counter(result.labels)
    per_class = ", ".join(f"{e(c)}: {counts[c]}" for c in result.classes)
    summary = (
        f"{e(result.source)} &middot; {len(result.labels)} rows ({per_class})"
        f" &middot; {result.folds} folds &middot; {len(result.issues)} rows flagged "
        f"({len(result.issues) / max(1, len(result.labels)):.1%}) &middot; written {created}"
    )
    rows = "".join(
        f"<tr><td>{i}</td><td>{int(r.row)}</td><td class='t'>{e(str(r.text))}</td><td>{e(str(r.given_label))}</td>"
        f"<td><b>{e(str(r.suggested_label))}</b></td><td>{r.score:.4f}</td></tr>"
        for i, r in enumerate(result.issues.head(shown).itertuples(index=False), start=1)
    )
    more = (
        f"<p class='note'>The first {shown} of {len(result.issues)}; all are in {ISSUES_CSV}.</p>"
        if len(result.issues) > shown
        else ""
    )
    table = (
        "<table><thead><tr><th>#</th><th>row</th><th>text</th><th>given</th><th>suggested</th><th>score</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>{more}"
        if len(result.issues)
        else "<p>No row was flagged: every given label agrees with the out-of-fold predictions.</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Label audit</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
        f"<body><main><h1>Label audit</h1><p class='sub'>{summary}</p>"
        "<p class='note'>Rows most likely mislabeled first. Each row was scored by a model trained on the other "
        "folds; score is the label quality (the out-of-fold probability of the given label): near 0, the "
        "label is probably wrong. Row numbers count data rows from 1.</p>"
        f"{table}</main></body></html>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}"
    "main{max-width:1100px;margin:auto;padding:1.5em}h1{margin-bottom:.2em}.sub,.note{color:#555}"
    "table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #ddd;"
    "padding:.35em .5em;text-align:left;vertical-align:top}th{background:#eef1f5}td.t{max-width:40em}"
)
