"""Which columns of a table hold the text and the label, and their values as texts and labels.

`pick_columns` names the text and label columns (given, else by well-known names, else by what the columns hold);
`pick_text_column` is the same for texts alone (prediction). `texts_and_labels` turns the picked columns' values
into strings, refusing or dropping the rows whose text or label is missing. Every reader goes through these, so a
table's columns are picked the same way by `read_data`, `open_table` and `bertsent data`.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bertsent.errors import DataError

TEXT_COLUMN_NAMES = (
    "text",
    "review",
    "sentence",
    "content",
    "document",
    "comment",
    "body",
    "tweet",
    "snippet",
    "utterance",
    "message",
)
LABEL_COLUMN_NAMES = ("label", "labels", "sentiment", "class", "target", "polarity", "category", "y")


def pick_column(
    frame: pd.DataFrame,
    path: Path,
    given: str | None,
    known: tuple[str, ...],
    role: str,
    flag: str,
    exclude: str | None = None,
) -> str | None:
    """`given` if the frame has it; else the one column with a well-known name; None when there is none."""
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if given is not None:
        if given not in columns:
            raise DataError(
                f"{path}: no column '{given}' (columns: {', '.join(columns)}). Pass the right name with {flag}."
            )
        return given
    candidates = [c for c in columns if c != exclude and c.strip().lower() in known]
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise DataError(
            f"{path}: several columns could hold the {role} ({', '.join(candidates)}). Name one with {flag}."
        )
    return None


def pick_columns(
    frame: pd.DataFrame,
    path: Path,
    text_column: str | None = None,
    label_column: str | None = None,
    *,
    require_labels: bool,
    keep_labels: bool = True,
) -> tuple[str, str | None]:
    """(the text column, the label column or None). Without `keep_labels` only the text column matters: a label
    column that is missing or ambiguous is not an error."""
    if frame.empty:
        raise DataError(f"{path}: the file has no rows. Give a file with a header and rows.")
    text_col = pick_column(frame, path, text_column, TEXT_COLUMN_NAMES, "text", "--text-column")
    try:
        label_col = pick_column(
            frame, path, label_column, LABEL_COLUMN_NAMES, "label", "--label-column", exclude=text_col
        )
    except DataError:
        if keep_labels:
            raise
        label_col = None
    others = [c for c in frame.columns if c not in (text_col, label_col)]
    if text_col is None:
        # One column left that holds strings: that is the text.
        stringy = [c for c in others if frame[c].map(lambda v: isinstance(v, str)).mean() > 0.9]
        if len(stringy) == 1 and (label_col is not None or len(frame.columns) <= 2 or not require_labels):
            text_col = stringy[0]
        else:
            raise DataError(
                f"{path}: cannot tell which column holds the text (columns: "
                f"{', '.join(frame.columns)}). Name it with --text-column."
            )
        others.remove(text_col)
    if label_col is None and require_labels:
        if len(frame.columns) == 2 and len(others) == 1:
            label_col = others[0]
        else:
            raise DataError(
                f"{path}: cannot tell which column holds the label (columns: "
                f"{', '.join(frame.columns)}). Name it with --label-column."
            )
    return text_col, label_col if keep_labels else None


def pick_text_column(frame: pd.DataFrame, path: Path, text_column: str | None = None) -> str:
    """The column that holds the texts (`text_column`, else as `pick_columns` picks it), labels aside."""
    return pick_columns(frame, path, text_column, require_labels=False, keep_labels=False)[0]


def texts_and_labels(
    frame: pd.DataFrame, path: Path, text_col: str, label_col: str | None, *, drop_invalid: bool
) -> tuple[list[str], list[str] | None, int]:
    """(texts, labels or None, rows dropped): rows with an empty or missing text or label are refused with
    their numbers, or dropped with `drop_invalid`."""
    texts = frame[text_col].map(as_text)
    bad = texts.map(lambda t: not isinstance(t, str) or not t.strip())
    labels = None
    if label_col is not None:
        labels = frame[label_col].map(as_label)
        bad = bad | labels.isna()
    dropped = 0
    if bad.any():
        rows = [int(i) + 1 for i in np.flatnonzero(bad.to_numpy())]
        if not drop_invalid:
            shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
            what = "text or label" if label_col else "text"
            raise DataError(
                f"{path}: {len(rows)} row(s) have an empty or missing {what} (rows {shown}, "
                f"counting data rows from 1). Fix them, or pass --drop-invalid to skip them."
            )
        keep = ~bad.to_numpy()
        texts, labels = texts[keep], (labels[keep] if labels is not None else None)
        dropped = len(rows)
        if texts.empty:
            raise DataError(f"{path}: every row has an empty text or label; nothing is left to use.")
    return list(texts), (list(labels) if labels is not None else None), dropped


# ----------------------------------------------------------------------------- values


def as_text(value) -> str | None:
    """A cell as a text; None for a missing one."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return encodable(str(value))


def text_or_empty(value) -> str:
    """A cell as a text to score: a missing one is an empty text, so that every input row gets its output row."""
    text = as_text(value)
    return "" if text is None else text


def encodable(text: str) -> str:
    """The text with lone surrogates (a JSON "\\ud800" escape) replaced: tokenizers and UTF-8 writers refuse them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # pairs joined, lone ones U+FFFD
    return text


def as_label(value) -> str | None:
    """Labels become strings; 1, 1.0 and "1" are the same label."""
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(value)
    text = encodable(str(value)).strip()
    return text or None


def plain(value):
    """A value as JSON and CSV take it: NaN and NaT as None, numpy and pandas values as Python ones."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return plain(value.item())
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)
