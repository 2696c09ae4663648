"""A trained model folder: what it holds, `bertsent.load(DIR)`, and the same labels from transformers.pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

import bertsent
from bertsent.errors import BertsentError, ModelError

from conftest import make_reviews

VAL_TEXTS, VAL_LABELS = make_reviews(40, seed=2)


def test_the_folder_holds_weights_tokenizer_labels_and_metadata(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "bertsent.json"} <= names
    assert "pytorch_model.bin" not in names and not any(n.endswith(".partial") for n in names)
    config = json.loads((trained / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert config["architectures"] == ["BertForSequenceClassification"]
    meta = json.loads((trained / "bertsent.json").read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["temperature"] > 0
    assert meta["max_length"] <= 128 and meta["truncation"] == "head+tail"


def test_load_predict_and_predict_proba(trained):
    model = bertsent.load(trained)
    assert model.classes_ == ["negative", "positive"]
    probs = model.predict_proba(VAL_TEXTS)
    assert probs.shape == (40, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    predicted = model.predict(VAL_TEXTS)
    assert predicted == [model.classes_[i] for i in probs.argmax(axis=1)]
    assert np.mean(np.array(predicted) == np.array(VAL_LABELS)) >= 0.9
    assert model.predict(["the film was wonderful and superb", "awful, dull and painful"]) == ["positive", "negative"]


def test_transformers_pipeline_loads_the_folder_unchanged_and_agrees(trained):
    from transformers import pipeline

    before = {p.name: p.stat().st_mtime_ns for p in trained.iterdir()}
    classify = pipeline("text-classification", model=str(trained), device="cpu")
    assert [r["label"] for r in classify(VAL_TEXTS)] == bertsent.load(trained).predict(VAL_TEXTS)
    assert {p.name: p.stat().st_mtime_ns for p in trained.iterdir()} == before


def test_order_and_batch_size_do_not_change_the_answer(trained):
    texts = VAL_TEXTS + [" ".join(["long"] * 50 + [t]) for t in VAL_TEXTS[:5]]
    reference = bertsent.load(trained, batch_size=64).predict_proba(texts)
    one_by_one = bertsent.load(trained, batch_size=1).predict_proba(texts)
    reversed_ = bertsent.load(trained, batch_size=7).predict_proba(texts[::-1])[::-1]
    assert np.allclose(reference, one_by_one, atol=1e-5) and np.allclose(reference, reversed_, atol=1e-5)


def test_texts_longer_than_the_model_are_cut_not_refused(trained):
    model = bertsent.load(trained)
    long_text = "the plot was really quite wonderful " * 200
    assert model.predict([long_text]) == ["positive"]


def test_predict_records_and_edge_cases(trained):
    model = bertsent.load(trained)
    (record,) = model.predict_records(["loved it, brilliant"])
    assert set(record) == {"text", "label", "probs"} and set(record["probs"]) == {"negative", "positive"}
    assert record["label"] == max(record["probs"], key=record["probs"].get)
    assert model.predict([]) == [] and model.predict_proba([]).shape == (0, 2)
    with pytest.raises(BertsentError, match=r"a list of texts, not one string"):
        model.predict("one string")


def test_loading_what_is_not_a_trained_model(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        bertsent.load(tmp_path / "nope")
    with pytest.raises(ModelError, match="not a trained classifier"):
        bertsent.load(tiny_model_dir)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "not a JSON object"),
        ('{"temperature": 0}', "temperature 0 is not a positive number"),
        ('{"temperature": "hot"}', "temperature 'hot' is not a positive number"),
        ("{nope", "not valid JSON"),
    ],
)
def test_a_damaged_bertsent_json_is_a_model_error(trained, tmp_path, content, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    (folder / "bertsent.json").write_text(content)
    with pytest.raises(ModelError, match=message):
        bertsent.load(folder)
