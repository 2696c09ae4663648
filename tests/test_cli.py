"""`bertsent` end to end through `cli.main`: train, predict, evaluate, data, models, and every user error."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from bertsent.cli import main

from conftest import make_reviews, one_line_error, read_csv_rows

VAL_TEXTS, VAL_LABELS = make_reviews(40, seed=2)


def _fast(tiny_model_dir, *extra):
    """Flags for a quick training run of the tiny BERT; `extra` ones come last, so they win."""
    return [
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "5",
        "--batch-size",
        "16",
        "--lr",
        "5e-3",
        "--quiet",
        "--no-report",
        *extra,
    ]


def _aclimdb_archive(root: Path, name="aclImdb_v1.tar.gz") -> Path:
    folder = root / "acl-src" / "aclImdb"
    for split, n in (("train", 12), ("test", 6)):
        texts, labels = make_reviews(n, seed=7 if split == "train" else 8)
        for i, (text, label) in enumerate(zip(texts, labels)):
            sub = folder / split / ("pos" if label == "positive" else "neg")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i}_{8 if label == 'positive' else 3}.txt").write_text(text + "<br /><br />The end.")
    with tarfile.open(root / name, "w:gz" if name.endswith("gz") else "w:xz") as archive:
        archive.add(folder, arcname="aclImdb")
    return root / name


# ----------------------------------------------------------------------------- happy paths


def test_train_predict_evaluate_from_csv(tiny_model_dir, tmp_path, write_csv, capsys):
    texts, labels = make_reviews(120, seed=1)
    data = write_csv(list(zip(texts, labels)) + [("", "positive")], "train.csv")
    code = main(["train", "--data", str(data), "--out", "model", "--drop-invalid", *_fast(tiny_model_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "skipped 1 row(s)" in err and "Model: model" in out and "accuracy" in out
    assert {"config.json", "model.safetensors", "tokenizer.json", "bertsent.json"} <= {
        p.name for p in (tmp_path / "model").iterdir()
    }
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work folder left

    assert main(["predict", "model", "a wonderful and superb film", "dull, awful and boring"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["label", "confidence", "text"]
    assert table[1].startswith("positive") and table[2].startswith("negative")

    evaluation = write_csv(list(zip(VAL_TEXTS, VAL_LABELS)), "val.csv")
    assert main(["evaluate", "model", "--data", str(evaluation), "--out", "metrics.json"]) == 0
    out = capsys.readouterr().out
    for word in ("accuracy", "precision", "recall", "f1", "(macro)", "confusion matrix"):
        assert word in out
    metrics = json.loads(Path("metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9 and metrics["data"]["rows"] == 40
    assert metrics["labels"] == ["negative", "positive"] and sum(map(sum, metrics["confusion_matrix"])) == 40
    assert {"precision_macro", "recall_macro", "f1_macro"} <= set(metrics)


def test_three_classes_from_json_lines(tiny_model_dir, tmp_path, capsys):
    classes = ("negative", "neutral", "positive")
    texts, labels = make_reviews(180, seed=3, classes=classes)
    with open("train.jsonl", "w") as handle:
        for text, label in zip(texts, labels):
            handle.write(json.dumps({"id": len(text), "review": text, "sentiment": label}) + "\n")
    code = main(["train", "--data", "train.jsonl", "--out", "m3", *_fast(tiny_model_dir, "--epochs", "8")])
    assert code == 0, capsys.readouterr().err
    val_texts, val_labels = make_reviews(30, seed=4, classes=classes)
    pd.DataFrame({"review": val_texts, "sentiment": val_labels}).to_parquet("val.parquet")
    capsys.readouterr()
    assert main(["evaluate", "m3", "--data", "val.parquet", "--out", "m3.json"]) == 0
    metrics = json.loads(Path("m3.json").read_text())
    assert metrics["labels"] == list(classes) and len(metrics["confusion_matrix"]) == 3
    assert metrics["accuracy"] > 0.6  # chance is 1/3
    capsys.readouterr()
    assert main(["predict", "m3", "an average, okay film", "--format", "jsonl"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record["probs"]) == set(classes)


def test_aclimdb_archive_for_evaluate_and_data(trained, tmp_path, capsys):
    archive = _aclimdb_archive(tmp_path)
    assert main(["evaluate", str(trained), "--data", str(archive), "--out", "e.json"]) == 0  # test split
    assert json.loads(Path("e.json").read_text())["data"]["rows"] == 6
    assert main(["evaluate", str(trained), "--data", f"{archive}:train", "--out", "e.json"]) == 0
    assert json.loads(Path("e.json").read_text())["data"]["rows"] == 12
    capsys.readouterr()
    assert main(["data", str(archive), "--model", str(trained)]) == 0
    out = capsys.readouterr().out
    assert "rows      18" in out and "splits    test 6, train 12" in out and "negative 9 (50.0%)" in out
    assert main(["data", f"{archive}:train", "--model", str(trained), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 12 and info["tokens"]["max"] > 5


def test_train_on_an_aclimdb_folder(tiny_model_dir, tmp_path, capsys):
    _aclimdb_archive(tmp_path)
    code = main(
        [
            "train",
            "--data",
            str(tmp_path / "acl-src" / "aclImdb"),
            "--out",
            "mi",
            *_fast(tiny_model_dir, "--epochs", "1"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "mi" / "bertsent.json").read_text())
    assert meta["data"]["train"]["rows"] + meta["data"]["validation"]["rows"] == 12  # the train split only


@pytest.mark.parametrize("fmt", ["table", "jsonl", "csv"])
def test_predict_formats(trained, capsys, fmt):
    texts = ["loved it, superb", "hated it, dull", 'a, "quoted" text']
    assert main(["predict", str(trained), *texts, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "jsonl":
        records = [json.loads(line) for line in out.splitlines()]
        assert [r["text"] for r in records] == texts
        assert all(set(r) == {"text", "label", "probs"} and abs(sum(r["probs"].values()) - 1) < 1e-4 for r in records)
        assert records[0]["label"] == "positive" and records[1]["label"] == "negative"
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert list(rows[0]) == ["text", "label", "p_negative", "p_positive"] and rows[2]["text"] == texts[2]
    else:
        header, *rows = out.splitlines()
        assert header.split() == ["label", "confidence", "text"] and len(rows) == 3
        assert [row.split()[0] for row in rows[:2]] == ["positive", "negative"]
        assert all(0.5 <= float(row.split()[1]) <= 1 for row in rows)
        assert rows[2].endswith('a, "quoted" text')


@pytest.mark.parametrize("name", ["in.csv", "in.tsv", "in.jsonl", "in.parquet", "in.txt"])
def test_predict_reads_texts_from_a_file(trained, tmp_path, capsys, name):
    texts = ["loved it, superb", "hated it, dull", "an ending"]
    frame = pd.DataFrame({"text": texts, "label": ["positive", "", None]})  # gaps in labels do not matter
    if name.endswith(".csv"):
        frame.to_csv(name, index=False)
    elif name.endswith(".tsv"):
        frame.to_csv(name, index=False, sep="\t")
    elif name.endswith(".jsonl"):
        frame.to_json(name, orient="records", lines=True)
    elif name.endswith(".parquet"):
        frame.to_parquet(name)
    else:
        Path(name).write_text("\n".join(texts) + "\n")
    assert main(["predict", str(trained), "--file", name, "--out", "out.jsonl"]) == 0
    assert "3 predictions written to out.jsonl" in capsys.readouterr().err
    records = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == texts


def test_predict_from_stdin_and_out_suffix_picks_the_format(trained, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("loved it, superb\n\nhated it, dull\n"))
    assert main(["predict", str(trained), "--out", "p.csv"]) == 0
    rows = read_csv_rows("p.csv")
    assert [r["text"] for r in rows] == ["loved it, superb", "hated it, dull"]
    assert [r["label"] for r in rows] == ["positive", "negative"]


def test_models_lists_the_packaged_minilm(capsys):
    assert main(["models"]) == 0
    assert "minilm" in capsys.readouterr().out
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["name"] == "minilm" and r["available"] for r in rows)


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().out


def test_a_bug_is_exit_code_1_in_one_line(trained, monkeypatch, capsys):
    import bertsent.prediction.predictor

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.delenv("BERTSENT_DEBUG", raising=False)
    monkeypatch.setattr(bertsent.prediction.predictor.SentimentModel, "predict_records", broken)
    assert main(["predict", str(trained), "hello"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: boom" in err and "BERTSENT_DEBUG" in err


# ----------------------------------------------------------------------------- user errors


def _broken_inputs(root: Path, tiny_model_dir: Path, trained: Path) -> None:
    """Every kind of bad input, in `root`."""
    texts, labels = make_reviews(40)
    good = pd.DataFrame({"text": texts, "label": labels})
    good.to_csv(root / "good.csv", index=False)
    (root / "empty.csv").write_bytes(b"")
    (root / "header.csv").write_text("text,label\n")
    pd.DataFrame({"text": texts, "label": "positive"}).to_csv(root / "one-class.csv", index=False)
    good.assign(text=[""] + texts[1:]).to_csv(root / "empty-text.csv", index=False)
    good.assign(label=labels[:5] + [""] + labels[6:]).to_csv(root / "no-label.csv", index=False)
    (root / "latin1.csv").write_bytes(
        ("text,label\n" + "\n".join(f"{t} café,{y}" for t, y in zip(texts, labels))).encode("latin-1")
    )
    (root / "corrupt.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not really gzip")
    raw = _aclimdb_archive(root / "acl", "aclImdb_v1.tar.xz").read_bytes()
    (root / "truncated.tar.xz").write_bytes(raw[: len(raw) // 2])
    three = make_reviews(12, classes=("negative", "neutral", "positive"))
    pd.DataFrame({"text": three[0], "label": three[1]}).to_csv(root / "three.csv", index=False)
    shutil.copytree(tiny_model_dir, root / "no-weights")
    (root / "no-weights" / "model.safetensors").unlink()
    shutil.copytree(trained, root / "no-tokenizer")
    for name in ("tokenizer.json", "vocab.txt"):
        (root / "no-tokenizer" / name).unlink(missing_ok=True)
    (root / "taken").mkdir()
    (root / "taken" / "keep.txt").write_text("mine")


# What a refused command line is run with besides its row: the row's flags come after, so they win. Train writes
# to a named folder; tune to its default runs/ folder.
BASE_ARGS = {
    "train": ["--out", "out", "--model", "{tiny}", "--epochs", "1", "--quiet"],
    "compare": ["--models", "minilm", "--out", "out", "--quiet"],
    "evaluate": ["--out", "metrics.json"],
    "predict": ["--out", "p.jsonl"],
    "tune": ["--data", "good.csv", "--eval-data", "good.csv", "--model", "{tiny}", "--trials", "2", "--quiet"]
    + ["--lr", "1e-3:1e-2", "--batch-size", "16,32"],  # a search space
}

# TrainConfig's refusals: train and compare both build one from their flags, so both give its messages.
CONFIG_REFUSALS = [
    (["--grad-accum", "0"], "--grad-accum 0: must be at least 1."),
    (["--lr", "abc"], "--lr abc: give a number."),
    (["--max-length", "4"], "--max-length 4: must be at least 8."),
    (["--metric", "auc"], "--metric auc: unknown value"),
    (["--recipe", "slow"], "--recipe slow: unknown recipe"),
    (["--batch-size", "0"], "--batch-size 0: must be at least 1."),
]

# (command and arguments, how the error line starts after "bertsent COMMAND: error: ", then "..." before any
# later part it holds); {root} is the folder _broken_inputs fills, {tiny} the untrained tiny model, {trained} the
# trained one.
REFUSALS = [
    (["train", "--data", "missing.csv"], "missing.csv: no such file or folder"),
    (["train", "--data", "good.csv", "--text-column", "review"], "good.csv: no column 'review' (columns: text, label)"),
    (["train", "--data", "good.csv", "--label-column", "stars"], "good.csv: no column 'stars'"),
    (["train", "--data", "empty.csv"], "empty.csv: the file is empty"),
    (["train", "--data", "header.csv"], "header.csv: the file has no rows"),
    (
        ["train", "--data", "one-class.csv"],
        "one-class.csv: every row has the label 'positive'; training needs at least two",
    ),
    (["train", "--data", "empty-text.csv"], "empty-text.csv: 1 row(s) have an empty or missing text or label (rows 1,"),
    (["train", "--data", "no-label.csv"], "no-label.csv: 1 row(s) have an empty or missing text or label (rows 6,"),
    (["train", "--data", "latin1.csv"], "latin1.csv: line 2 is not valid utf-8"),
    (["train", "--data", "corrupt.tar.gz"], "corrupt.tar.gz: cannot read the archive"),
    (["train", "--data", "truncated.tar.xz"], "truncated.tar.xz: cannot read the archive"),
    (["train", "--data", "good.csv:train"], "good.csv:train: ':train' selects a split"),
    (
        ["train", "--data", "good.csv", "--eval-data", "three.csv"],
        "three.csv: labels 'neutral' do not occur in the training",
    ),
    (
        ["train", "--data", "good.csv", "--model", "{root}/no-weights"],
        "{root}/no-weights: not a complete model folder, missing model weights",
    ),
    (["train", "--data", "good.csv", "--model", "{root}/absent-model"], "{root}/absent-model: no such model folder"),
    (["train", "--data", "good.csv", "--model", "bert-base-uncased"], "model 'bert-base-uncased': not a local folder"),
    (["train", "--data", "good.csv", "--out", "taken"], "taken: already exists. Pass --overwrite"),
    (["train", "--data", "good.csv", "--epochs", "0"], "--epochs 0: must be at least 1"),
    *(([command, *flags], message) for command in ("train", "compare") for flags, message in CONFIG_REFUSALS),
    (["tune", "--lr", "1e-2:1e-3"], "--lr 1e-2:1e-3: the low end must be below the high end"),
    (["tune", "--lr", "0:1e-3"], "--lr 0:1e-3: 0 must be above 0."),
    (["tune", "--epochs", "1.5:3"], "--epochs 1.5:3: 1.5 is not a whole number"),
    (["tune", "--batch-size", "16,big"], "--batch-size 16,big: not numbers"),
    (["tune", "--warmup-ratio", "0:1"], "--warmup-ratio 0:1: 1 must be in [0, 1)."),
    (["tune", "--attention-dropout", "0:0.1:0.2"], "--attention-dropout 0:0.1:0.2: Give LO:HI"),
    (["tune", "--trials", "0"], "--trials 0: give a whole number of at least 1."),
    (["tune", "--storage", "study.db"], "--storage study.db: cannot open it"),
    (["evaluate", "{trained}", "--data", "three.csv"], "three.csv: labels 'neutral' are not among the model's classes"),
    (["evaluate", "{trained}", "--data", "missing.csv"], "missing.csv: no such file or folder"),
    (["evaluate", "{trained}", "--data", "latin1.csv"], "latin1.csv: line 2 is not valid utf-8...--encoding latin-1"),
    (["evaluate", "{trained}", "--data", "corrupt.tar.gz"], "corrupt.tar.gz: cannot read the archive"),
    (["evaluate", "{trained}", "--data", "good.csv", "--text-column", "body"], "good.csv: no column 'body'"),
    (["evaluate", "{root}/absent-model", "--data", "good.csv"], "{root}/absent-model: no such model folder"),
    (
        ["evaluate", "{root}/no-tokenizer", "--data", "good.csv"],
        "{root}/no-tokenizer: not a complete model folder, missing tokenizer files",
    ),
    (
        ["evaluate", "{tiny}", "--data", "good.csv"],
        "{tiny}: has no label names (id2label); it is not a trained classifier",
    ),
    (["predict", "{trained}"], "no texts to label"),
    (["predict", "{trained}", "--file", "missing.csv"], "missing.csv: no such file or folder"),
    (["predict", "{trained}", "--file", "good.csv", "--text-column", "body"], "good.csv: no column 'body'"),
    (["predict", "{trained}", "--file", "empty.csv"], "empty.csv: the file is empty"),
    (["predict", "{trained}", "--file", "latin1.csv"], "latin1.csv: line 2 is not valid utf-8"),
    (["predict", "{root}/absent-model", "hello"], "{root}/absent-model: no such model folder"),
    (
        ["predict", "{root}/no-weights", "hello"],
        "{root}/no-weights: not a complete model folder, missing model weights",
    ),
    (["predict", "bert-base-uncased", "hello"], "bert-base-uncased: no such model folder"),
]


@pytest.mark.parametrize("row,message", REFUSALS, ids=[" ".join(row) for row, _ in REFUSALS])
def test_the_command_line_refuses_in_one_line(tiny_model_dir, trained, tmp_path, capsys, monkeypatch, row, message):
    """Every refusal: exit 2, one line that starts with what is wrong (and holds each part after a '...'), and
    nothing written anywhere."""
    _broken_inputs(tmp_path, tiny_model_dir, trained)
    places = {"{root}": str(tmp_path), "{tiny}": str(tiny_model_dir), "{trained}": str(trained)}

    def fill(text: str) -> str:
        for placeholder, value in places.items():
            text = text.replace(placeholder, value)
        return text

    command, *args = row
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # predict given no texts reads them from stdin
    before = sorted(tmp_path.rglob("*"))
    assert main([fill(a) for a in (command, *BASE_ARGS[command], *args)]) == 2
    start, *later = fill(message).split("...")
    line = one_line_error(capsys, command)
    assert re.match(".*".join(map(re.escape, (f"bertsent {command}: error: {start}", *later))), line), line
    assert sorted(tmp_path.rglob("*")) == before  # no output file or folder, work folder or runs/
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"


def test_drop_invalid_skips_bad_rows_but_not_a_single_class(tiny_model_dir, trained, tmp_path, capsys):
    _broken_inputs(tmp_path, tiny_model_dir, trained)
    assert main(["data", "no-label.csv", "--model", str(trained), "--drop-invalid"]) == 0
    assert "rows      39  (1 invalid rows skipped)" in capsys.readouterr().out
    code = main(["train", "--data", "one-class.csv", "--drop-invalid", "--model", str(tiny_model_dir), "--out", "o"])
    assert code == 2 and "training needs at least two classes" in one_line_error(capsys, "train")
    assert not (tmp_path / "o").exists()


def test_latin1_file_reads_with_encoding(tiny_model_dir, trained, tmp_path, capsys):
    _broken_inputs(tmp_path, tiny_model_dir, trained)
    assert main(["evaluate", str(trained), "--data", "latin1.csv", "--encoding", "latin-1"]) == 0
    assert "40 examples" in capsys.readouterr().out


def test_out_that_is_a_folder(trained, tmp_path, write_csv, capsys):
    (tmp_path / "folder").mkdir()
    data = write_csv(list(zip(VAL_TEXTS, VAL_LABELS)))
    assert main(["predict", str(trained), "hello", "--out", "folder"]) == 2
    assert "--out folder: is a folder; give a file name" in one_line_error(capsys, "predict")
    assert main(["evaluate", str(trained), "--data", str(data), "--out", "folder"]) == 2
    assert "folder/metrics.json" in one_line_error(capsys, "evaluate")
    assert list((tmp_path / "folder").iterdir()) == [] and not list(tmp_path.glob(".folder*"))


def test_data_command_errors(tiny_model_dir, trained, tmp_path, capsys):
    _broken_inputs(tmp_path, tiny_model_dir, trained)
    assert main(["data", "truncated.tar.xz", "--model", str(trained)]) == 2
    assert "truncated.tar.xz: cannot read the archive" in one_line_error(capsys, "data")
    assert main(["data", f"{tmp_path / 'acl' / 'aclImdb_v1.tar.xz'}:dev", "--model", str(trained)]) == 2
    assert "unknown split 'dev'" in one_line_error(capsys, "data")
    assert main(["data", "good.csv", "--model", "no-such-model"]) == 2
    assert "no-such-model" in one_line_error(capsys, "data")


def test_imdb_offline_is_one_line_with_what_to_do(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BERTSENT_IMDB_URL", "http://127.0.0.1:9/aclImdb_v1.tar.gz")
    assert main(["train", "--data", "imdb", "--model", str(tiny_model_dir), "--out", "out", "--quiet"]) == 2
    notice, line = capsys.readouterr().err.strip("\n").splitlines()  # the download is announced, then one error
    assert notice.startswith("imdb: not cached in") and line.startswith("bertsent train: error: ")
    assert "offline?" in line and "--data /path/to/aclImdb_v1.tar.gz" in line
    assert not (tmp_path / "out").exists()


def test_hub_id_without_the_offline_flag_fails_fast(tiny_model_dir, write_csv, monkeypatch, capsys):
    """No HF_HUB_OFFLINE: the Hub is probed briefly instead of a minute of retries."""
    import time

    from huggingface_hub import constants

    from bertsent.modeling import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_HUB_REACHABLE", {})
    texts, labels = make_reviews(20)
    data = write_csv(list(zip(texts, labels)))
    started = time.time()
    code = main(["train", "--data", str(data), "--model", "bertsent-tests/no-such-model", "--out", "out", "--quiet"])
    assert code == 2 and time.time() - started < 30
    notice, line = capsys.readouterr().err.strip("\n").splitlines()  # the download is announced, then one error
    assert notice.startswith("model 'bertsent-tests/no-such-model': a Hugging Face Hub id")
    assert line.startswith("bertsent train: error: ") and "bertsent-tests/no-such-model" in line


def test_texts_after_options_are_texts_and_unknown_options_still_refused(trained, capsys):
    from bertsent.cli import main

    assert main(["predict", str(trained), "--neutral-band", "0.2", "It was fine, I guess.", "loved it"]) == 0
    out = capsys.readouterr().out
    assert "It was fine, I guess." in out and "loved it" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(trained), "--no-such-flag", "text"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{model}", "good film", "--out", "/proc/no/x.csv"],
        ["evaluate", "{model}", "--data", "{data}", "--out", "/proc/no/x.json"],
        ["evaluate", "{model}", "--data", "{data}", "--report", "/proc/no/report"],
        ["train", "--data", "{data}", "--model", "{tiny}", "--out", "/proc/no/model"],
        ["data", "{data}", "--text-column", "text", "--label-column", "text"],
    ],
)
def test_unwritable_outputs_and_one_column_for_both_are_refused_before_any_work(
    command, trained, tiny_model_dir, reviews_csv, capsys
):
    from bertsent.cli import main

    values = {"model": str(trained), "data": str(reviews_csv), "tiny": str(tiny_model_dir)}
    assert main([part.format(**values) for part in command]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("cannot write there" in err[0] or "the label must be another column" in err[0])


def test_every_command_that_loads_a_model_takes_the_loading_flags():
    """Refusals name --allow-pickle and --trust-remote-code (modeling.hub): every command that loads a model (a
    MODEL_DIR, --model or --models) takes them, but `data`, which loads a tokenizer, no weights, and so takes
    --trust-remote-code alone."""
    from bertsent.cli.parser import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    loading = {}
    for name, command in commands.items():
        flags = set(command._option_string_actions)
        if flags & {"--model", "--models"} or any(action.dest == "model_dir" for action in command._actions):
            loading[name] = sorted(flags & {"--allow-pickle", "--trust-remote-code"})
    both = ["--allow-pickle", "--trust-remote-code"]
    trains = ["train", "compare", "tune", "audit"]
    assert loading == {name: both for name in [*trains, "evaluate", "predict", "export", "serve", "explain"]} | {
        "data": ["--trust-remote-code"]
    }
