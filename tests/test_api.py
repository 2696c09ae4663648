"""The Python API: train and evaluate on sources, and the scikit-learn style SentimentClassifier."""

import datetime
import json

import numpy as np
import pytest

import bertsent

from conftest import make_reviews

FAST = dict(epochs=6, batch_size=16, lr=5e-3)


def test_train_and_evaluate_from_files(tiny_model_dir, write_csv, tmp_path):
    texts, labels = make_reviews(160, seed=1)
    data = write_csv(list(zip(texts, labels)), "train.csv")
    test_texts, test_labels = make_reviews(40, seed=9)
    test = write_csv(list(zip(test_texts, test_labels)), "test.csv")
    result = bertsent.train(
        str(data), out=tmp_path / "m", model=str(tiny_model_dir), progress=False, log=lambda *_: None, **FAST
    )
    meta = json.loads((tmp_path / "m" / "bertsent.json").read_text())
    assert meta["data"]["train"]["rows"] + meta["data"]["validation"]["rows"] == 160  # a 10% validation split
    assert result.metrics["accuracy"] >= 0.9
    metrics = bertsent.evaluate(tmp_path / "m", str(test), out=tmp_path / "test.json")
    assert metrics["accuracy"] >= 0.9 and metrics["n"] == 40
    assert json.loads((tmp_path / "test.json").read_text())["accuracy"] == metrics["accuracy"]


def test_default_out_dir_and_latest_link(tiny_model_dir, write_csv, tmp_path):
    texts, labels = make_reviews(64, seed=1)
    data = write_csv(list(zip(texts, labels)), "reviews.csv")
    result = bertsent.train(
        str(data), model=str(tiny_model_dir), epochs=1, progress=False, log=lambda *_: None, report=False
    )
    assert result.model_dir.parent.name == "runs" and "reviews" in result.model_dir.name
    assert (tmp_path / "runs" / "latest").resolve() == result.model_dir.resolve()


def test_sentiment_classifier_fit_predict_save(tiny_model_dir, tmp_path):
    texts, labels = make_reviews(160, seed=1)
    val_texts, val_labels = make_reviews(40, seed=2)
    clf = bertsent.SentimentClassifier(model=str(tiny_model_dir), report=False, **FAST)
    with pytest.raises(bertsent.BertsentError, match="not fitted"):
        clf.predict(["loved it"])
    clf.fit(texts, labels, val_texts, val_labels, log=lambda *_: None)
    assert clf.classes_ == ["negative", "positive"]
    assert np.mean(np.array(clf.predict(val_texts)) == np.array(val_labels)) >= 0.9
    probs = clf.predict_proba(val_texts[:3])
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    saved = clf.save(tmp_path / "saved")
    assert bertsent.load(saved).predict(val_texts[:5]) == clf.predict(val_texts[:5])


def test_predict_refuses_a_bare_string(tiny_model_dir, tmp_path):
    texts, labels = make_reviews(32, seed=1)
    clf = bertsent.SentimentClassifier(model=str(tiny_model_dir), epochs=1, report=False)
    clf.fit(texts, labels, log=lambda *_: None)
    with pytest.raises(bertsent.BertsentError, match=r"predict\(\[text\]\)"):
        clf.predict("one string")


def test_dropped_rows_are_recorded_in_the_model_folder(tiny_model_dir, write_csv, tmp_path):
    texts, labels = make_reviews(64, seed=1)
    rows = list(zip(texts, labels)) + [("", "positive"), ("a fine film", "")]
    data = write_csv(rows, "gaps.csv")
    bertsent.train(
        str(data),
        out=tmp_path / "m",
        model=str(tiny_model_dir),
        epochs=1,
        drop_invalid=True,
        progress=False,
        log=lambda *_: None,
        report=False,
    )
    meta = json.loads((tmp_path / "m" / "bertsent.json").read_text())
    assert meta["data"]["train"]["dropped"] == 2
    assert meta["data"]["train"]["rows"] + meta["data"]["validation"]["rows"] == 64


def test_sentiment_classifier_works_with_scikit_learn_tools(tiny_model_dir, tmp_path, monkeypatch):
    from sklearn.base import clone

    clf = bertsent.SentimentClassifier(model=str(tiny_model_dir), epochs=6, batch_size=16, lr=5e-3)
    params = clf.get_params()
    assert params["epochs"] == 6 and params["lr"] == 5e-3 and params["out"] is None and params["seed"] == 42
    twin = clone(clf).set_params(epochs=1, seed=7)
    assert (twin.epochs, twin.seed, clf.epochs, clf.seed) == (1, 7, 6, 42)
    assert not hasattr(twin, "classes_")  # not fitted: an AttributeError, as scikit-learn expects

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))  # where temporary folders would be left
    (tmp_path / "tmp").mkdir()
    texts, labels = make_reviews(160, seed=1)
    val_texts, val_labels = make_reviews(40, seed=2)
    clf.fit(texts, labels, log=lambda *_: None)
    assert list((tmp_path / "tmp").iterdir()) == []  # the model lives in memory; no folder left behind
    assert clf.score(val_texts, val_labels) >= 0.9  # ClassifierMixin.score: accuracy of predict
    saved = clf.save(tmp_path / "saved")
    assert bertsent.load(saved).predict(val_texts) == clf.predict(val_texts)
    assert bertsent.load(saved).temperature == clf.model_.temperature != 1.0
    with pytest.raises(bertsent.BertsentError, match="--epochs 0"):
        clone(clf).set_params(epochs=0).fit(texts, labels, log=lambda *_: None)


def test_runs_started_within_one_second_get_folders_of_their_own(tmp_path, monkeypatch):
    """Two trainings without --out in the same second (a script, a docs page) must not collide."""
    from bertsent.files import partial_folder
    from bertsent.workflows import run

    monkeypatch.chdir(tmp_path)

    class Frozen(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 12, 4, 21, 54, 46)

    monkeypatch.setattr(run, "datetime", Frozen)  # one second for all three
    first = run.default_out_dir("minilm", "reviews.csv")
    first.mkdir(parents=True)
    second = run.default_out_dir("minilm", "reviews.csv")
    partial_folder(second).mkdir(parents=True)  # a run still in progress holds its name too
    third = run.default_out_dir("minilm", "reviews.csv")
    assert len({first, second, third}) == 3 and third.name == first.name + "-3"
