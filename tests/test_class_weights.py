"""--class-weights: the flag's forms and errors, scikit-learn's balanced weights, and the weighted loss: a
weighted run equals a run on the data with the minority repeated (gradients, the logged losses and the
weights after a few full-batch steps), whatever the micro-batches, accumulation or packing."""

from __future__ import annotations

import json
import math

import pytest
import torch

import bertsent
from bertsent.cli import main
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.training import TrainConfig
from bertsent.training.config import class_weights_for, imbalance_note

from conftest import make_reviews

CLASSES = ["negative", "positive"]


# ----------------------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    "given, kept",
    [
        (None, None),
        ("none", None),
        ("None", None),
        ("auto", "auto"),
        ("AUTO", "auto"),
        ("balanced", "auto"),
        ("1,4", (1.0, 4.0)),
        (" 0.5 , 2e0 ,3", (0.5, 2.0, 3.0)),
        ([1, 2.5], (1.0, 2.5)),
        ((2,), (2.0,)),
    ],
)
def test_forms(given, kept):
    assert TrainConfig(class_weights=given).class_weights == kept


@pytest.mark.parametrize(
    "given, words",
    [
        ("1,-2", "'-2' is not a positive number"),
        ("1,0", "'0' is not a positive number"),
        ("1,nan", "'nan' is not a positive number"),
        ("1,inf", "'inf' is not a positive number"),
        ("1,x", "'x' is not a number"),
        ("1,,2", "'' is not a number"),
        ("heavy", "'heavy' is not a number"),
        ([1, True], "True is not a positive number"),
        ([], "not a weight list"),
        (3, "not a weight list"),
    ],
)
def test_bad_weights_are_one_line_errors(given, words):
    with pytest.raises(BertsentError, match=words) as caught:
        TrainConfig(class_weights=given)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--class-weights") and "auto" in message


def test_auto_is_scikit_learns_balanced_and_explicit_counts_are_checked():
    labels = [0] * 8 + [1] * 2 + [2] * 10
    weights = class_weights_for("auto", ["a", "b", "c"], labels)
    assert weights == pytest.approx((20 / (3 * 8), 20 / (3 * 2), 20 / (3 * 10)))
    assert class_weights_for("auto", ["a", "b", "c"], [0, 0, 2]) == pytest.approx((0.75, 1.0, 1.5))  # b absent: 1
    assert class_weights_for((1.0, 3.0), CLASSES, [0, 1]) == (1.0, 3.0)
    assert class_weights_for(None, CLASSES, [0, 1]) is None
    with pytest.raises(BertsentError, match=r"3 weight\(s\) for 2 classes \(negative, positive\)"):
        class_weights_for((1.0, 2.0, 3.0), CLASSES, [0, 1])


def test_the_imbalance_note():
    balanced, skewed = {"negative": 10, "positive": 6}, {"negative": 10, "positive": 4}
    assert imbalance_note(balanced, TrainConfig()) is None
    note = imbalance_note(skewed, TrainConfig())
    assert "positive 4" in note and "--metric f1_macro" in note and "--class-weights auto" in note
    assert "--class-weights" not in imbalance_note(skewed, TrainConfig(class_weights="auto"))
    assert "--metric" not in imbalance_note(skewed, TrainConfig(metric="f1_macro"))
    assert imbalance_note(skewed, TrainConfig(metric="f1_macro", class_weights="auto")) is None


def test_cli_wrong_count_fails_before_training_in_one_line(tiny_model_dir, reviews_csv, tmp_path, capsys):
    for command in (["train", "--model", str(tiny_model_dir)], ["compare", "--models", str(tiny_model_dir)]):
        args = [*command, "--data", str(reviews_csv), "--class-weights", "1,2,3", "--out", "out", "--quiet"]
        assert main(args) == 2
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
        assert "3 weight(s) for 2 classes (negative, positive)" in err
        assert not (tmp_path / "out").exists()
    assert main(["train", "--data", str(reviews_csv), "--class-weights", "1,-1", "--quiet"]) == 2
    assert "'-1' is not a positive number" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the weighted loss


def _imbalanced(minority_copies: int = 1) -> TextDataset:
    """12 positive, 4 negative reviews; each negative one `minority_copies` times."""
    texts, labels = make_reviews(24, seed=5)
    rows = [(t, y) for t, y in zip(texts, labels) if y == "positive"] + [
        (t, y) for t, y in zip(texts, labels) if y == "negative"
    ][:4] * minority_copies
    return TextDataset([t for t, _ in rows], [y for _, y in rows], name=f"toy x{minority_copies}")


def _gradients(model_dir, data: TextDataset, weights, micro: int | None = None) -> list[torch.Tensor]:
    """The gradients one optimizer step over the whole of `data` leaves, through MicroBatches."""
    from bertsent.modeling import hub
    from bertsent.modeling.batching import Collator, EncodedDataset
    from bertsent.modeling.tokens import encode
    from bertsent.runtime import Runtime
    from bertsent.training.microbatch import MicroBatches

    class OneShard:  # one process: its share of a batch is the batch
        lengths = (0,)

        def shard(self, batch):
            return batch

    torch.manual_seed(0)
    tokenizer = hub.load_tokenizer(str(model_dir))
    model = hub.load_classifier(str(model_dir), CLASSES)
    ids = encode(tokenizer, data.texts, 32)
    labels = [CLASSES.index(y) for y in data.labels]
    micro_batches = MicroBatches(
        model,
        EncodedDataset(ids, labels),
        Collator(tokenizer.pad_token_id),
        OneShard(),
        Runtime("cpu", "fp32"),
        micro or len(ids),
        print,
        class_weights=weights,
    )
    loss = micro_batches.step([list(range(len(ids)))])
    return [float(loss)] + [p.grad.clone() for p in micro_batches.parameters]


def test_weighted_gradients_equal_the_repeated_minoritys(no_dropout_dir):
    weighted = _gradients(no_dropout_dir, _imbalanced(1), (2.0, 1.0))
    repeated = _gradients(no_dropout_dir, _imbalanced(2), None)
    plain = _gradients(no_dropout_dir, _imbalanced(1), None)
    in_pieces = _gradients(no_dropout_dir, _imbalanced(1), (2.0, 1.0), micro=3)  # 16 rows in 6 micro-batches
    assert weighted[0] == pytest.approx(repeated[0], rel=1e-5)
    for w, r, m in zip(weighted[1:], repeated[1:], in_pieces[1:]):
        torch.testing.assert_close(w, r, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(m, w, rtol=1e-4, atol=1e-7)
    # the test can tell weights from none: the plain run's gradients differ (its loss is near ln 2 either way)
    assert max(float((w - p).abs().max()) for w, p in zip(weighted[1:], plain[1:])) > 1e-4


def _run(model_dir, data: TextDataset, out, **settings):
    """Three full-batch optimizer steps, no validation; the logged losses and the trained weights."""
    from safetensors.torch import load_file

    settings = (
        dict(epochs=3, batch_size=64, lr=1e-3, max_length=32, warmup_ratio=0.0, validation_fraction=0.0) | settings
    )
    result = bertsent.train(
        data, out=out, model=str(model_dir), progress=False, report=False, log=lambda *_: None, **settings
    )
    losses = [json.loads(line)["loss"] for line in (result.model_dir / "metrics.jsonl").read_text().splitlines()]
    return losses, load_file(result.model_dir / "model.safetensors"), result


def test_a_weighted_run_equals_a_run_with_the_minority_repeated(no_dropout_dir, tmp_path):
    weighted, weights_w, result = _run(no_dropout_dir, _imbalanced(1), tmp_path / "w", class_weights="2,1")
    repeated, weights_r, _ = _run(no_dropout_dir, _imbalanced(2), tmp_path / "r")
    plain, weights_p, _ = _run(no_dropout_dir, _imbalanced(1), tmp_path / "p")
    accumulated, weights_a, _ = _run(
        no_dropout_dir, _imbalanced(1), tmp_path / "a", class_weights="2,1", batch_size=8, grad_accum=2,
        micro_batch_size=3,
    )  # fmt: skip
    packed, weights_k, _ = _run(no_dropout_dir, _imbalanced(1), tmp_path / "k", class_weights="2,1", packing=True)
    assert len(weighted) == 3
    assert weighted == pytest.approx(repeated, abs=2e-5)
    assert accumulated == pytest.approx(weighted, abs=2e-5) and packed == pytest.approx(weighted, abs=1e-4)
    assert plain != pytest.approx(repeated, abs=1e-3)
    for name, tensor in weights_w.items():
        torch.testing.assert_close(tensor, weights_r[name], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(weights_a[name], tensor, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(weights_k[name], tensor, rtol=1e-3, atol=1e-4)
    assert max(float((weights_w[n] - weights_p[n]).abs().max()) for n in weights_w) > 1e-4
    meta = json.loads((result.model_dir / "bertsent.json").read_text())
    assert meta["settings"]["class_weights"] == [2.0, 1.0]


def test_auto_weights_are_recorded_logged_and_shown_in_the_report(tiny_model_dir, tmp_path):
    data = _imbalanced(1)
    val_texts, val_labels = make_reviews(12, seed=9)
    logs = []
    result = bertsent.train(
        data,
        TextDataset(val_texts, val_labels, name="val"),
        out=tmp_path / "m",
        model=str(tiny_model_dir),
        epochs=1,
        batch_size=8,
        class_weights="auto",
        progress=False,
        log=logs.append,
    )
    meta = json.loads((result.model_dir / "bertsent.json").read_text())
    assert meta["settings"]["class_weights"] == pytest.approx([2.0, 2 / 3])  # 16 / (2 x 4), 16 / (2 x 12)
    assert "Class weights (auto: balanced): negative 2, positive 0.667" in logs
    assert any(line.startswith("Note: the classes are imbalanced") and "--metric f1_macro" in line for line in logs)
    assert not any("--class-weights auto" in line for line in logs)  # already given
    report = (result.model_dir / "report.html").read_text()
    assert "class weights: negative 2, positive 0.667" in report
    metrics = json.loads((result.model_dir / "metrics.json").read_text())
    assert set(metrics["per_class"]["negative"]) >= {"recall", "f1"}
    assert math.isfinite(metrics["per_class"]["negative"]["recall"])


def test_the_scikit_learn_estimator_takes_class_weights(tiny_model_dir):
    from sklearn.base import clone

    texts, labels = make_reviews(24, seed=3)
    clf = bertsent.SentimentClassifier(model=str(tiny_model_dir), epochs=1, batch_size=8, class_weights="1,3")
    assert clone(clf).get_params()["class_weights"] == "1,3"
    logs = []
    clf.fit(texts, labels, log=logs.append)
    assert "Class weights (given): negative 1, positive 3" in logs
