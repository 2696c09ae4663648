"""Label audit: which rows of a labeled data set are most likely mislabeled.

Confident learning (cleanlab): the data is cut into k stratified folds; for each fold a model is trained
on the other folds and scores the held-out one, so every row gets probabilities from a model that never
saw it. cleanlab's `find_label_issues` flags the rows whose given label disagrees with those
out-of-fold probabilities, ranked by self-confidence (the probability of the given label, lowest first).
Writes label_issues.csv, label_issues.html and, with `drop`, a copy of the data without the flagged rows.

Each finished fold's probabilities are recorded in OUT/audit_folds.json: the same audit run again after an
interruption continues from there, and the file goes once the audit is written. Too few rows of a class for
its folds are refused before any training; fold models no better than always answering the majority class,
and cleanlab's own warnings, are said in the output and on the page.
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertsent.checks import whole
from bertsent.data.sources import DataOptions, TextDataset, ordered_label_names
from bertsent.data.tables import read_table, table_format
from bertsent.errors import BertsentError
from bertsent.evaluation.baselines import majority_baseline
from bertsent.files import check_writable, write_atomic, write_json_atomic
from bertsent.modeling import hub
from bertsent.prediction.predictor import SentimentModel
from bertsent.progress import progress_bar
from bertsent.workflows.run import DEFAULT_DATA, RUNS_DIR, train, train_config, training_data

ISSUES_CSV = "label_issues.csv"
ISSUES_HTML = "label_issues.html"
FOLDS_FILE = "audit_folds.json"  # the finished folds of an audit under way
# Rows of each class a fold's model must learn from: below this its out-of-fold scores are near 0.5 for every
# row and cleanlab flags clean rows (10 clean rows, 5 folds: 6 flagged).
MIN_CLASS_TRAIN_ROWS = 8
ISSUE_COLUMNS = ("row", "text", "given_label", "suggested_label", "score")
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
    warnings: list[str] = field(default_factory=list)  # why the flags may mean little, one line each

    def __len__(self) -> int:
        return len(self.issues)

    def ranking(self) -> np.ndarray:
        """Every row number (from 0), most likely mislabeled first: the flagged rows in their order, then
        the rest by label quality."""
        flagged = self.issues["row"].to_numpy() - 1
        rest = np.setdiff1d(np.argsort(self.scores, kind="stable"), flagged, assume_unique=True)
        rest = rest[np.argsort(self.scores[rest], kind="stable")]
        return np.concatenate([flagged, rest]).astype(int)


class AuditInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM during a fold's training) in `audit`: which folds are kept in `out` for the same
    audit to continue from."""

    def __init__(self, out: Path | None, fold: int, folds: int, done: list[int]):
        self.out, self.fold, self.folds, self.done = out, fold, folds, done
        kept = f"{self.kept()} in {out}" if done else "no fold was finished"
        super().__init__(f"interrupted in fold {fold} of {folds}; {kept}: run the same audit (out={str(out)!r}) again")

    def kept(self) -> str:
        listed = ", ".join(map(str, self.done))
        return f"folds {listed} are kept" if len(self.done) > 1 else f"fold {listed} is kept"


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
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    **settings: Any,
) -> AuditResult:
    """Train `folds` models, each on the other folds, score every row out of fold, and rank the rows most
    likely mislabeled with cleanlab. `settings` are training settings (model, epochs, lr, seed, ...); the seed
    also draws the folds; `label_map` relabels as in `train`. Writes label_issues.csv, label_issues.html and,
    with `drop`, the data without the flagged rows into `out` (default runs/audit-<data>-<time>).
    `allow_pickle`, `trust_remote_code`: as `train` takes them."""
    _require_cleanlab()
    # train's own options, not TrainConfig's; passed on (and keyed in the fold record) only when set
    loading = {k: v for k, v in (("allow_pickle", allow_pickle), ("trust_remote_code", trust_remote_code)) if v}
    config = train_config(settings)
    # a bad --model (or one with pickle weights only) fails now, not after the first fold's data
    hub.check_safe_weights(hub.resolve_model(config.model), allow_pickle)
    reading = DataOptions(text_column, label_column, label_map, encoding, drop_invalid)
    # Read (and relabel) as `train` does; the folds, not a validation split, hold rows out here.
    dataset, _ = training_data(data, None, reading, replace(config, validation_fraction=0.0), log)
    check_folds(folds, dataset.labels)
    out = _prepare_out(out, dataset, overwrite)
    classes = ordered_label_names(dataset.labels)
    settings |= loading
    record = FoldRecord(out, _fold_key(dataset, classes, folds, config.seed, settings), overwrite)
    clock = time.perf_counter()
    pred_probs = out_of_fold_probs(dataset, classes, folds, config.seed, settings, progress, log, record)
    result = rank_issues(dataset, classes, pred_probs, folds)
    result.seconds = time.perf_counter() - clock
    for line in result.warnings:
        log(f"Warning: {line}")
    source = data if isinstance(data, (str, os.PathLike)) else None
    write_outputs(result, dataset, out, drop, source, encoding)
    record.remove()
    return result


def _require_cleanlab() -> None:
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        raise BertsentError("audit needs cleanlab: pip install 'bertsent[audit]'.") from None


def check_folds(folds, labels: list[str]) -> None:
    """Every fold must hold at least one row of every class: 2 <= folds <= the smallest class's count."""
    whole("folds", folds, 2, rule="give a whole number of at least 2 (5 is usual)")
    name, smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
    if folds > smallest:
        raise BertsentError(
            f"--folds {folds}: class '{name}' has only {smallest} row(s), and every fold needs one of each class. "
            f"Use --folds {smallest} or fewer, or add rows of '{name}'."
        )
    learned = smallest - math.ceil(smallest / folds)  # the fewest rows of it a fold's model trains on
    if learned < MIN_CLASS_TRAIN_ROWS:
        needed = next(
            n
            for n in range(smallest, 10 * MIN_CLASS_TRAIN_ROWS * folds)
            if n - math.ceil(n / folds) >= MIN_CLASS_TRAIN_ROWS
        )
        raise BertsentError(
            f"class '{name}' has only {smallest} row(s): with --folds {folds} a fold's model learns it from "
            f"{learned}, too few for its scores to tell a wrong label from a right one (at least "
            f"{MIN_CLASS_TRAIN_ROWS}). Add rows of '{name}' (at least {needed} with --folds {folds})."
        )


def _prepare_out(out, dataset: TextDataset, overwrite: bool) -> Path:
    """The output folder, checked before any training: not a finished audit (without overwrite), writable."""
    if out is None:
        short = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(dataset.name.split(":")[0]).name.split(".")[0]).strip("-")
        out = Path(RUNS_DIR) / f"audit-{short or 'data'}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    out = Path(out).expanduser()
    if (out / ISSUES_CSV).exists() and not overwrite and not (out / FOLDS_FILE).exists():
        raise BertsentError(f"{out}: already holds an audit. Pass --overwrite to replace it, or another --out.")
    problem = check_writable(out / ISSUES_CSV)
    if problem:
        raise BertsentError(f"--out {out}: cannot write there ({problem}). Choose a folder you can write to.")
    return out


class FoldRecord:
    """OUT/audit_folds.json: each finished fold's held-out rows and probabilities, under a key of what they
    depend on (data, classes, folds, seed, settings). A record of this same audit is continued (with
    `overwrite` too: the same command goes on); another audit's, or a damaged one, is refused, or with
    `overwrite` replaced."""

    def __init__(self, out: Path | None, key: dict, overwrite: bool = False):
        self.path = out / FOLDS_FILE if out is not None else None
        self.key = key
        self.folds: dict[int, dict] = {}
        if self.path is None or not self.path.exists():
            return
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            same = saved["key"] == key
            folds = {int(k): v for k, v in saved["folds"].items()} if same else {}
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            if overwrite:
                return
            raise BertsentError(
                f"{self.path}: damaged, not an audit's record of finished folds. Pass --overwrite to start again."
            ) from None
        if not same and overwrite:
            return
        if not same:
            raise BertsentError(
                f"{out}: holds the finished folds of an interrupted audit of other data or settings. Run that "
                f"audit again to continue it, pass --overwrite to start this one, or give another --out."
            )
        self.folds = folds

    def get(self, k: int, held: np.ndarray) -> np.ndarray | None:
        """Fold k's probabilities when it was finished on these same rows, else None."""
        fold = self.folds.get(k)
        if fold is None or fold.get("rows") != held.tolist():
            return None
        probs = np.array(fold.get("probs"), dtype=np.float64)
        return probs if probs.shape == (len(held), len(self.key["classes"])) else None

    def add(self, k: int, held: np.ndarray, probs: np.ndarray) -> None:
        self.folds[k] = {"rows": held.tolist(), "probs": probs.tolist()}
        if self.path is not None:
            folds = {str(i): fold for i, fold in sorted(self.folds.items())}
            write_json_atomic(self.path, {"key": self.key, "folds": folds})

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _fold_key(dataset: TextDataset, classes: list[str], folds: int, seed: int, settings: dict) -> dict:
    """What out-of-fold probabilities depend on, in JSON's types (as the record reads back)."""
    given = json.loads(json.dumps(settings, default=str, sort_keys=True))
    return {"data": dataset.fingerprint(), "rows": len(dataset), "classes": classes, "folds": folds, "seed": seed,
            "settings": given}  # fmt: skip


def out_of_fold_probs(
    dataset: TextDataset,
    classes: list[str],
    folds: int,
    seed: int,
    settings: dict,
    progress: bool,
    log,
    record: FoldRecord | None = None,
) -> np.ndarray:
    """Probabilities for every row from a model trained on the folds that do not hold it (columns: classes).
    Folds in `record` are taken from it; each fold finished here is added to it."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.array(dataset.labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(np.zeros(len(labels)), labels))
    record = record or FoldRecord(None, {"classes": classes})
    pred_probs = np.zeros((len(dataset), len(classes)), dtype=np.float64)
    done = []
    for k, (_, held_idx) in enumerate(splits, start=1):
        kept = record.get(k, held_idx)
        if kept is not None:
            pred_probs[held_idx] = kept
            done.append(k)
    if done:
        where = f" in {record.path.parent}" if record.path is not None else ""
        log(f"Continuing the audit{where}: fold(s) {', '.join(map(str, done))} of {folds} done")
    with (
        tempfile.TemporaryDirectory(prefix="bertsent-audit-") as work,
        progress_bar(folds, "Folds", enabled=progress, unit="folds") as advance,
    ):
        if advance and done:
            advance(len(done))
        if advance:  # the bar says which fold is under way; a line printed into it would break it
            log = lambda *_: None  # noqa: E731
        for k, (train_idx, held_idx) in enumerate(splits, start=1):
            if k in done:
                continue
            try:
                probs = _fold_probs(
                    dataset, classes, k, folds, train_idx, held_idx, Path(work), settings, progress, log
                )
            except KeyboardInterrupt:
                raise AuditInterrupted(record.path.parent if record.path else None, k, folds, done) from None
            pred_probs[held_idx] = probs
            record.add(k, held_idx, probs)
            done.append(k)
            if advance:
                advance(1)
    return pred_probs


def _fold_probs(dataset, classes, k, folds, train_idx, held_idx, work: Path, settings, progress, log) -> np.ndarray:
    """Fold k: a model trained on the other folds scores the held-out rows (columns: classes)."""
    log(f"-- fold {k} of {folds}: training on {len(train_idx)} rows, scoring {len(held_idx)}")
    folder = work / f"fold-{k}"
    quiet = lambda *_: None  # noqa: E731 - each fold's own training chatter would bury the audit's
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
    probs = model.predict_proba([dataset.texts[i] for i in held_idx])[:, [model.classes_.index(c) for c in classes]]
    del model
    shutil.rmtree(folder, ignore_errors=True)  # a model per fold adds up: keep one on disk at a time
    return probs


def rank_issues(dataset: TextDataset, classes: list[str], pred_probs: np.ndarray, folds: int) -> AuditResult:
    """cleanlab's flagged rows, ranked by self-confidence, with each row's label quality score."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    index = {c: i for i, c in enumerate(classes)}
    assert dataset.labels is not None  # read as training data: labeled
    given = np.array([index[label] for label in dataset.labels])
    # Rows sum to 1 up to float error; cleanlab checks the sums strictly.
    pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings(record=True) as said:  # cleanlab's own, e.g. too few rows of a class
        warnings.simplefilter("always")
        # one process: its warnings are caught here (worker processes would print them), and it is fast anyway
        ranked = find_label_issues(given, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
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
    result = AuditResult(issues, scores, pred_probs, classes, list(dataset.labels), folds, 0.0, source=dataset.name)
    result.warnings = weak_fold_models(given, pred_probs, classes) + _cleanlab_warnings(said, classes)
    return result


def weak_fold_models(given: np.ndarray, pred_probs: np.ndarray, classes: list[str]) -> list[str]:
    """A line when the fold models, out of fold, did no better than always answering the majority class:
    then their disagreement with a label says little about the label."""
    accuracy = float(np.mean(pred_probs.argmax(axis=1) == given))
    majority = majority_baseline([classes[i] for i in given], classes, None)
    if accuracy > majority["accuracy"]:
        return []
    return [
        f"the fold models' out-of-fold accuracy, {accuracy:.3f}, is no better than always answering "
        f"'{majority['class']}' ({majority['accuracy']:.3f}): the flagged rows mean little. Audit more rows, "
        f"or train the folds longer (--epochs) or with another --model."
    ]


def _cleanlab_warnings(caught, classes: list[str]) -> list[str]:
    lines = []
    for warning in caught:
        text = str(warning.message)
        number = re.search(r"label issues in class: (\d+), it has too few examples", text)
        if number and int(number.group(1)) < len(classes):
            text = f"class '{classes[int(number.group(1))]}' has too few rows to flag all its label issues"
        line = f"cleanlab: {text}"
        if line not in lines:
            lines.append(line)
    return lines


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
    assert fmt is not None  # given with the table
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
    cautions = "".join(f"<p class='warn'>Warning: {e(line)}</p>" for line in result.warnings)
    table = (
        "<table><thead><tr><th>#</th><th>row</th><th>text</th><th>given</th><th>suggested</th><th>score</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>{more}"
        if len(result.issues)
        else "<p>No row was flagged: every given label agrees with the out-of-fold predictions.</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Label audit</title>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
        f"<body><main><h1>Label audit</h1><p class='sub'>{summary}</p>{cautions}"
        "<p class='note'>Rows most likely mislabeled first. Each row was scored by a model trained on the other "
        "folds; score is the label quality (the out-of-fold probability of the given label): near 0, the "
        "label is probably wrong. Row numbers count data rows from 1.</p>"
        f"{table}</main></body></html>"
    )


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}"
    "main{max-width:1100px;margin:auto;padding:1.5em}h1{margin-bottom:.2em}.sub,.note{color:#555}"
    ".warn{background:#fff4e0;border-left:4px solid #e08a00;padding:.5em .8em}"
    "table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #ddd;"
    "padding:.35em .5em;text-align:left;vertical-align:top}th{background:#eef1f5}td.t{max-width:40em}"
)
