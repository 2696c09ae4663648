"""The IMDB aclImdb layout: {train,test}/{pos,neg}/<id>_<rating>.txt in a folder or a tar archive.

An archive is read in one streaming pass (never unpacked to disk), each member checked first (no links, devices,
absolute or '..' paths, nothing too big to be a review). Its decoded reviews are cached (Parquet, keyed by the
archive's sha256), so the next process reads them back instead of decompressing the archive again.
"""

from __future__ import annotations

import functools
import lzma
import os
import re
import sys
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path

from bertsent.data.dataset import TextDataset
from bertsent.data.tables import check_readable_file, first_line, outside, unreadable
from bertsent.errors import BertsentError, DataError
from bertsent.files import cache_dir, cache_folder, sha256_of, write_atomic

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")
# Decoded aclImdb archives, kept in this cache folder; the version changes when what is stored does.
DECODED_ARCHIVES = "aclimdb-decoded"
DECODED_ARCHIVE_VERSION = 1
ACLIMDB_MEMBER = re.compile(r"(?:^|/)(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
# No aclImdb review comes near this; a bigger member is a damaged or hostile archive, not read into memory.
MAX_REVIEW_BYTES = 64 << 20


def is_archive(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in ARCHIVE_SUFFIXES)


def _review_file(file: Path) -> str:
    """One review of an aclImdb folder; a name that is a folder, a pipe or unreadable is refused with one line."""
    check_readable_file(file)
    if file.stat().st_size > MAX_REVIEW_BYTES:
        raise DataError(f"{file}: {file.stat().st_size >> 20} MB is not a review. Remove it from the aclImdb folder.")
    try:
        return file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(unreadable(file, exc)) from None


def _check_member(member: tarfile.TarInfo, path: str) -> None:
    """Refuse an archive member that unpacking could turn against the user: an absolute or '..' path, a link, a
    device or pipe; or one too big to be a review. Nothing is ever unpacked to disk, but such an archive is not
    an aclImdb download, and tarfile's own 'data' filter (where Python has it) gets the last word."""
    name = member.name
    if outside(name):
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
