"""Baselines and weak-model warnings: the majority class (from the training labels), a uniform guess and TF-IDF +
logistic regression beside the model's scores in `train`, `evaluate`, `compare` and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from bertsent.cli import main
from bertsent.data.sources import TextDataset, read_data, split_validation
from bertsent.errors import BertsentError
from bertsent.evaluation import baselines

from conftest import make_reviews

CLASSES = ["negative", "neutral", "positive"]


def _sklearn_tfidf(train_texts, train_labels, texts, y_true):
    """TF-IDF + logistic regression computed here, directly with scikit-learn."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    classifier = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(train_texts), train_labels)
    predicted = classifier.predict(vectorizer.transform(texts))
    return accuracy_score(y_true, predicted), f1_score(y_true, predicted, average="macro", labels=sorted(set(y_true)))


# -- the numbers --------------------------------------------------------------------------------------


def test_uniform_macro_f1_by_hand():
    # k = 2, prevalences 3/4 and 1/4: F1 = 2p(1/2)/(p+1/2) = 0.6 and 1/3.
    assert baselines.uniform_f1_macro(["a", "a", "a", "b"], ["a", "b"]) == pytest.approx((0.6 + 1 / 3) / 2)
    # a class absent from the data scores 0, as compute_metrics' macro F1 counts it
    assert baselines.uniform_f1_macro(["a", "b"], ["a", "b", "c"]) == pytest.approx(
        2 * (2 * 0.5 / 3 / (0.5 + 1 / 3)) / 3
    )


def test_uniform_macro_f1_matches_a_simulation():
    rng = np.random.default_rng(0)
    y_true = list(rng.choice(CLASSES, size=20_000, p=[0.13, 0.10, 0.77]))
    simulated = [
        f1_score(y_true, list(rng.choice(CLASSES, size=len(y_true))), average="macro", labels=CLASSES)
        for _ in range(10)
    ]
    assert np.mean(simulated) == pytest.approx(baselines.uniform_f1_macro(y_true, CLASSES), abs=0.003)


def test_the_majority_class_comes_from_the_training_labels():
    y_true = ["negative"] * 6 + ["positive"] * 4
    found = baselines.majority_baseline(y_true, ["negative", "positive"], {"negative": 10, "positive": 90})
    assert (found["class"], found["accuracy"], found["from"]) == ("positive", 0.4, baselines.FROM_TRAINING)
    fallback = baselines.majority_baseline(y_true, ["negative", "positive"], None)
    assert (fallback["class"], fallback["accuracy"], fallback["from"]) == ("negative", 0.6, baselines.FROM_EVALUATED)
    assert baselines.majority_class({"a": 5, "b": 5}, ["b", "a"]) == "b"  # a tie: the model's class order


def test_warnings_name_the_baseline_and_what_to_try():
    y_true = ["positive"] * 77 + ["neutral"] * 13 + ["negative"] * 10
    always_neutral = {"accuracy": 0.13, "f1_macro": 0.0767}
    metrics = baselines.add_baselines(always_neutral, y_true, CLASSES, train_counts={"positive": 700, "neutral": 9})
    assert len(metrics["warnings"]) == 2
    assert "majority-class baseline's 0.7700 (always 'positive')" in metrics["warnings"][0]
    assert "uniform random guess" in metrics["warnings"][1]
    assert all("--class-weights" in w and "--metric f1_macro" in w and "epochs" in w for w in metrics["warnings"])
    good = baselines.add_baselines({"accuracy": 0.9, "f1_macro": 0.8}, y_true, CLASSES, train_counts=None)
    assert good["warnings"] == []


def test_the_tfidf_baseline_is_sklearns():
    texts, labels = make_reviews(90, seed=5, classes=tuple(CLASSES))
    test_texts, test_labels = make_reviews(30, seed=6, classes=tuple(CLASSES))
    found = baselines.tfidf_baseline(texts, labels, test_texts, test_labels, CLASSES)
    accuracy, f1 = _sklearn_tfidf(texts, labels, test_texts, test_labels)
    assert (found["accuracy"], found["f1_macro"], found["train_rows"]) == (
        pytest.approx(accuracy),
        pytest.approx(f1),
        90,
    )
    with pytest.raises(BertsentError, match="one class"):
        baselines.tfidf_baseline(texts[:3], ["a"] * 3, test_texts, test_labels, CLASSES)
    with pytest.raises(BertsentError, match="no word occurs in two of the 2 training texts"):
        baselines.tfidf_baseline(["good", "bad"], ["positive", "negative"], test_texts, test_labels, CLASSES)


def test_a_failing_tfidf_baseline_costs_training_nothing(tiny_model_dir, capsys):
    import bertsent

    texts, labels = ["great", "awful", "fine", "dull"], ["positive", "negative", "positive", "negative"]
    said = []
    result = bertsent.train(
        TextDataset(texts, labels, name="four words"),
        TextDataset(texts, labels, name="val"),
        out="model",
        model=str(tiny_model_dir),
        epochs=1,
        baseline="tfidf",
        progress=False,
        report=False,
        log=said.append,
    )
    assert (result.model_dir / "model.safetensors").is_file() and "tfidf" not in result.metrics["baselines"]
    assert any(line.startswith("Warning: no TF-IDF baseline (--baseline tfidf: no word occurs") for line in said)


# -- a model that answers one minority class for everything ----------------------------------------------


@pytest.fixture(scope="module")
def always_neutral(tiny_model_dir, tmp_path_factory):
    """Trained through the command line on texts that say nothing (all alike), the minority class weighted 50x:
    it answers 'neutral' for everything, where 'positive' is 75% of the data."""
    root = tmp_path_factory.mktemp("weak")
    text = "the movie was shown on a tuesday"
    for name, counts in (("train.csv", (10, 10, 60)), ("val.csv", (5, 5, 30))):
        labels = [c for c, n in zip(CLASSES, counts) for _ in range(n)]
        (root / name).write_text("text,label\n" + "".join(f"{text},{y}\n" for y in labels))
    args = ["train", "--data", str(root / "train.csv"), "--eval-data", str(root / "val.csv"), "--out"]
    args += [str(root / "model"), "--model", str(tiny_model_dir), "--epochs", "3", "--batch-size", "16", "--lr", "5e-3"]
    args += ["--class-weights", "1,50,1", "--quiet"]
    return root, args


def test_training_warns_about_a_model_below_the_majority_baseline(always_neutral, capsys, monkeypatch):
    root, args = always_neutral
    monkeypatch.chdir(root)
    assert main(args) == 0
    out = capsys.readouterr().out
    metrics = json.loads((root / "model" / "metrics.json").read_text())
    assert metrics["confusion_matrix"][2] == [0, 30, 0]  # every positive answered "neutral"
    assert metrics["baselines"]["majority"] == {
        "class": "positive",
        "from": baselines.FROM_TRAINING,
        "accuracy": 0.75,
        "f1_macro": pytest.approx(0.2857, abs=1e-4),
    }
    assert len(metrics["warnings"]) == 2
    for warning in metrics["warnings"]:
        assert f"Warning: {warning}" in out
    assert "majority class 'positive'" in out and "uniform random guess" in out
    page = (root / "model" / "report.html").read_text()
    assert "Warning:</b> accuracy 0.1250 is at or below the majority-class baseline" in page
    bertsent_json = json.loads((root / "model" / "bertsent.json").read_text())
    assert bertsent_json["metrics"]["validation"]["warnings"] == metrics["warnings"]


def test_evaluate_warns_in_the_output_metrics_json_and_report(always_neutral, capsys, monkeypatch):
    root, args = always_neutral
    monkeypatch.chdir(root)
    if not (root / "model").exists():
        assert main(args) == 0
    capsys.readouterr()
    code = main(["evaluate", "model", "--data", "val.csv", "--out", "m.json", "--report", "rep"])
    out, err = capsys.readouterr()
    assert code == 0, err
    metrics = json.loads((root / "m.json").read_text())
    assert metrics["accuracy"] == 0.125 and metrics["baselines"]["majority"]["accuracy"] == 0.75
    assert [w.split(" is ")[0] for w in metrics["warnings"]] == ["accuracy 0.1250", "macro F1 0.0741"]
    assert "Warning: accuracy 0.1250 is at or below the majority-class baseline's 0.7500 (always 'positive')" in out
    assert "Warning: macro F1 0.0741 is below a uniform random guess's" in out
    assert json.loads((root / "rep" / "metrics.json").read_text())["warnings"] == metrics["warnings"]
    assert (root / "rep" / "report.html").read_text().count("<p class='warn'>") == 2


def test_a_folder_without_training_counts_falls_back_to_the_evaluated_data(trained, tmp_path):
    import shutil

    import bertsent

    folder = tmp_path / "old"
    shutil.copytree(trained, folder)
    meta = json.loads((folder / "bertsent.json").read_text())
    del meta["data"]
    (folder / "bertsent.json").write_text(json.dumps(meta))
    texts, _ = make_reviews(12, seed=3)
    labels = ["negative"] * 9 + ["positive"] * 3
    metrics = bertsent.evaluate(folder, TextDataset(texts, labels))
    majority = metrics["baselines"]["majority"]
    assert (majority["class"], majority["accuracy"], majority["from"]) == ("negative", 0.75, baselines.FROM_EVALUATED)


def test_a_report_of_predictions_made_elsewhere_has_the_baselines_too(tmp_path):
    from bertsent.evaluation.report import write_report

    y_true = ["positive"] * 8 + ["negative"] * 2
    probs = np.tile([0.9, 0.1], (10, 1))  # always "negative", the minority
    metrics = write_report(tmp_path, texts=["x"] * 10, y_true=y_true, probs=probs, classes=["negative", "positive"])
    assert metrics["baselines"]["majority"]["from"] == baselines.FROM_EVALUATED
    assert json.loads((tmp_path / "metrics.json").read_text())["warnings"] == metrics["warnings"]
    assert len(metrics["warnings"]) == 2 and "Baselines" in (tmp_path / "report.html").read_text()


# -- a good model, and the TF-IDF baseline through the commands ------------------------------------------


def test_a_good_model_gets_no_warning_and_tfidf_beside_it(trained, write_csv, capsys):
    texts, labels = make_reviews(120, seed=1)  # the fixture's training rows, now in a file
    write_csv(list(zip(texts, labels)), "train.csv")
    val_texts, val_labels = make_reviews(40, seed=3)
    write_csv(list(zip(val_texts, val_labels)), "val.csv")
    code = main(["evaluate", str(trained), "--data", "val.csv", "--out", "m.json", "--baseline", "tfidf"])
    assert code == 2  # the folder records its training data as "toy": not a file to read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline tfidf" in err[0] and "--train-data SRC" in err[0]
    args = ["evaluate", str(trained), "--data", "val.csv", "--out", "m.json", "--baseline", "tfidf"]
    assert main([*args, "--train-data", "train.csv"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(Path("m.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["warnings"] == [] and "Warning" not in out
    tfidf = metrics["baselines"]["tfidf"]
    accuracy, f1 = _sklearn_tfidf(texts, labels, val_texts, val_labels)
    assert (tfidf["accuracy"], tfidf["f1_macro"]) == (pytest.approx(accuracy), pytest.approx(f1))
    assert tfidf["same_as_model"] is True and tfidf["train_rows"] == 120
    assert "TF-IDF + logistic regression" in out and "majority class 'negative'" in out  # 60/60: the first class
    assert main(["evaluate", str(trained), "--data", "val.csv", "--train-data", "train.csv"]) == 2
    assert "--baseline tfidf" in capsys.readouterr().err


def test_other_training_data_is_used_as_given_and_said_to_differ(trained):
    import bertsent

    texts, labels = make_reviews(30, seed=9)  # not the 120 rows the model was trained on
    val_texts, val_labels = make_reviews(20, seed=3)
    metrics = bertsent.evaluate(
        trained,
        TextDataset(val_texts, val_labels),
        baseline="tfidf",
        train_data=TextDataset(texts, labels, name="other"),
    )
    tfidf = metrics["baselines"]["tfidf"]
    assert (tfidf["same_as_model"], tfidf["train_rows"], tfidf["train_source"]) == (False, 30, "other")
    assert tfidf["accuracy"] == pytest.approx(_sklearn_tfidf(texts, labels, val_texts, val_labels)[0])
    from bertsent.cli.tables import format_metrics

    assert "TF-IDF + logistic regression (other training data)" in format_metrics(metrics)


def test_compare_and_training_fit_tfidf_on_the_training_split(tiny_model_dir, write_csv, tmp_path, capsys):
    from bertsent.workflows import experiments

    texts, labels = make_reviews(48, seed=4)
    data = write_csv(list(zip(texts, labels)), "train.csv")
    settings = dict(model=str(tiny_model_dir), epochs=1, batch_size=16, validation_fraction=0.25)
    table = experiments.compare(
        [str(tiny_model_dir)],
        str(data),
        out=tmp_path / "cmp",
        baseline="tfidf",
        progress=False,
        log=lambda *_: None,
        **settings,
    )
    train_part, validation = split_validation(read_data(str(data)), 0.25, 42)
    accuracy, f1 = _sklearn_tfidf(train_part.texts, train_part.labels, validation.texts, validation.labels)
    tfidf = table["baselines"]["tfidf"]
    assert (tfidf["accuracy"], tfidf["f1_macro"], tfidf["train_rows"]) == (
        pytest.approx(accuracy),
        pytest.approx(f1),
        36,
    )
    from bertsent.cli.tables import format_compare

    shown = format_compare(table)
    assert "baseline: majority class" in shown and "baseline: TF-IDF + logistic regression" in shown
    assert "warnings" in (tmp_path / "cmp" / "compare.csv").read_text().splitlines()[0]
    # evaluate rebuilds the same training split from the source the folder records
    write_csv(list(zip(validation.texts, validation.labels)), "val.csv")
    assert (
        main(
            ["evaluate", table["models"][0]["model_dir"], "--data", "val.csv", "--out", "m.json", "--baseline", "tfidf"]
        )
        == 0
    )
    again = json.loads(Path("m.json").read_text())["baselines"]["tfidf"]
    assert again["same_as_model"] is True
    assert (again["accuracy"], again["f1_macro"]) == (pytest.approx(accuracy), pytest.approx(f1))


def test_a_baseline_that_does_not_exist_is_one_line(tiny_model_dir, reviews_csv, capsys):
    import bertsent

    with pytest.raises(BertsentError, match="--baseline majority: choose one of tfidf"):
        bertsent.train(str(reviews_csv), baseline="majority", model=str(tiny_model_dir))
    with pytest.raises(SystemExit) as exit_:  # argparse's choices: usage and one error line
        main(["train", "--data", str(reviews_csv), "--baseline", "bow"])
    assert exit_.value.code == 2
