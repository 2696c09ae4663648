"""Tables read and written a chunk at a time, so that a file of any size is scored in flat memory.

`open_table` looks at the start of a file (its columns; the text column picked as `read_data` picks it), then
`Table.chunks` reads it a few thousand rows at a time: CSV, TSV, JSON Lines, Parquet and plain lines, also
gzip/bz2/xz/zip-compressed. Other sources `read_data` knows (aclImdb folders and archives, built-in data sets,
a .json document) are read whole and served in chunks the same way.

An output OUT is written as `.OUT.partial`; after each chunk `.OUT.partial.json` records the input rows done
and the bytes of output that hold them, so after a crash `--resume` cuts the partial file back to there and
goes on; the finished file is renamed to OUT. A shard (`--shard i/n`) writes OUT.part-i-of-n: JSON Lines with
each row's index, between a header line (input, settings) and an end line (rows), merged in row order by
`merge_parts`.
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import csv
import datetime
import glob
import gzip
import heapq
import io
import json
import lzma
import os
import re
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from bertsent.checks import flag, whole
from bertsent.data.sources import (
    DECOMPRESS_ERRORS,
    _as_text,
    _dataset_from_frame,
    _is_archive,
    bom_encoding,
    check_readable_file,
    other_separators,
    parse_json_line,
    read_data,
    read_table,
    table_format,
    zip_member,
)
from bertsent.errors import DataError, first_line
from bertsent.files import partial_folder, remove_temporaries, write_json_atomic

CHUNK_ROWS = 2048  # rows per chunk: long enough to sort by length for little padding, small enough to stay flat
OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
# Names the prediction writes; a kept input column with one of them is written as input_<name>.
PREDICTION_NAMES = ("row", "text", "label", "probs")
PART_NAME = re.compile(r"\.part-(\d+)-of-(\d+)$")
PART_HEADER, PART_END = "bertsent_part", "bertsent_part_end"
# Settings named by their flag when --resume or merge refuses a difference (the model and classes by name).
FLAG_SETTINGS = ("backend", "truncation", "max_length", "stride", "neutral_band", "text_column", "keep_columns",
                 "encoding", "format", "shard")  # fmt: skip

__all__ = [
    "CHUNK_ROWS",
    "OUTPUT_FORMATS",
    "Chunk",
    "PartialOutput",
    "Progress",
    "RecordFormat",
    "Table",
    "find_parts",
    "merge_parts",
    "open_table",
    "output_format",
    "output_names",
    "parse_shard",
    "part_path",
    "plan_output",
]


# ----------------------------------------------------------------------------- reading


@dataclass
class Chunk:
    """Consecutive rows of a table (after `shard`, every n-th of them)."""

    rows: list[int]  # each row's index in the table, counting from 0
    texts: list[str]
    kept: dict[str, list]  # each kept column's values, as plain Python values
    end: int  # the index of the row after the last one read: where the next chunk starts
    position: float  # bytes of the file read so far, for progress

    def __len__(self) -> int:
        return len(self.rows)

    def shard(self, index: int, count: int) -> Chunk:
        """The rows whose index is `index` modulo `count`."""
        keep = [j for j, row in enumerate(self.rows) if row % count == index]
        return Chunk(
            [self.rows[j] for j in keep],
            [self.texts[j] for j in keep],
            {name: [values[j] for j in keep] for name, values in self.kept.items()},
            self.end,
            self.position,
        )


class Table:
    """A table file read in chunks, or (`frame`) a source read whole by `read_data` and served in chunks."""

    def __init__(self, path: Path, fmt: str, compression: str | None, encoding: str, frame=None, name=None):
        self.path, self.fmt, self.compression, self.encoding = path, fmt, compression, encoding
        self.read_as = encoding  # what the text is decoded as: a byte-order mark can name another (`find_encoding`)
        self.frame = frame
        self.name = name or str(path)
        self.size = path.stat().st_size if frame is None else 0
        self.sep = {"csv": ",", "tsv": "\t"}.get(fmt)
        self.columns: list[str] = []
        self.text_column = "text"
        self.keep_columns: list[str] = []
        self.rows_read = 0  # for error messages

    def identity(self) -> dict:
        """What tells this input from another: --resume and merge compare it."""
        if not self.path.is_file():  # an aclImdb folder, a built-in data set
            return {"source": self.name, "rows": len(self.frame)}
        stat = self.path.stat()
        return {"path": str(self.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

    def chunks(self, start: int = 0, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        """The rows from index `start` on, `chunk_rows` at a time (fewer in the first one when `start` is
        inside a chunk). Only the text column and the kept ones are converted."""
        wanted = [self.text_column, *self.keep_columns]
        with self._reading():
            for first, columns, position in self._columns(wanted, chunk_rows, start):
                end = first + len(columns[self.text_column])
                self.rows_read = end
                if end <= start:
                    continue
                cut = max(0, start - first)
                yield Chunk(
                    list(range(first + cut, end)),
                    [_text(v) for v in columns[self.text_column][cut:]],
                    {name: [_plain(v) for v in columns[name][cut:]] for name in self.keep_columns},
                    end,
                    position,
                )

    # -- the formats: each yields (index of its first row, {column: values}, bytes read) -------------------

    def _columns(self, wanted: list[str], chunk_rows: int, start: int):
        if self.frame is not None:
            for first in range(0, len(self.frame), chunk_rows):
                part = self.frame.iloc[first : first + chunk_rows]
                yield first, {c: part[c].tolist() for c in wanted}, 0
        elif self.fmt in ("csv", "tsv"):
            yield from self._csv_columns(wanted, chunk_rows)
        elif self.fmt == "parquet":
            yield from self._parquet_columns(wanted, chunk_rows, start)
        else:
            yield from self._line_columns(wanted, chunk_rows, start)

    def _csv_reader(self, stream, **options):
        text = io.TextIOWrapper(stream, encoding=self._decoding(), newline="")
        return pd.read_csv(
            text, sep=self.sep, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=True, **options
        )

    def _csv_columns(self, wanted, chunk_rows):
        with self._open() as (stream, raw), self._csv_reader(stream, chunksize=chunk_rows, usecols=wanted) as reader:
            first = 0
            for frame in reader:
                yield first, {c: frame[c].tolist() for c in wanted}, raw.tell()
                first += len(frame)

    def _parquet_columns(self, wanted, chunk_rows, start):
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as parquet:
            meta = parquet.metadata
            groups, first = [], 0
            for group in range(meta.num_row_groups):  # row groups wholly before `start` are not read at all
                rows = meta.row_group(group).num_rows
                if groups or first + rows > start:
                    groups.append(group)
                else:
                    first += rows
            if not groups:
                return
            for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=groups, columns=wanted):
                columns = {c: batch.column(c).to_pylist() for c in wanted}
                yield first, columns, self.size * (first + batch.num_rows) / max(meta.num_rows, 1)
                first += batch.num_rows

    def _line_columns(self, wanted, chunk_rows, start):
        """JSON Lines and plain lines; blank lines are not rows. Rows before `start` are counted, not parsed."""
        with self._open() as (stream, raw):
            records, first = [], 0
            for row, (number, line) in enumerate(self._lines(stream)):
                if row >= start:
                    first = first if records else row
                    records.append(self._record(line, number))
                if len(records) == chunk_rows:
                    yield first, self._record_columns(records, wanted), raw.tell()
                    records = []
            if records:
                yield first, self._record_columns(records, wanted), raw.tell()

    def _lines(self, stream) -> Iterator[tuple[int, str]]:
        """(line number, line) of the lines that are not blank: the rows. Any newline reads as \\n."""
        text = io.TextIOWrapper(stream, encoding=self._decoding(), newline=None)
        try:
            for number, line in enumerate(text, 1):
                if line.strip():
                    yield number, line
        finally:
            text.detach()  # closing the wrapper would close the file, still read for its position

    def _record(self, line: str, number: int):
        if self.fmt == "lines":
            return line.rstrip("\n")
        return parse_json_line(line, number, self.path)

    def _record_columns(self, records: list, wanted: list[str]) -> dict[str, list]:
        if self.fmt == "lines":
            return {"text": records}
        return {c: [r.get(c) for r in records] for c in wanted}

    # -- opening, probing, errors ---------------------------------------------------------------------------

    def _decoding(self) -> str:
        return "utf-8-sig" if codecs.lookup(self.read_as).name == "utf-8" else self.read_as  # drops a BOM

    def find_encoding(self) -> None:
        """Read the file as its byte-order mark says (UTF-16, UTF-32) when --encoding was left at UTF-8."""
        if self.frame is None and self.fmt != "parquet":
            with self._reading(), self._open() as (stream, _):
                self.read_as = bom_encoding(stream.read(4), self.encoding)

    @contextlib.contextmanager
    def _open(self):
        """(the decompressed bytes, the file on disk): the second's position is the progress."""
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(open(self.path, "rb"))
            stream = raw
            if self.compression == "zip":
                archive = stack.enter_context(zipfile.ZipFile(raw))
                stream = stack.enter_context(archive.open(zip_member(archive, self.path)))
            elif self.compression:
                opener = {"gzip": gzip.GzipFile, "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}.get(self.compression)
                if opener is None:
                    raise DataError(
                        f"{self.path}: {self.compression} compression is not supported; decompress it first."
                    )
                stream = stack.enter_context(opener(fileobj=raw) if opener is gzip.GzipFile else opener(raw))
            yield stream, raw

    def probe(self, chunk_rows: int) -> pd.DataFrame:
        """The first rows with every column, to name the columns and pick the text one."""
        if self.frame is not None:
            return self.frame.head(chunk_rows)
        with self._reading():
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                with pq.ParquetFile(self.path) as parquet:
                    batch = next(parquet.iter_batches(batch_size=chunk_rows), None)
                    return batch.to_pandas() if batch is not None else parquet.schema_arrow.empty_table().to_pandas()
            if self.fmt in ("csv", "tsv"):
                return self._probe_csv(chunk_rows)
            return self._probe_lines(chunk_rows)

    def _probe_csv(self, chunk_rows: int) -> pd.DataFrame:
        with self._open() as (stream, _):
            frame = self._csv_reader(stream, nrows=chunk_rows)
        first = self.sep
        for other in other_separators(frame, str(frame.columns[0]), first):
            self.sep = other
            with self._open() as (stream, _):
                retry = self._csv_reader(stream, nrows=chunk_rows)
            if retry.shape[1] > 1:
                return retry
        self.sep = first
        return frame

    def _probe_lines(self, chunk_rows: int) -> pd.DataFrame:
        """JSON Lines: every key of the first chunk's records is a column; plain lines: one column, text."""
        with self._open() as (stream, _):
            records = []
            for number, line in self._lines(stream):
                records.append(self._record(line, number))
                if len(records) == chunk_rows:
                    break
        return pd.DataFrame({"text": records} if self.fmt == "lines" else records)

    @contextlib.contextmanager
    def _reading(self):
        """The readers' own errors as one line that says what is wrong."""
        what = self.fmt.upper()
        try:
            yield
        except DataError:
            raise
        except UnicodeDecodeError:
            raise DataError(
                f"{self.path}: not valid {self.encoding} after data row {self.rows_read}. Save the file as UTF-8, "
                f"or pass its encoding, e.g. --encoding latin-1."
            ) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path}: the file is empty. Give a file with a header and rows.") from None
        except DECOMPRESS_ERRORS as exc:
            if not self.compression or isinstance(exc, PermissionError):
                raise DataError(f"{self.path}: cannot read it ({first_line(exc)}).") from None
            raise DataError(
                f"{self.path}: cannot decompress it ({first_line(exc)}). The file is damaged or not "
                f"{self.compression}-compressed."
            ) from None
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(
                f"{self.path}: cannot read it as {what} ({first_line(exc)}). Check the file's format and extension."
            ) from None


def open_table(
    source: str | os.PathLike,
    *,
    text_column: str | None = None,
    keep_columns: str | list[str] | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = CHUNK_ROWS,
) -> Table:
    """A table to read in chunks: its columns named, the text column picked (`text_column`, else as read_data
    picks it), `keep_columns` ("a,b", a list, or "all": every other column) checked, all before any work."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"--encoding {encoding}: unknown encoding. Use e.g. utf-8, latin-1, cp1252.") from None
    whole("chunk_rows", chunk_rows, 1, rule="must be a whole number of at least 1", error=DataError)
    path = Path(str(source)).expanduser()
    if path.is_file() and not _is_archive(path):
        check_readable_file(path)
        fmt, compression = table_format(path)
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty. Give a file with a header and rows.")
        if fmt == "parquet" and compression:
            raise DataError(f"{path}: a compressed Parquet file; decompress it first (Parquet compresses itself).")
        frame = read_table(path, encoding) if fmt == "json" else None  # a JSON document is parsed whole
        table = Table(path, fmt, compression, encoding, frame)
        table.find_encoding()
    else:  # aclImdb folders and archives, built-in data sets: read whole
        dataset = read_data(source, text_column=text_column, encoding=encoding, texts_only=True)
        table = Table(path, "texts", None, encoding, pd.DataFrame({"text": dataset.texts}), dataset.name)
        text_column = None
    first = table.probe(chunk_rows)
    picked = _dataset_from_frame(first, path, text_column, None, True, False, keep_labels=False)
    table.columns = [str(c) for c in first.columns]
    table.text_column = picked.meta["text_column"]
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


def _text(value) -> str:
    text = _as_text(value)
    return "" if text is None else text  # scored as an empty text: every input row gets its output row


def _plain(value):
    """A value as JSON and CSV take it: NaN and NaT as None, numpy and pandas values as Python ones."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


# ----------------------------------------------------------------------------- writing


def output_format(out: str | os.PathLike | None, fmt: str | None = None) -> str:
    """jsonl, csv or tsv: `fmt` when given, else from OUT's suffix (JSON Lines on standard output)."""
    if fmt is not None:
        if fmt not in OUTPUT_FORMATS:
            raise DataError(f"--format {fmt}: use one of {', '.join(OUTPUT_FORMATS)} for a file of predictions.")
        return fmt
    if out is None:
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(
            f"--out {out}: cannot tell the format from '{suffix}'. Name it .jsonl, .csv or .tsv, or pass --format."
        )
    return OUTPUT_SUFFIXES[suffix]


def output_names(keep_columns: list[str], classes: list[str]) -> list[str]:
    """The kept columns' names in the output: input_<name> where the prediction has a column of that name."""
    taken = set(PREDICTION_NAMES) | {f"p_{c}" for c in classes}
    return [f"input_{c}" if c in taken else c for c in keep_columns]


class RecordFormat:
    """Prediction records, {kept..., "text", "label", "probs": {class: p}}, as JSON Lines, CSV or TSV text:
    the records and columns of `bertsent predict --format jsonl|csv`, kept columns first."""

    def __init__(self, fmt: str, names: list[str], classes: list[str]):
        self.fmt, self.names, self.classes = fmt, list(names), list(classes)

    def header(self) -> str:
        if self.fmt == "jsonl":
            return ""
        return self._rows([[*self.names, "text", "label", *(f"p_{c}" for c in self.classes)]])

    def encode(self, records: list[dict]) -> str:
        if self.fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        return self._rows(
            [
                [*(_cell(r.get(n)) for n in self.names), r["text"], r["label"], *(r["probs"][c] for c in self.classes)]
                for r in records
            ]
        )

    def _rows(self, rows: list[list]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t" if self.fmt == "tsv" else ",").writerows(rows)
        return buffer.getvalue()


def _cell(value):
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else value


@dataclass
class Plan:
    """Where an output stands before a run: start afresh, resume from `state`, or already complete."""

    partial: PartialOutput
    state: dict | None = None
    complete: bool = False


class PartialOutput:
    """OUT built as `.OUT.partial`; after each chunk `.OUT.partial.json` records the input rows done
    (`next_row`), the output rows and the bytes that hold them (`offset`). Data is on disk before the
    record says so, so the record never points past what a crash left."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = partial_folder(self.out)
        self.record_path = self.path.with_name(self.path.name + ".json")
        self.handle: BinaryIO | None = None
        self.state: dict = {}

    def leftover(self) -> dict | None:
        """An interrupted run's record; {} for a partial file without one (it stopped before its first chunk)."""
        if self.record_path.exists():
            try:
                state = json.loads(self.record_path.read_text())
            except (OSError, ValueError):
                raise DataError(f"{self.record_path}: unreadable; pass --overwrite to start again.") from None
            return state if isinstance(state, dict) else {}
        return {} if self.path.exists() else None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.record_path.unlink(missing_ok=True)
        remove_temporaries(self.record_path)

    def start(self, meta: dict, header: str = "") -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "wb")  # noqa: SIM115 - open for the run, closed by finish/close
        self.state = dict(meta, next_row=0, rows=0, offset=0)
        self.append(header, 0, 0)

    def resume(self, state: dict) -> None:
        offset = int(state["offset"])
        if not self.path.exists() or self.path.stat().st_size < offset:
            raise DataError(f"{self.path}: shorter than its record says (damaged); pass --overwrite to start again.")
        self.handle = open(self.path, "r+b")  # noqa: SIM115 - as in start
        self.handle.truncate(offset)  # what was written after the last record: written again
        self.handle.seek(offset)
        self.state = dict(state)

    def append(self, text: str, next_row: int, rows: int) -> None:
        data = text.encode("utf-8")
        assert self.handle is not None  # started or resumed
        self.handle.write(data)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.state.update(next_row=next_row, rows=self.state["rows"] + rows, offset=self.state["offset"] + len(data))
        write_json_atomic(self.record_path, self.state)

    def finish(self, trailer: str = "") -> None:
        assert self.handle is not None  # started or resumed
        self.handle.write(trailer.encode("utf-8"))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.close()
        os.replace(self.path, self.out)
        self.record_path.unlink(missing_ok=True)
        remove_temporaries(self.record_path)  # a record half-written when an earlier run was killed

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def plan_output(out: Path, *, resume: bool = False, overwrite: bool = False) -> Plan:
    """Refuse what would lose work or mix runs; with `overwrite`, drop an interrupted run's partial file
    (OUT itself is replaced only once the new one is complete)."""
    if resume and overwrite:
        raise DataError("--resume and --overwrite: pass one of them (continue the interrupted run, or start again).")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; give a file name, e.g. --out {out / 'predictions.jsonl'}.")
    partial = PartialOutput(out)
    state = partial.leftover()
    if overwrite:
        partial.discard()
        return Plan(partial)
    if state is not None:
        if not resume:
            done = f" ({state.get('next_row', 0):,} input rows done)" if state else ""
            raise DataError(
                f"{out}: an interrupted run left {partial.path.name}{done}. Pass --resume to continue it, or "
                f"--overwrite to start again."
            )
        return Plan(partial, state)
    if out.exists():
        if resume:
            return Plan(partial, complete=True)
        raise DataError(f"{out}: already exists. Pass --overwrite to replace it.")
    return Plan(partial)


def run_difference(started: dict, meta: dict) -> tuple[str, str, str] | None:
    """The first thing that tells two runs' {"input", "settings"} apart: (its name, then, now), or None.
    An input of the same path that changed since comes as ("input", path, path)."""
    old, new = started.get("input") or {}, meta["input"]
    if old != new:
        return "input", str(old.get("path") or old.get("source")), str(new.get("path") or new.get("source"))
    settings = started.get("settings") or {}
    for key in dict.fromkeys([*meta["settings"], *settings]):
        if settings.get(key) != meta["settings"].get(key):
            named = flag(key) if key in FLAG_SETTINGS else key
            return named, _shown(settings.get(key)), _shown(meta["settings"].get(key))
    return None


def check_same_run(started: dict, meta: dict, what: str) -> None:
    """Refuse to continue, with --resume, what was started on another input or with other settings."""
    difference = run_difference(started, meta)
    if difference is None:
        return
    name, then, now = difference
    if then == now:
        raise DataError(
            f"--resume: {now} changed since {what} was started (size or modification time). Pass --overwrite to "
            f"start again."
        )
    raise DataError(
        f"--resume: {what} was started with {name} {then}; this run has {now}. Pass the same, or --overwrite to "
        f"start again."
    )


def _shown(value) -> str:
    if value is None or value == []:
        return "(none)"
    if isinstance(value, list):
        return ",".join(map(str, value)) if isinstance(value[0], str) else "/".join(map(str, value))
    return str(value)


class Progress:
    """A bar on stderr over the bytes of the input file (the time left follows from them), with rows and rows
    per second; over rows for a source read whole."""

    def __init__(self, table: Table, enabled: bool = True, desc: str = "predict"):
        from tqdm.auto import tqdm

        self.by_rows = table.frame is not None
        self.rows, self.started = 0, time.perf_counter()
        self.bar = tqdm(
            total=len(table.frame) if self.by_rows else table.size,
            unit="rows" if self.by_rows else "B",
            unit_scale=True,
            unit_divisor=1000 if self.by_rows else 1024,
            desc=desc,
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, chunk: Chunk, scored: int) -> None:
        self.rows += scored
        if self.bar.disable:
            return
        self.bar.update(max(0.0, (chunk.end if self.by_rows else chunk.position) - self.bar.n))
        rate = self.rows / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.rows:,} rows, {rate:,.0f} rows/s", refresh=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------- shards


def parse_shard(spec) -> tuple[int, int] | None:
    """ "i/n" (or (i, n)): rows whose index is i modulo n; i counts from 0."""
    if spec is None:
        return None
    text = spec if isinstance(spec, str) else "/".join(map(str, spec)) if isinstance(spec, (tuple, list)) else ""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise DataError(f"--shard {spec}: give it as i/n, e.g. 0/4 for the first of 4 shards (i counts from 0).")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise DataError(f"--shard {spec}: n, the number of shards, must be at least 1.")
    if index >= count:
        raise DataError(
            f"--shard {spec}: i counts from 0 to n-1, so with n = {count} use 0/{count} to {count - 1}/{count}."
        )
    return index, count


def part_path(out: str | os.PathLike, index: int, count: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.part-{index}-of-{count}")


def find_parts(out: str | os.PathLike) -> list[Path]:
    """OUT.part-i-of-n files beside OUT, complete ones (interrupted ones are hidden .partial files)."""
    out = Path(out)
    found = glob.glob(os.path.join(glob.escape(str(out.parent)), glob.escape(out.name) + ".part-*-of-*"))
    return sorted((Path(p) for p in found if PART_NAME.search(p)), key=lambda p: _part_numbers(p))


def _part_numbers(path: Path) -> tuple[int, int]:
    match = PART_NAME.search(path.name)
    return (int(match.group(2)), int(match.group(1))) if match else (0, 0)


def part_header(meta: dict, index: int, count: int, names: list[str], classes: list[str]) -> str:
    header = {**meta, "shard": [index, count], "columns": names, "classes": classes}
    return json.dumps({PART_HEADER: header}, ensure_ascii=False) + "\n"


def part_end(rows: int, input_rows: int) -> str:
    return json.dumps({PART_END: {"rows": rows, "input_rows": input_rows}}) + "\n"


def read_part_header(path: Path) -> dict:
    """A part's header, and its end line (`end`): a part without one is not complete."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.readline())[PART_HEADER]
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4096))
            end = json.loads(handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]).get(PART_END)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a complete part file of `bertsent predict --shard`.") from None
    if not isinstance(end, dict):
        raise DataError(f"{path}: incomplete (no end line); rerun its shard with --resume.")
    return dict(header, end=end)


def _part_records(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        next(handle)  # the header
        for line in handle:
            record = json.loads(line)
            if PART_END in record:
                return
            yield record.pop("row"), record


def merge_parts(
    out: str | os.PathLike,
    parts: Sequence[str | os.PathLike] | None = None,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    keep_parts: bool = False,
    progress: bool = True,
) -> dict:
    """Merge the parts of a sharded run (`parts`, else OUT.part-i-of-n beside OUT) into OUT in row order,
    streaming. Every part must be complete, of the same input and settings, and i of n whole. The parts are
    removed once OUT is written unless `keep_parts`. Returns {"out", "rows", "parts", "seconds"}."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    fmt = output_format(out, fmt)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists. Pass --overwrite to replace it.")
    paths = find_parts(out) if parts is None else [Path(p).expanduser() for p in parts]
    headers = _check_parts(out, paths)
    first = headers[0]
    total = first["end"]["input_rows"]
    writer = RecordFormat(fmt, first["columns"], first["classes"])
    work = out.with_name(f".{out.name}.merging")  # not .OUT.partial: that may be an unsharded run's
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="rows", unit_scale=True, desc="merge", disable=not progress, file=sys.stderr)
    try:
        with open(work, "w", encoding="utf-8", newline="") as handle:
            handle.write(writer.header())
            rows = heapq.merge(*(_part_records(p) for p in paths), key=lambda item: item[0])
            expected = 0
            for batch in _batches(rows, CHUNK_ROWS):
                for row, _ in batch:
                    if row != expected:
                        raise DataError(f"{out}: no part holds row {expected} (damaged?); rerun its shard.")
                    expected += 1
                handle.write(writer.encode([record for _, record in batch]))
                bar.update(len(batch))
        if expected != total:
            raise DataError(f"{out}: the parts hold {expected:,} rows of {total:,}; rerun the shard that lost some.")
        os.replace(work, out)
    finally:
        bar.close()
        work.unlink(missing_ok=True)
    if not keep_parts:
        for path in paths:
            path.unlink(missing_ok=True)
    return {"out": str(out), "rows": expected, "parts": len(paths), "seconds": time.perf_counter() - started}


def _check_parts(out: Path, paths: list[Path]) -> list[dict]:
    """The parts' headers, once they are found to be one whole, complete set."""
    if not paths:
        raise DataError(f"{out}: no parts found ({out.name}.part-I-of-N). Run `bertsent predict --shard I/N` first.")
    headers = [read_part_header(p) for p in paths]
    counts = sorted({h["shard"][1] for h in headers})
    if len(counts) > 1:
        raise DataError(f"{out}: parts of runs split {' and '.join(map(str, counts))} ways; give the parts of one run.")
    count = counts[0]
    have = sorted(h["shard"][0] for h in headers)
    if len(set(have)) != len(have):
        raise DataError(f"{out}: part {have[0]} of {count} given twice; give each part once.")
    missing = sorted(set(range(count)) - set(have))
    if missing:
        name = part_path(out, missing[0], count).name
        raise DataError(
            f"{out}: part {missing[0]} of {count} is missing ({name}). Run --shard {missing[0]}/{count}; if "
            f".{name}.partial exists it was interrupted: rerun it with --resume."
        )
    reference = {"input": headers[0]["input"], "settings": _without_shard(headers[0]["settings"])}
    for path, header in zip(paths, headers):
        other = {"input": header["input"], "settings": _without_shard(header["settings"])}
        rows = header["end"]["input_rows"], headers[0]["end"]["input_rows"]
        counted = ("input rows", *map(str, rows)) if rows[0] != rows[1] else None
        difference = run_difference(other, reference) or counted
        if difference:
            name, this, first = difference
            changed = " (changed between the runs)" if this == first else ""
            raise DataError(
                f"{out}: {path.name} and {paths[0].name} come from different runs ({name} {this} vs {first}{changed}). "
                f"Give the parts of one run."
            )
    return sorted(headers, key=lambda h: h["shard"][0])


def _without_shard(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "shard"}


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
