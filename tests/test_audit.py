"""`bertsent audit`: planted label flips found among the top-ranked rows, the CSV, page and cleaned copy,
and bad --folds refused in one line."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bertsent
from bertsent.cli import main
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.workflows.audit import ISSUE_COLUMNS, AuditResult, check_folds, rank_issues, render_html, write_cleaned

from conftest import make_reviews, read_csv_rows

audit_module = importlib.import_module(
    "bertsent.workflows.audit"
)  # the module: bertsent.workflows.audit is also the function

FLIPPED = [3, 10, 17, 26, 41, 58, 77, 95]  # rows (from 0) whose label is turned around


def _noisy_reviews(n: int = 120):
    texts, labels = make_reviews(n, seed=5)
    noisy = list(labels)
    for i in (i for i in FLIPPED if i < n):
        noisy[i] = "positive" if labels[i] == "negative" else "negative"
    return texts, noisy


def _tiny(tiny_model_dir) -> list[str]:
    return ["--model", str(tiny_model_dir), "--epochs", "6", "--batch-size", "8", "--lr", "5e-3"]


# One audit of 120 rows by 3 models: about 10 s of CPU, shared by the four tests marked slow below.
@pytest.fixture(scope="module")
def audited(tiny_model_dir, tmp_path_factory):
    """One audit through the CLI, of a CSV with an extra column and 8 planted flips, with --drop."""
    folder = tmp_path_factory.mktemp("audit")
    texts, labels = _noisy_reviews()
    data = folder / "reviews.csv"
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": labels})
    frame.to_csv(data, index=False)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["audit", "--data", str(data), "--folds", "3", "--out", str(folder / "out"), "--drop", "--quiet"]
            + _tiny(tiny_model_dir)
            + ["--validation-fraction", "0"]
        )
    assert code == 0, stderr.getvalue()
    return folder, frame, stdout.getvalue()


@pytest.mark.slow
def test_audit_finds_planted_flips(audited):
    folder, _, stdout = audited
    issues = read_csv_rows(folder / "out" / "label_issues.csv")
    rows = [int(r["row"]) - 1 for r in issues]  # the CSV counts data rows from 1
    top = rows[: 2 * len(FLIPPED)]
    found = set(top) & set(FLIPPED)
    assert len(found) >= len(FLIPPED) / 2, (top, FLIPPED)
    assert "label_issues.csv" in stdout and "flagged" in stdout


@pytest.mark.slow
def test_issue_rows_are_right(audited):
    folder, frame, _ = audited
    issues = read_csv_rows(folder / "out" / "label_issues.csv")
    assert tuple(issues[0]) == ISSUE_COLUMNS
    scores = [float(r["score"]) for r in issues]
    assert scores == sorted(scores)  # ranked: least likely right first (self-confidence)
    for r in issues:
        row = frame.iloc[int(r["row"]) - 1]
        assert r["text"] == row["text"] and r["given_label"] == row["label"]
        assert r["suggested_label"] in {"negative", "positive"}
        assert 0.0 <= float(r["score"]) <= 1.0
    flipped_rows = [r for r in issues if int(r["row"]) - 1 in FLIPPED]
    assert flipped_rows and all(r["suggested_label"] != r["given_label"] for r in flipped_rows)


@pytest.mark.slow
def test_drop_writes_the_data_without_exactly_the_flagged_rows(audited):
    folder, frame, _ = audited
    flagged = {int(r["row"]) - 1 for r in read_csv_rows(folder / "out" / "label_issues.csv")}
    cleaned = pd.read_csv(folder / "out" / "reviews.cleaned.csv", dtype=str)
    assert list(cleaned.columns) == ["id", "text", "label"]  # the input's own columns
    kept = [i for i in range(len(frame)) if i not in flagged]
    assert list(cleaned["id"]) == [f"r{i}" for i in kept]
    assert len(cleaned) == len(frame) - len(flagged) > 0


@pytest.mark.slow
def test_page_lists_the_issues(audited):
    folder, _, _ = audited
    page = (folder / "out" / "label_issues.html").read_text()
    issues = read_csv_rows(folder / "out" / "label_issues.csv")
    assert issues[0]["text"] in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # offline, no scripts


def test_page_escapes_text():
    issues = pd.DataFrame(
        {
            "row": [2],
            "text": ["<script>alert(1)</script> & <b>"],
            "given_label": ["<i>neg"],
            "suggested_label": ["pos"],
            "score": [0.01],
        }
    )
    result = AuditResult(issues, np.array([0.9, 0.01]), np.zeros((2, 2)), ["<i>neg", "pos"], ["pos", "<i>neg"], 2, 1.0)
    page = render_html(result)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;b&gt;" in page
    assert "&lt;i&gt;neg" in page and "<i>neg" not in page


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv", ".parquet"])
def test_cleaned_copy_keeps_the_format(tmp_path, suffix):
    frame = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"], "extra": ["1", "2", "3", "4"]})
    source = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        frame.to_json(source, orient="records", lines=True)
    elif suffix == ".tsv":
        frame.to_csv(source, sep="\t", index=False)
    else:
        frame.to_parquet(source, index=False)
    dataset = TextDataset(list(frame["text"]), list(frame["label"]), name=str(source))
    path = write_cleaned(dataset, np.array([1, 2]), tmp_path / "out", source)
    assert path.name == f"in.cleaned{suffix}"
    if suffix == ".jsonl":
        back = pd.read_json(path, lines=True, dtype=str)
    elif suffix == ".tsv":
        back = pd.read_csv(path, sep="\t", dtype=str)
    else:
        back = pd.read_parquet(path)
    assert back.to_dict("records") == [
        {"text": "a", "label": "x", "extra": "1"},
        {"text": "d", "label": "y", "extra": "4"},
    ]


def test_cleaned_copy_of_a_builtin_is_csv(tmp_path):
    dataset = TextDataset(["a", "b", "c"], ["x", "y", "x"], name="rotten-tomatoes:train")
    path = write_cleaned(dataset, np.array([0]), tmp_path, "rotten-tomatoes")
    assert path.name == "rotten-tomatoes.cleaned.csv"
    assert read_csv_rows(path) == [{"text": "b", "label": "y"}, {"text": "c", "label": "x"}]


@pytest.mark.parametrize(
    ("folds", "said"),
    [("1", "--folds 1: give a whole number of at least 2"), ("41", "--folds 41: class 'negative' has only 40 row(s)")],
)
def test_bad_folds_are_refused_in_one_line(write_csv, tiny_model_dir, capsys, folds, said):
    texts, labels = make_reviews(80)
    data = write_csv(list(zip(texts, labels)))
    assert main(["audit", "--data", str(data), "--folds", folds, "--out", "out", *_tiny(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_python_api_returns_ranked_issues_and_drops_them(tiny_model_dir, tmp_path):
    texts, labels = _noisy_reviews(60)
    data = tmp_path / "toy.jsonl"
    frame = pd.DataFrame({"text": texts, "label": labels, "n": range(60)})
    frame.to_json(data, orient="records", lines=True)
    result = bertsent.audit(
        str(data),
        folds=2,
        out=tmp_path / "api",
        drop=True,
        model=str(tiny_model_dir),
        epochs=4,
        batch_size=8,
        lr=5e-3,
        validation_fraction=0,
        progress=False,
        log=lambda *_: None,
    )
    assert list(result.issues.columns) == list(ISSUE_COLUMNS) and len(result) > 0
    assert result.pred_probs.shape == (60, 2) and np.allclose(result.pred_probs.sum(axis=1), 1)
    assert sorted(result.ranking()) == list(range(60))
    written = read_csv_rows(result.csv_path)
    assert [int(r["row"]) for r in written] == list(result.issues["row"])
    cleaned = pd.read_json(result.cleaned_path, lines=True)
    assert result.cleaned_path.name == "toy.cleaned.jsonl"
    assert set(cleaned["n"]) == set(range(60)) - {r - 1 for r in result.issues["row"]}
    assert sorted(p.name for p in (tmp_path / "api").iterdir()) == [
        "label_issues.csv",
        "label_issues.html",
        "toy.cleaned.jsonl",
    ]  # nothing else: the fold models were temporary
    json.dumps(result.issues.to_dict("records"))  # plain values, ready for JSON


# -- too little data, weak fold models, interruptions ------------------------------------------------------


@pytest.mark.parametrize("folds", ["5", "2"])
def test_ten_clean_rows_are_refused_before_any_training(write_csv, tiny_model_dir, capsys, monkeypatch, folds):
    """Once: 6 of 10 clean rows flagged with scores of 0.500, and no warning."""
    monkeypatch.setattr(audit_module, "train", lambda *a, **k: pytest.fail("trained a fold"))
    texts, labels = make_reviews(10)
    data = write_csv(list(zip(texts, labels)))
    assert main(["audit", "--data", str(data), "--folds", folds, "--out", "out", *_tiny(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "class 'negative' has only 5 row(s)" in err and "too few" in err and "Add rows of 'negative'" in err
    assert not (Path("out") / "label_issues.csv").exists()


def test_the_rows_a_fold_needs_are_named():
    check_folds(3, ["a"] * 12 + ["b"] * 12)  # 8 of each to learn from: enough
    with pytest.raises(BertsentError, match=r"only 11 row\(s\).*learns it from 7.*at least 12 with --folds 3"):
        check_folds(3, ["a"] * 11 + ["b"] * 30)


def test_fold_models_no_better_than_the_majority_are_a_warning_on_the_page():
    dataset = TextDataset([f"text {i}" for i in range(12)], ["a"] * 9 + ["b"] * 3, name="toy")
    result = rank_issues(dataset, ["a", "b"], np.full((12, 2), 0.5), folds=3)
    assert result.warnings and "no better than always answering 'a' (0.750)" in result.warnings[0]
    assert "Warning: the fold models" in render_html(result)
    learned = np.array([[0.9, 0.1]] * 9 + [[0.1, 0.9]] * 3)
    assert rank_issues(dataset, ["a", "b"], learned, folds=3).warnings == []


def test_cleanlabs_own_warnings_name_the_class():
    dataset = TextDataset([f"text {i}" for i in range(10)], ["a"] * 9 + ["b"], name="toy")
    probs = np.array([[0.9, 0.1]] * 9 + [[0.2, 0.8]])
    assert rank_issues(dataset, ["a", "b"], probs, folds=2).warnings == [
        "cleanlab: class 'b' has too few rows to flag all its label issues"
    ]


def test_an_interrupted_audit_keeps_its_folds_and_the_same_command_continues(
    write_csv, tiny_model_dir, capsys, monkeypatch
):
    texts, labels = _noisy_reviews(48)
    data = write_csv(list(zip(texts, labels)))
    args = ["audit", "--data", str(data), "--folds", "3", "--quiet", *_tiny(tiny_model_dir), "--epochs", "3"]
    assert main([*args, "--out", "straight"]) == 0
    capsys.readouterr()
    real_train, calls = audit_module.train, []

    def interrupted_in_fold_2(*a, **k):
        calls.append(Path(k["out"]).name)
        if calls == ["fold-1", "fold-2"]:
            raise KeyboardInterrupt
        return real_train(*a, **k)

    monkeypatch.setattr(audit_module, "train", interrupted_in_fold_2)
    assert main([*args, "--out", "cut"]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("bertsent audit: interrupted in fold 2 of 3; fold 1 is kept in cut. Continue with: ")
    assert "train" not in line and "--resume" not in line  # not the training command's message
    command = shlex.split(line.split("Continue with: ")[1])
    kept = json.loads((Path("cut") / "audit_folds.json").read_text())
    assert sorted(kept["folds"]) == ["1"]

    calls.clear()
    assert main(command[1:]) == 0  # the printed command: folds 2 and 3 only
    assert calls == ["fold-2", "fold-3"]
    assert "fold(s) 1 of 3 done" in capsys.readouterr().err
    assert sorted(p.name for p in Path("cut").iterdir()) == ["label_issues.csv", "label_issues.html"]
    straight, resumed = read_csv_rows("straight/label_issues.csv"), read_csv_rows("cut/label_issues.csv")
    assert [r["row"] for r in resumed] == [r["row"] for r in straight]
    assert [float(r["score"]) for r in resumed] == pytest.approx([float(r["score"]) for r in straight], abs=1e-5)


def test_the_folds_of_another_audit_are_refused_or_overwritten(write_csv, tiny_model_dir, capsys, monkeypatch):
    texts, labels = _noisy_reviews(48)
    data = write_csv(list(zip(texts, labels)))
    Path("out").mkdir()
    (Path("out") / "audit_folds.json").write_text(json.dumps({"key": {"folds": 9}, "folds": {}}))
    args = ["audit", "--data", str(data), "--folds", "3", "--out", "out", "--quiet", *_tiny(tiny_model_dir)]
    monkeypatch.setattr(audit_module, "train", lambda *a, **k: pytest.fail("trained a fold"))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted audit of other data or settings" in err
    assert audit_module.FoldRecord(Path("out"), {"folds": 3}, overwrite=True).folds == {}  # started afresh
    same = {"key": {"folds": 9, "classes": ["a", "b"]}, "folds": {"1": {"rows": [0], "probs": [[0.5, 0.5]]}}}
    (Path("out") / "audit_folds.json").write_text(json.dumps(same))
    record = audit_module.FoldRecord(Path("out"), same["key"], overwrite=True)  # the same audit: continued
    assert record.get(1, np.array([0])).tolist() == [[0.5, 0.5]] and record.get(1, np.array([1])) is None


def test_the_folds_bar_counts_kept_folds_and_no_line_breaks_it(monkeypatch):
    bars, lines = [], []

    @contextlib.contextmanager
    def progress_bar(total, desc, enabled=True, unit="rows"):
        bars.append({"total": total, "desc": desc, "steps": []})
        yield bars[-1]["steps"].append

    def fold_probs(dataset, classes, k, folds, train_idx, held_idx, work, settings, progress, log):
        if k == 2 and len(bars) == 1:
            raise KeyboardInterrupt
        return np.full((len(held_idx), 2), 0.5)

    monkeypatch.setattr(audit_module, "progress_bar", progress_bar)
    monkeypatch.setattr(audit_module, "_fold_probs", fold_probs)
    dataset = TextDataset([f"text {i}" for i in range(24)], ["a", "b"] * 12, name="toy")
    record = audit_module.FoldRecord(None, {"classes": ["a", "b"]})
    with pytest.raises(audit_module.AuditInterrupted) as caught:
        audit_module.out_of_fold_probs(dataset, ["a", "b"], 3, 0, {}, True, lines.append, record)
    assert caught.value.fold == 2 and caught.value.done == [1]
    probs = audit_module.out_of_fold_probs(dataset, ["a", "b"], 3, 0, {}, True, lines.append, record)
    assert probs.shape == (24, 2)
    assert bars == [{"total": 3, "desc": "Folds", "steps": [1]}, {"total": 3, "desc": "Folds", "steps": [1, 1, 1]}]
    assert not [line for line in lines if line.startswith("-- fold")]  # the bar says it
