"""Table files read a chunk at a time: one reader per format, and a whole read is its chunks put together.

Formats: CSV, TSV, JSON Lines, JSON, Parquet and plain lines (one text a line), each also gzip/bz2/xz/zip-
compressed except Parquet (which compresses itself). `open_file` checks a file before any work (readable, a known
format, not empty, a known encoding; a byte-order mark names the encoding; a wrong CSV separator is found from the
header) and `Table.frames` reads it `chunk_rows` rows at a time; `Table.read` (`read_table`) is those chunks
concatenated, so a whole read and a chunked one never differ. Each chunk is a DataFrame of Python values (object
columns): an integer stays an integer next to a missing value. A JSON document is parsed whole and served in chunks,
as is a source read whole elsewhere (`Table.of_frame`). The readers' own errors become one line (`DataError`).
"""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import json
import lzma
import math
import re
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from bertsent.data.columns import encodable, plain, text_or_empty
from bertsent.errors import DataError, first_line

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
OPENERS = {"gzip": gzip.GzipFile, "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}
CHUNK_ROWS = 2048  # rows per chunk: long enough to sort by length for little padding, small enough to stay flat
WHOLE_CHUNK_ROWS = 1 << 16  # a whole read goes by bigger chunks: fewer to concatenate
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


# ----------------------------------------------------------------------------- files and formats


def table_format(path: Path) -> tuple[str, str | None]:
    """(the format, the compression or None) from the file's suffixes."""
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


def check_readable_file(path: Path) -> None:
    """Refuse with one line a path that cannot be read as a data file: a folder, a pipe or a device (reading one
    blocks or never ends), a file this process may not open. Looks (stat, open) without reading anything."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError) as exc:
        raise DataError(unreadable(path, exc)) from None
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
        raise DataError(unreadable(path, exc)) from None


def unreadable(path: Path, exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"{path}: cannot be read (permission denied). Check the permissions of the file and of its folders."
    return f"{path}: cannot read it ({getattr(exc, 'strerror', None) or first_line(exc)})."


def zip_member(archive: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    """The one table file of a zip; a zip with other files, links or names that point outside it is refused."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) != 1:
        raise DataError(f"{path}: a zip must hold exactly one table file, it holds {len(members)}.")
    member = members[0]
    if stat.S_ISLNK(member.external_attr >> 16):
        raise DataError(f"{path}: its member {member.filename!r} is a link, not a file. Zip the table file itself.")
    if outside(member.filename):
        raise DataError(
            f"{path}: its member {member.filename!r} has an absolute path or '..'; refused. Zip the table file itself."
        )
    return member


def outside(name: str) -> bool:
    """Whether an archive member's name would land outside the folder it is unpacked in."""
    name = name.replace("\\", "/")
    return name.startswith("/") or bool(re.match(r"[A-Za-z]:", name)) or ".." in PurePosixPath(name).parts


def bom_encoding(head: bytes, encoding: str) -> str:
    """The encoding to read a file in: the one its byte-order mark names when `encoding` is UTF-8 (the default),
    else `encoding`. Raises LookupError for an unknown encoding."""
    if codecs.lookup(encoding).name != "utf-8":
        return encoding
    return next((name for mark, name in BYTE_ORDER_MARKS if head.startswith(mark)), encoding)


def check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise DataError(f"--encoding {encoding}: unknown encoding. Use e.g. utf-8, latin-1, cp1252.") from None


def other_separators(frame: pd.DataFrame, header: str, sep: str | None) -> list[str]:
    """Separators to try when a table read as `sep` came out as one column whose header holds another:
    e.g. a semicolon-separated file saved as .csv."""
    if frame.shape[1] != 1:
        return []
    return [other for other in (";", "\t", ",", "|") if other != sep and other in header]


# ----------------------------------------------------------------------------- JSON


def parse_json_line(line: str, number: int, path: Path) -> dict:
    """One JSON Lines record, or a DataError naming the line."""
    try:
        record = json_loads(line)
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


def json_loads(raw: str):
    """json.loads, with lone surrogates (a "\\ud800" escape: valid JSON, not valid Unicode) made U+FFFD: pandas,
    tokenizers and UTF-8 writers refuse them."""
    data = json.loads(raw)
    if "\\u" in raw and re.search(r"\\u[dD][89a-fA-F]", raw):
        data = json.loads(encodable(json.dumps(data, ensure_ascii=False)))
    return data


def parse_json(raw: str, path: Path) -> pd.DataFrame:
    """A JSON document: a list of records, {"data": [records]}, or an object of columns."""
    try:
        data = json_loads(raw)
    except json.JSONDecodeError as exc:
        if "Extra data" in exc.msg:  # several objects, one a line: JSON Lines under a .json name
            lines = enumerate(raw.splitlines(), 1)
            return records_frame([parse_json_line(line, n, path) for n, line in lines if line.strip()])
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits, nesting too deep to parse
        raise DataError(f"{path}: cannot read it as JSON ({first_line(exc)}).") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"text": [...], "label": [...]}
        lists = {k: v for k, v in data.items() if isinstance(v, list)}
        if len(lists) == 1 and all(isinstance(r, dict) for r in next(iter(lists.values()))):
            data = next(iter(lists.values()))
        elif lists and len(lists) == len(data):
            return _object_frame(pd.DataFrame(data))
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return records_frame(data)
    raise DataError(
        f'{path}: expected a list of objects like [{{"text": ..., "label": ...}}] or '
        f'an object of columns like {{"text": [...], "label": [...]}}.'
    )


def records_frame(records: list[dict], columns: list[str] | None = None) -> pd.DataFrame:
    """Records as a frame of their values as they are (object columns); `columns`, else every key in order. A
    missing key is NaN, as where chunks with other keys are concatenated."""
    names = columns if columns is not None else list(dict.fromkeys(k for r in records for k in r))
    return columns_frame({c: [r.get(c, math.nan) for r in records] for c in names}, len(records))


def columns_frame(columns: dict[str, list], rows: int) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in columns.items()}, index=pd.RangeIndex(rows))


def _object_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return columns_frame({str(c): frame[c].tolist() for c in frame.columns}, len(frame))


# ----------------------------------------------------------------------------- the reader


@dataclass
class Chunk:
    """Consecutive rows of a table (after `shard`, every n-th of them): the texts and the kept columns."""

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
    """A table file read in chunks (`open_file`), or a source read whole and served in chunks (`of_frame`)."""

    def __init__(self, path: Path, fmt: str, compression: str | None, encoding: str, frame=None, name=None):
        self.path, self.fmt, self.compression, self.encoding = path, fmt, compression, encoding
        self.read_as = encoding  # what the text is decoded as: a byte-order mark can name another
        self.frame = frame
        self.name = name or str(path)
        self.size = path.stat().st_size if frame is None else 0
        self.sep = {"csv": ",", "tsv": "\t"}.get(fmt)
        self.columns: list[str] = []
        self.head = pd.DataFrame()  # the first rows, every column (`open_file`)
        self.text_column = "text"
        self.keep_columns: list[str] = []

    @classmethod
    def of_frame(cls, frame: pd.DataFrame, name: str, path: Path) -> Table:
        table = cls(path, "texts", None, "utf-8", frame, name)
        table.head = frame.head(CHUNK_ROWS)
        table.columns = [str(c) for c in frame.columns]
        return table

    def identity(self) -> dict:
        """What tells this input from another: --resume and merge compare it."""
        if self.frame is not None and not self.path.is_file():  # an aclImdb folder, a built-in data set
            return {"source": self.name, "rows": len(self.frame)}
        stat_ = self.path.stat()
        return {"path": str(self.path.resolve()), "size": stat_.st_size, "mtime_ns": stat_.st_mtime_ns}

    def read(self) -> pd.DataFrame:
        """The whole table: its chunks, concatenated."""
        if self.frame is not None:  # read whole already: its chunks are slices of it
            return self.frame
        frames = [frame for _, frame, _ in self.frames(WHOLE_CHUNK_ROWS)]
        if not frames:  # a header without rows: its columns
            return self.head.iloc[:0]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)

    def chunks(self, start: int = 0, chunk_rows: int = CHUNK_ROWS) -> Iterator[Chunk]:
        """The texts and kept columns from row `start` on, `chunk_rows` rows at a time (fewer in the first one
        when `start` is inside a chunk). Only the text column and the kept ones are read and converted."""
        wanted = [self.text_column, *self.keep_columns]
        for first, frame, position in self.frames(chunk_rows, wanted, start):
            end = first + len(frame)
            if end <= start:
                continue
            part = frame.iloc[max(0, start - first) :]
            yield Chunk(
                list(range(end - len(part), end)),
                [text_or_empty(v) for v in part[self.text_column].tolist()],
                {name: [plain(v) for v in part[name].tolist()] for name in self.keep_columns},
                end,
                position,
            )

    def frames(
        self, chunk_rows: int, columns: list[str] | None = None, start: int = 0
    ) -> Iterator[tuple[int, pd.DataFrame, float]]:
        """(index of the chunk's first row, its rows as a frame of `columns` (else all), bytes read so far).
        Parquet row groups and JSON Lines rows wholly before `start` are skipped unparsed."""
        with self._reading():
            if self.frame is not None:
                frame = self.frame if columns is None else self.frame[columns]
                for first in range(0, len(frame), chunk_rows):
                    yield first, frame.iloc[first : first + chunk_rows], 0
            elif self.fmt in ("csv", "tsv"):
                yield from self._csv_frames(chunk_rows, columns)
            elif self.fmt == "parquet":
                yield from self._parquet_frames(chunk_rows, columns, start)
            else:
                yield from self._line_frames(chunk_rows, columns, start)

    def probe(self, rows: int) -> pd.DataFrame | None:
        """The first rows with every column, to name the columns and pick the text one; None when the file holds
        no rows and no header (blank lines only)."""
        if self.frame is None and self.fmt in ("csv", "tsv"):  # the header alone names the columns
            with self._reading(), self._open() as (stream, _):
                return self._csv_reader(stream, nrows=rows)
        if self.frame is None and self.fmt == "parquet":
            import pyarrow.parquet as pq

            with self._reading(), pq.ParquetFile(self.path) as parquet:
                names = parquet.schema_arrow.names
            first = next((frame for _, frame, _ in self.frames(rows)), None)
            return first if first is not None else columns_frame({c: [] for c in names}, 0)
        return next((frame for _, frame, _ in self.frames(rows)), None)

    # -- the formats: each yields (index of its first row, frame, bytes read) -------------------------------

    def _csv_reader(self, stream, **options):
        text = io.TextIOWrapper(stream, encoding=self._decoding(), newline="")
        return pd.read_csv(
            text, sep=self.sep, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=True, **options
        )

    def _csv_frames(self, chunk_rows, columns):
        with self._open() as (stream, raw), self._csv_reader(stream, chunksize=chunk_rows, usecols=columns) as reader:
            first = 0
            for frame in reader:
                yield first, frame, raw.tell()
                first += len(frame)

    def _parquet_frames(self, chunk_rows, columns, start):
        import pyarrow.parquet as pq

        with pq.ParquetFile(self.path) as parquet:
            meta = parquet.metadata
            groups, first, total = [], 0, max(meta.num_rows, 1)
            for group in range(meta.num_row_groups):  # row groups wholly before `start` are not read at all
                rows = meta.row_group(group).num_rows
                if groups or first + rows > start:
                    groups.append(group)
                else:
                    first += rows
            if not groups:  # `start` is past the end (an empty list would read every group)
                return
            for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=groups, columns=columns):
                values = {c: batch.column(c).to_pylist() for c in batch.schema.names}
                first += batch.num_rows
                yield first - batch.num_rows, columns_frame(values, batch.num_rows), self.size * first / total

    def _line_frames(self, chunk_rows, columns, start):
        """JSON Lines and plain lines; blank lines are not rows. Rows before `start` are counted, not parsed."""
        with self._open() as (stream, raw):
            records, first = [], 0
            for row, (number, line) in enumerate(self._lines(stream)):
                if row >= start:
                    first = first if records else row
                    records.append(self._record(line, number))
                if len(records) == chunk_rows:
                    yield first, self._records_frame(records, columns), raw.tell()
                    records = []
            if records:
                yield first, self._records_frame(records, columns), raw.tell()

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

    def _records_frame(self, records: list, columns: list[str] | None) -> pd.DataFrame:
        if self.fmt == "lines":
            return columns_frame({"text": records}, len(records))
        return records_frame(records, columns)

    # -- opening, probing, errors ---------------------------------------------------------------------------

    def _decoding(self) -> str:
        return "utf-8-sig" if codecs.lookup(self.read_as).name == "utf-8" else self.read_as  # drops a BOM

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
                opener = OPENERS.get(self.compression)
                if opener is None:
                    raise DataError(
                        f"{self.path}: {self.compression} compression is not supported; decompress it first."
                    )
                stream = stack.enter_context(opener(fileobj=raw) if opener is gzip.GzipFile else opener(raw))
            yield stream, raw

    def _read_all(self) -> str:
        """The whole decoded text (a JSON document is parsed whole)."""
        with self._open() as (stream, _):
            return stream.read().decode(self._decoding())

    @contextlib.contextmanager
    def _reading(self):
        """The readers' own errors as one line that says what is wrong."""
        try:
            yield
        except DataError:
            raise
        except UnicodeDecodeError:
            raise DataError(self._not_decodable()) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path}: the file is empty. Give a file with a header and rows.") from None
        except (PermissionError, IsADirectoryError) as exc:
            raise DataError(unreadable(self.path, exc)) from None
        except DECOMPRESS_ERRORS as exc:
            if not self.compression:
                raise DataError(self._not_readable(exc)) from None
            raise DataError(
                f"{self.path}: cannot decompress it ({first_line(exc)}). The file is damaged or not "
                f"{self.compression}-compressed."
            ) from None
        except (pd.errors.ParserError, ValueError) as exc:
            raise DataError(self._not_readable(exc)) from None

    def _not_readable(self, exc: BaseException) -> str:
        return (
            f"{self.path}: cannot read it as {self.fmt.upper()} ({first_line(exc)}). Check the file's format and "
            f"extension."
        )

    def _not_decodable(self) -> str:
        """Which line is not in the encoding: the text read again, a block at a time, up to the first bad byte."""
        where = ""
        try:
            decoder = codecs.getincrementaldecoder(self._decoding())()
            with self._open() as (stream, _):
                line, offset = 1, 0
                for block in iter(lambda: stream.read(1 << 20), b""):
                    try:
                        decoder.decode(block)
                    except UnicodeDecodeError as exc:
                        bad = max(exc.start, 0)
                        line += block.count(b"\n", 0, bad)
                        where = f"line {line} is not valid {self.read_as} (byte {offset + bad})"
                        break
                    line, offset = line + block.count(b"\n"), offset + len(block)
        except Exception:  # noqa: BLE001 - only the message's detail is lost
            where = ""
        what = where or f"not valid {self.read_as}"
        return f"{self.path}: {what}. Save the file as UTF-8, or pass its encoding, e.g. --encoding latin-1."


def open_file(path: Path, encoding: str = "utf-8") -> Table:
    """A table file, checked before any work: readable, of a known format, not empty, in a known encoding (the one
    its byte-order mark names when `encoding` is UTF-8), its CSV separator found from the header."""
    check_encoding(encoding)
    check_readable_file(path)
    fmt, compression = table_format(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty. Give a file with a header and rows.")
    if fmt == "parquet" and compression:
        raise DataError(f"{path}: a compressed Parquet file; decompress it first (Parquet compresses itself).")
    table = Table(path, fmt, compression, encoding)
    if fmt != "parquet":
        with table._reading(), table._open() as (stream, _):
            table.read_as = bom_encoding(stream.read(4), encoding)
    if fmt == "json":  # a JSON document is parsed whole, then served in chunks
        with table._reading():
            raw = table._read_all()
            if not raw.strip():
                raise DataError(f"{path}: the file is empty. Give a file with a header and rows.")
            table.frame = parse_json(raw, path)  # e.g. columns of unequal lengths: pandas' ValueError, one line
    first = table.probe(CHUNK_ROWS)
    if first is None:  # blank lines only
        raise DataError(f"{path}: the file is empty. Give a file with a header and rows.")
    if table.sep is not None:
        first = _find_separator(table, first)
    table.head, table.columns = first, [str(c) for c in first.columns]
    return table


def _find_separator(table: Table, first: pd.DataFrame) -> pd.DataFrame:
    """A table read as CSV that came out as one column whose header holds another separator: read with that."""
    sep = table.sep
    for other in other_separators(first, str(first.columns[0]), sep):
        table.sep = other
        retry = table.probe(CHUNK_ROWS)
        if retry is not None and retry.shape[1] > 1:
            return retry
    table.sep = sep
    return first


def read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """A table file read whole: its chunks, concatenated."""
    return open_file(path, encoding).read()
