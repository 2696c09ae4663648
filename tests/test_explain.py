"""Word attributions: on a model built so that one word decides the label, that word gets the largest score;
words come back whole from their sub-word pieces; `bertsent explain`; the reports' shaded mistakes."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

import bertsent
from bertsent.cli import main
from bertsent.errors import BertsentError
from bertsent.evaluation.explain import (
    DEFAULT_STEPS,
    MAX_AUTO_STEPS,
    auto_steps,
    explain,
    explanations_page,
    shaded_html,
)

from conftest import FILLER, train_toy

DECIDES = {"positive": "zorbly", "negative": "blorfy", "neutral": None}  # made-up words: split into pieces


def decided(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Filler words, and "zorbly" in every positive text, "blorfy" in every negative one, neither in a neutral."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = ("negative", "positive", "neutral")[i % 3]
        words = rng.sample(FILLER, rng.randint(3, 8))
        if DECIDES[label]:
            words.insert(rng.randint(0, len(words)), DECIDES[label])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="module")
def decider(tiny_model_dir, tmp_path_factory):
    """The tiny BERT trained on `decided` texts. Three validation labels are wrong on purpose, so that the
    training report has confident mistakes to explain."""
    val_texts, val_labels = decided(30, seed=2)
    for i in (0, 1, 2):
        val_labels[i] = {"negative": "positive", "positive": "neutral", "neutral": "negative"}[val_labels[i]]
    out = tmp_path_factory.mktemp("decider") / "model"
    train_toy(tiny_model_dir, out, decided(240, seed=1), (val_texts, val_labels), name="decided", epochs=8, report=True)
    return out


@pytest.fixture(scope="module")
def model(decider):
    return bertsent.load(decider)


def test_the_deciding_word_gets_the_largest_score(model):
    texts = ["the movie zorbly was really quite", "blorfy plot and the ending", "the acting story zorbly cast"]
    found = model.explain(texts)
    for text, x in zip(texts, found):
        word = "zorbly" if "zorbly" in text else "blorfy"
        assert x.label == ("positive" if word == "zorbly" else "negative")
        assert x.target == x.label
        scores = dict(zip(x.words, x.scores))
        assert max(x.words, key=lambda w: abs(scores[w])) == word, scores
        assert scores[word] > 0  # it pushed towards the predicted label
        assert x.probs[x.label] == pytest.approx(model.predict_proba([text])[0].max(), abs=1e-5)
        assert np.isfinite(x.delta)


def test_another_target_turns_the_deciding_word_against_it(model):
    (x,) = model.explain(["the movie zorbly was really quite"], target="negative")
    assert x.label == "positive" and x.target == "negative"
    scores = dict(zip(x.words, x.scores))
    assert min(x.words, key=lambda w: scores[w]) == "zorbly" and scores["zorbly"] < 0
    per_text = model.explain(["zorbly film", "blorfy film"], target=["neutral", None])
    assert [x.target for x in per_text] == ["neutral", "negative"]


def test_words_come_back_whole_with_their_place_in_the_text(model):
    text = "Zorbly  plot, don't! the ending"
    (x,) = model.explain([text])
    assert x.words == ["Zorbly", "plot,", "don't!", "the", "ending"]  # pieces and punctuation joined
    assert [text[a:b] for a, b in x.offsets] == x.words
    assert x.tokens == len(model.tokenizer(text)["input_ids"]) and not x.truncated
    assert x.n_steps == auto_steps(x.tokens)
    record = x.as_dict()
    assert json.loads(json.dumps(record))["offsets"][0] == [0, 6]
    assert {"text", "words", "scores", "label", "target", "probs", "delta"} <= set(record)


def test_steps_by_length():
    assert auto_steps(200) == auto_steps(512) == DEFAULT_STEPS
    assert auto_steps(100) == 2 * DEFAULT_STEPS
    assert auto_steps(5) == MAX_AUTO_STEPS


def test_more_steps_converge(model):
    text = ["the movie zorbly was really quite"]
    coarse = model.explain(text, n_steps=4)[0]
    fine = model.explain(text, n_steps=64)[0]
    assert abs(fine.delta) <= abs(coarse.delta) + 1e-6
    assert fine.strongest(1)[0][0] == "zorbly"


def test_a_long_text_is_explained_on_its_first_max_length_tokens(model):
    text = "zorbly " + "the movie " * 100
    (x,) = model.explain([text])
    assert x.truncated and x.tokens == model.max_length
    assert x.words[0] == "zorbly" and len(x.words) < 201
    assert shaded_html(x).endswith("the movie ")  # the rest of the text, unshaded


def test_explain_bound_to_a_torch_model_and_tokenizer(model):
    """The function the report and the server use: a PyTorch model and tokenizer, no SentimentModel."""
    (x,) = explain(model.model, model.tokenizer, ["blorfy film"], max_length=32)
    assert x.label == "negative" and x.strongest(1)[0][0] == "blorfy"
    assert model.model.training is False


def test_bad_calls_say_what_to_do(model, monkeypatch):
    with pytest.raises(BertsentError, match="list of texts"):
        model.explain("one string")
    with pytest.raises(BertsentError, match="--target happy: the model's labels are"):
        model.explain(["a"], target="happy")
    with pytest.raises(BertsentError, match="2 labels for 1 texts"):
        model.explain(["a"], target=["positive", "negative"])
    with pytest.raises(BertsentError, match="--steps 0"):
        model.explain(["a"], n_steps=0)
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(BertsentError, match=r"pip install 'bertsent\[explain\]'"):
        model.explain(["a"])


def test_shaded_page_is_self_contained_and_escapes_the_text(model, tmp_path):
    (x,) = model.explain(["<b>zorbly</b> & plot"])
    page = explanations_page([x], title="t")
    assert "&lt;b&gt;zorbly&lt;/b&gt;" in page and "<b>zorbly" not in page
    assert "rgba(22,128,61," in page  # the strongest word, shaded towards the label
    assert "http" not in page and "<script" not in page


# -- the command line ----------------------------------------------------------------------------


def test_cli_explain_text_jsonl_and_html(decider, tmp_path, capsys):
    assert main(["explain", str(decider), "the movie zorbly was really quite", "blorfy plot"]) == 0
    out = capsys.readouterr().out
    first, second = out.strip().split("\n\n")
    assert first.startswith("positive (") and "[+zorbly]" in first
    assert "strongest: zorbly +" in first
    assert second.startswith("negative (") and "[+blorfy]" in second

    page = tmp_path / "why.html"
    code = main(["explain", str(decider), "zorbly film", "--format", "jsonl", "--html", str(page), "--steps", "8"])
    assert code == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["words"] == ["zorbly", "film"] and record["label"] == "positive"
    assert "Shaded words written to" in captured.err
    assert "<span class='w'" in page.read_text() and not list(tmp_path.glob(".why.html*"))

    assert main(["explain", str(decider), "zorbly film", "--target", "negative", "--top", "1"]) == 0
    out = capsys.readouterr().out
    assert "words for negative" in out and "[-zorbly]" in out and "strongest: zorbly -" in out


def test_cli_explain_errors_are_one_line(decider, tmp_path, capsys, monkeypatch):
    assert main(["explain", str(decider), "a", "--target", "happy"]) == 2
    assert "the model's labels are" in capsys.readouterr().err
    assert main(["explain", str(decider), "a", "--html", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    assert main(["explain", str(decider), "a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'bertsent[explain]'" in err


def test_cli_help_states_the_default_steps(capsys):
    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    assert f"(default {DEFAULT_STEPS} for a text of 200 tokens" in " ".join(capsys.readouterr().out.split())


# -- reports -------------------------------------------------------------------------------------


def test_training_report_shades_its_most_confident_mistakes(decider):
    page = (decider / "report.html").read_text()
    assert "Why the most confident mistakes" in page
    section = page.split("Why the most confident mistakes")[1]
    assert section.count("<article>") == 3 and "<span class='w'" in section
    assert "zorbly" in section or "blorfy" in section


def test_evaluation_report_shades_mistakes_and_survives_a_missing_captum(decider, tmp_path, monkeypatch):
    from bertsent.data.sources import TextDataset

    texts, labels = decided(12, seed=7)
    swapped = [{"positive": "negative", "negative": "positive"}.get(label, label) for label in labels]
    data = TextDataset(texts, swapped, name="swapped")
    bertsent.evaluate(decider, data, report=tmp_path / "report")
    section = (tmp_path / "report" / "report.html").read_text().split("Why the most confident mistakes")[1]
    assert section.count("<article>") == 3
    assert "true label <b>negative</b>" in section or "true label <b>positive</b>" in section

    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    bertsent.evaluate(decider, data, report=tmp_path / "again")
    page = (tmp_path / "again" / "report.html").read_text()
    assert "No word attributions" in page and "pip install &#x27;bertsent[explain]&#x27;" in page
