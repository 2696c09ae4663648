"""Every reader, fuzzed: read_data for each format, the streaming reader and `bertsent data` through the CLI.

Whatever the bytes, shapes, encodings, damage or archive members, a read ends in valid data (texts and labels
are strings, as many labels as texts) or in a BertsentError whose message is one non-empty line; never another
exception, and never a file written outside the test's own folder. Examples are small, so nothing can hang.

The fast set runs a few dozen examples a test; `HYPOTHESIS_PROFILE=long` runs many more.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import io
import json
import lzma
import os
import stat
import tarfile
import tempfile
import uuid
import zipfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bertsent.cli import main
from bertsent.data.sources import TextDataset, open_table, read_data
from bertsent.errors import BertsentError

settings.register_profile(
    "fast",
    max_examples=25,
    deadline=timedelta(seconds=20),  # generous: the machine is shared; small examples never come near it
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("long", parent=settings.get_profile("fast"), max_examples=400)
FUZZ = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

TABLE_NAMES = ["d.csv", "d.tsv", "d.jsonl", "d.json", "d.txt", "d.parquet"]
COMPRESSIONS = ["", ".gz", ".bz2", ".xz", ".zip"]
KEYS = ["text", "label", "review", "sentiment", "x", "", "Text", "1"]

texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\x00", "\n", "\r", '"', ",", "\t", " "]),
    max_size=30,
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.sampled_from(["positive", "negative", "1", "0", "1.0", "", "   ", "\ud800 lone surrogate", "9" * 5000]),
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=4
)
records = st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=4), max_size=8)


# ----------------------------------------------------------------------------- the property


def check_dataset(dataset: TextDataset) -> None:
    assert isinstance(dataset, TextDataset)
    assert isinstance(dataset.texts, list) and all(isinstance(t, str) for t in dataset.texts)
    for text in dataset.texts:
        text.encode("utf-8")  # writable and tokenizable: no lone surrogates
    if dataset.labels is not None:
        assert len(dataset.labels) == len(dataset.texts)
        assert all(isinstance(label, str) and label for label in dataset.labels)
        for label in dataset.labels:
            label.encode("utf-8")


def check_message(exc: BaseException) -> None:
    message = str(exc)
    assert message.strip(), "an empty error message"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert "None-compressed" not in message


def outcome(read) -> TextDataset | None:
    """The reader's result, checked; None when it refused with a proper BertsentError."""
    try:
        result = read()
    except BertsentError as exc:
        check_message(exc)
        return None
    if isinstance(result, TextDataset):
        check_dataset(result)
    return result


def read_streaming(path: Path, **options) -> TextDataset:
    """The streaming reader (`predict --file`) over the whole file, as a TextDataset of its texts."""
    table = open_table(path, chunk_rows=3, **options)
    got, rows = [], []
    for chunk in table.chunks(chunk_rows=3):
        assert len(chunk.texts) == len(chunk.rows)
        got.extend(chunk.texts)
        rows.extend(chunk.rows)
    assert rows == list(range(len(rows)))
    return TextDataset(got)


def run_cli(argv: list[str]) -> tuple[int, str]:
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = main(argv)
    return code, stderr.getvalue()


def check_cli(argv: list[str]) -> int:
    code, err = run_cli(argv)
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"bertsent {argv[0]}: error: ") and len(lines[0]) > 30, err
    return code


@contextlib.contextmanager
def sandbox():
    """A fresh folder to read in (the working directory too), and afterwards proof that nothing was written
    outside it: the folder around it holds nothing new."""
    with tempfile.TemporaryDirectory() as outer:
        inner = Path(outer) / "work"
        inner.mkdir()
        before = os.getcwd()
        os.chdir(inner)
        try:
            yield inner
        finally:
            os.chdir(before)
        assert sorted(os.listdir(outer)) == ["work"], os.listdir(outer)


# ----------------------------------------------------------------------------- writing fuzzed files


def serialize(rows: list[dict], fmt: str, shape: str) -> str | None:
    """The records in a text format; None when this shape cannot hold them."""
    if fmt in ("csv", "tsv"):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out = io.StringIO()
        writer = csv.writer(out, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
        if shape != "headless":
            writer.writerow(keys)
        for r in rows:
            cells = [json.dumps(r[k]) if isinstance(r.get(k), (list, dict)) else r.get(k) for k in keys]
            if shape == "ragged" and cells:
                cells = cells[: len(cells) - 1] if len(r) % 2 else [*cells, "extra"]
            writer.writerow(["" if c is None else c for c in cells])
        return out.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(r) + ("\n\n" if shape == "ragged" else "\n") for r in rows)
    if fmt == "json":
        if shape == "columns":
            keys = list(dict.fromkeys(k for r in rows for k in r))
            return json.dumps({k: [r.get(k) for r in rows] for k in keys})
        if shape == "wrapped":
            return json.dumps({"data": rows})
        return json.dumps(rows)
    return "\n".join(str(r.get("text", r)) for r in rows)


def encode(text: str, encoding: str) -> bytes | None:
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        return None


def compress(payload: bytes, compression: str, name: str, cut: float | None) -> bytes:
    if compression == ".gz":
        data = gzip.compress(payload)
    elif compression == ".bz2":
        data = bz2.compress(payload)
    elif compression == ".xz":
        data = lzma.compress(payload)
    elif compression == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, payload)
        data = buffer.getvalue()
    else:
        data = payload
    if cut is not None:
        data = data[: int(len(data) * cut)]
    return data


def read_all_ways(path: Path, options: dict) -> None:
    """read_data (as labeled data and as texts), the streaming reader: each ends well or refuses properly."""
    outcome(lambda: read_data(path, **options))
    outcome(lambda: read_data(path, texts_only=True, encoding=options.get("encoding", "utf-8")))
    outcome(lambda: read_streaming(path, encoding=options.get("encoding", "utf-8")))


# ----------------------------------------------------------------------------- the fuzzed tests


@FUZZ
@given(
    name=st.sampled_from(TABLE_NAMES + ["d.csv.gz", "d.jsonl.bz2", "d.tsv.xz", "d.csv.zip", "a.tar.gz", "a.tar"]),
    magic=st.sampled_from([b"", b"\x1f\x8b\x08", b"PAR1", b"PK\x03\x04", b"BZh9", b"\xfd7zXZ\x00", b"\xff\xfe"]),
    payload=st.binary(max_size=600),
)
def test_random_bytes_in_every_format(name, magic, payload):
    with sandbox() as folder:
        path = folder / name
        path.write_bytes(magic + payload)
        read_all_ways(path, {})


@FUZZ
@given(
    rows=records,
    table=st.sampled_from(["d.csv", "d.tsv", "d.jsonl", "d.json", "d.txt"]),
    shape=st.sampled_from(["plain", "headless", "ragged", "columns", "wrapped"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1", "cp1252"]),
    pass_encoding=st.booleans(),
    flags=st.fixed_dictionaries(
        {"drop_invalid": st.booleans(), "require_labels": st.booleans()},
        optional={"text_column": st.sampled_from(KEYS), "label_column": st.sampled_from(KEYS)},
    ),
)
def test_random_table_shapes_types_and_encodings(rows, table, shape, encoding, pass_encoding, flags):
    raw = serialize(rows, table.rsplit(".", 1)[1], shape)
    payload = encode(raw, encoding)
    assume(payload is not None)
    options = dict(flags, encoding=encoding) if pass_encoding and encoding != "utf-8-sig" else dict(flags)
    with sandbox() as folder:
        path = folder / table
        path.write_bytes(payload)
        read_all_ways(path, options)


@FUZZ
@given(
    rows=records,
    table=st.sampled_from(["d.csv", "d.tsv", "d.jsonl", "d.json"]),
    compression=st.sampled_from(COMPRESSIONS[1:]),
    cut=st.none() | st.floats(min_value=0.0, max_value=0.999),
    damage=st.none() | st.tuples(st.floats(0.0, 0.999), st.binary(min_size=1, max_size=4)),
)
def test_compressed_files_truncated_or_damaged(rows, table, compression, cut, damage):
    raw = encode(serialize(rows, table.rsplit(".", 1)[1], "plain"), "utf-8")
    assume(raw is not None)
    data = compress(raw, compression, table, cut)
    if damage is not None and data:
        at = int(len(data) * damage[0])
        data = data[:at] + damage[1] + data[at + len(damage[1]) :]
    with sandbox() as folder:
        path = folder / (table + compression)
        path.write_bytes(data)
        read_all_ways(path, {})


@FUZZ
@given(
    rows=st.lists(st.tuples(texts, st.sampled_from(["positive", "negative", "1", "", None])), min_size=1, max_size=6),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]),
    spots=st.lists(
        st.tuples(st.floats(0.0, 1.0), st.sampled_from([b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80"])), max_size=3
    ),
)
def test_nul_bytes_and_mixed_encodings(rows, encoding, spots):
    """A file of one encoding with bytes of another (or NUL, or invalid UTF-8) put in at random places."""
    lines = ["text,label"] + [f'"{t.replace(chr(34), "")}",{label or ""}' for t, label in rows]
    payload = encode("\n".join(lines), encoding)
    assume(payload is not None)
    for where, junk in spots:
        at = int(len(payload) * where)
        payload = payload[:at] + junk + payload[at:]
    with sandbox() as folder:
        path = folder / "mixed.csv"
        path.write_bytes(payload)
        read_all_ways(path, {"encoding": encoding, "drop_invalid": True})


column_values = st.sampled_from(
    [
        st.none() | texts,
        st.none() | st.integers(-(2**63), 2**63 - 1),
        st.none() | st.floats(),
        st.none() | st.booleans(),
        st.none() | st.lists(texts, max_size=2),
    ]
).flatmap(lambda values: st.lists(values, min_size=4, max_size=4))


@FUZZ
@given(columns=st.dictionaries(st.sampled_from(["text", "label", "x", "review"]), column_values, max_size=3))
def test_parquet_with_mixed_columns(columns):
    """Parquet columns of every type pyarrow holds, nulls among them, as text, label or neither."""
    with sandbox() as folder:
        path = folder / "d.parquet"
        pd.DataFrame(columns or {"x": []}).to_parquet(path)
        read_all_ways(path, {})
        read_all_ways(path, {"drop_invalid": True})


@pytest.mark.parametrize("name", ["big.csv", "big.jsonl"])
def test_a_huge_field_reads_whole(tmp_path, name):
    """A 3 MB field (and NUL bytes in it) is still one text, read as it is."""
    field = ("word " * 600_000) + "\x00end"
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text(f'text,label\n"{field}",positive\nshort,negative\n', encoding="utf-8")
    else:
        path.write_text(json.dumps({"text": field, "label": 1}) + "\n" + json.dumps({"text": "b", "label": 0}) + "\n")
    dataset = outcome(lambda: read_data(path))
    assert dataset is not None and dataset.texts[0] == field and len(dataset.texts) == 2
    assert read_streaming(path).texts[0] == field


# ----------------------------------------------------------------------------- archives and links

MEMBER_KINDS = ["file", "dir", "symlink", "hardlink", "fifo", "chardev"]


def _escape_names(sentinel: str) -> list[str]:
    """Member names that would land outside the folder they are unpacked in."""
    return [
        f"/tmp/{sentinel}/train/pos/1_9.txt",
        f"../{sentinel}/train/pos/1_9.txt",
        f"aclImdb/../../{sentinel}/train/neg/2_1.txt",
        f"aclImdb/train/pos/../../../../{sentinel}_3_8.txt",
        f"C:/{sentinel}/test/pos/4_7.txt",
    ]


member_specs = st.lists(
    st.tuples(
        st.sampled_from(["safe", "escape"]),
        st.integers(0, 40),
        st.sampled_from(MEMBER_KINDS),
        st.sampled_from(["/etc/passwd", "../../../etc/passwd", "aclImdb/train/pos/0_9.txt", "/tmp"]),
        st.binary(max_size=40),
    ),
    min_size=1,
    max_size=6,
)
SAFE_NAMES = [
    f"aclImdb/{split}/{label}/{i}_{r}.txt"
    for split in ("train", "test")
    for label, r in (("pos", 9), ("neg", 2))
    for i in range(3)
]


def build_tar(specs, sentinel: str, mode: str) -> tuple[bytes, bool]:
    """A tar archive of the specs, and whether it holds a member bertsent must refuse."""
    buffer, hostile = io.BytesIO(), False
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.GNU_FORMAT) as archive:
        for where, i, kind, target, body in specs:
            names = SAFE_NAMES if where == "safe" else _escape_names(sentinel)
            info = tarfile.TarInfo(names[i % len(names)])
            info.type = {
                "file": tarfile.REGTYPE,
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chardev": tarfile.CHRTYPE,
            }[kind]
            hostile |= where == "escape" or kind in ("symlink", "hardlink", "fifo", "chardev")
            if kind in ("symlink", "hardlink"):
                info.linkname = target
            if kind == "file":
                info.size = len(body)
                archive.addfile(info, io.BytesIO(body))
            else:
                archive.addfile(info)
    return buffer.getvalue(), hostile


def no_escape(folder: Path, sentinel: str) -> None:
    """Nothing named after the sentinel exists anywhere an escaping member could have put it."""
    for base in (folder, folder.parent, folder.parent.parent, Path("/tmp"), Path("/")):
        assert not list(base.glob(f"{sentinel}*")), f"something was written to {base}"


@FUZZ
@given(
    specs=member_specs,
    suffix=st.sampled_from([".tar.gz", ".tar", ".tar.xz"]),
    split=st.sampled_from(["", ":train", ":test"]),
    cut=st.none() | st.floats(0.0, 0.999),
)
def test_aclimdb_archives_with_escaping_paths_and_links(specs, suffix, split, cut):
    sentinel = f"bertsent-fuzz-{uuid.uuid4().hex[:12]}"
    mode = {".tar.gz": "w:gz", ".tar": "w", ".tar.xz": "w:xz"}[suffix]
    data, hostile = build_tar(specs, sentinel, mode)
    if cut is not None:
        data = data[: int(len(data) * cut)]
    with sandbox() as folder:
        path = folder / ("aclImdb" + suffix)
        path.write_bytes(data)
        dataset = outcome(lambda: read_data(f"{path}{split}"))
        outcome(lambda: read_streaming(Path(f"{path}{split}")))
        if hostile and cut is None:
            assert dataset is None, "an archive with a link, a device or an escaping path was read"
        no_escape(folder, sentinel)


@FUZZ
@given(
    name=st.sampled_from(["d.csv", "../d.csv", "/abs/d.csv", "a/../../d.csv", "sub/d.csv", "C:/d.csv"]),
    link=st.booleans(),
    extra=st.sampled_from([[], ["other.csv"], ["dir/"]]),
)
def test_zips_with_escaping_names_links_and_extra_members(name, link, extra):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd" if link else "text,label\ngood,positive\nbad,negative\n")
        for other in extra:
            archive.writestr(other, "" if other.endswith("/") else "text,label\nx,positive\n")
    with sandbox() as folder:
        path = folder / "d.csv.zip"
        path.write_bytes(buffer.getvalue())
        results = [outcome(lambda: read_data(path)), outcome(lambda: read_streaming(path))]
        hostile = link or name.startswith(("/", "C:")) or ".." in name.split("/") or extra == ["other.csv"]
        if hostile:
            assert results == [None, None]
        else:
            assert results[0].texts == ["good", "bad"] and results[1].texts == ["good", "bad"]
        assert not (folder.parent / "d.csv").exists() and not Path("/abs/d.csv").exists()


@FUZZ
@given(
    entries=st.lists(
        st.tuples(st.sampled_from(SAFE_NAMES), st.sampled_from(["file", "dir", "fifo", "broken-link", "link-out"])),
        min_size=1,
        max_size=5,
    )
)
def test_aclimdb_folders_with_odd_entries(entries):
    """Folders named like reviews, pipes (which would block a read), broken links: refused, never a hang."""
    with sandbox() as folder:
        outside = folder / "outside.txt"
        outside.write_text("a review kept elsewhere")
        made = set()
        for name, kind in entries:
            path = folder / name
            if path.exists() or path.is_symlink():
                continue
            made.add(kind)
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "file":
                path.write_text("a fine film")
            elif kind == "dir":
                path.mkdir()
            elif kind == "fifo":
                os.mkfifo(path)
            elif kind == "broken-link":
                path.symlink_to(folder / "nothing-here")
            else:
                path.symlink_to(outside)
        dataset = outcome(lambda: read_data(folder / "aclImdb"))
        if made & {"dir", "fifo", "broken-link"}:
            assert dataset is None
        elif made:
            assert dataset is not None and set(dataset.texts) <= {"a fine film", "a review kept elsewhere"}


# ----------------------------------------------------------------------------- `bertsent data` in-process


@FUZZ
@given(
    rows=records,
    table=st.sampled_from(["d.csv", "d.jsonl", "d.json", "d.txt", "d.csv.gz"]),
    cut=st.none() | st.floats(0.0, 0.999),
    drop=st.booleans(),
)
def test_bertsent_data_through_the_cli(tiny_model_dir, rows, table, cut, drop):
    raw = encode(serialize(rows, table.split(".")[1], "plain"), "utf-8")
    assume(raw is not None)
    data = compress(raw, ".gz" if table.endswith(".gz") else "", table, cut)
    with sandbox() as folder:
        path = folder / table
        path.write_bytes(data)
        argv = ["data", str(path), "--model", str(tiny_model_dir)] + (["--drop-invalid"] if drop else [])
        check_cli(argv)
        check_cli([*argv, "--json"])
