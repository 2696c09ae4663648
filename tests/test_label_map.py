"""--label-map: each form (ranges of values, =drop, bare entries, dicts, numbers by value), each malformed map
and unknown labels as one-line errors, and the map applied where labels are read (train, evaluate, data,
compare, export's data)."""

from __future__ import annotations

import json

import pytest

import bertsent
from bertsent.cli import main
from bertsent.data.labels import label_key, parse_label_map, relabel
from bertsent.data.sources import TextDataset, read_data
from bertsent.errors import DataError

from conftest import make_reviews

STARS = "1,2=negative;3=neutral;4,5=positive"


def _stars(n: int = 10) -> TextDataset:
    return TextDataset([f"review {i}" for i in range(n)], [str(1 + i % 5) for i in range(n)], name="stars")


def test_star_ranges_map_to_classes_and_record_the_counts_before():
    mapped = relabel(_stars(), STARS)
    assert mapped.labels == ["negative", "negative", "neutral", "positive", "positive"] * 2
    assert mapped.texts == _stars().texts
    assert mapped.meta["label_map"] == {
        "map": STARS,
        "before": {"1": 2, "2": 2, "3": 2, "4": 2, "5": 2},
        "dropped_rows": 0,
    }
    assert mapped.label_counts() == {"negative": 4, "neutral": 2, "positive": 4}  # sentiment order


def test_drop_leaves_the_rows_out_and_keeps_texts_with_their_labels():
    mapped = relabel(_stars(), "1,2=negative;3=drop;4,5=positive")
    assert len(mapped) == 8 and mapped.meta["label_map"]["dropped_rows"] == 2
    assert "review 2" not in mapped.texts and "review 7" not in mapped.texts
    assert dict(zip(mapped.texts, mapped.labels))["review 4"] == "positive"
    assert relabel(_stars(), "1,2=negative;3=DROP;4,5=positive").labels == mapped.labels  # any case


def test_bare_entries_keep_their_values():
    data = TextDataset(["a", "b", "c", "d"], ["negative", "neutral", "positive", "neutral"], name="three")
    mapped = relabel(data, "neutral=drop;negative,positive")
    assert mapped.texts == ["a", "c"] and mapped.labels == ["negative", "positive"]


def test_a_dict_with_numbers_tuples_and_none():
    by_dict = relabel(_stars(), {(1, 2): "negative", 3: None, "4": "positive", 5.0: "positive"})
    assert by_dict.labels == relabel(_stars(), "1,2=negative;3=drop;4,5=positive").labels
    assert relabel(_stars(), {1: 0, 2: 0, 3: "drop", 4: 1, 5: 1}).labels[:2] == ["0", "0"]  # int classes as text


def test_numbers_match_by_value(write_csv, tmp_path):
    assert label_key(4) == label_key(4.0) == label_key("4.0") == label_key(" 4 ") == "4"
    assert label_key(4.5) == label_key("4.50") == "4.5"
    assert label_key("positive ") == "positive"
    # star ratings written as floats in JSON Lines (4.0) and as text in a CSV ("4.0") map alike
    lines = [json.dumps({"text": f"t{i}", "label": float(1 + i % 5)}) for i in range(10)]
    (tmp_path / "stars.jsonl").write_text("\n".join(lines) + "\n")
    from_json = relabel(read_data(tmp_path / "stars.jsonl"), STARS)
    path = write_csv([(f"t{i}", f"{1 + i % 5}.0") for i in range(10)], "stars.csv")
    from_csv = relabel(read_data(path), STARS)
    assert from_json.labels == from_csv.labels == relabel(_stars(), STARS).labels
    half_stars = TextDataset(["a", "b"], ["4.5", "1"], name="half")
    assert relabel(half_stars, "4.5=positive;1.0=negative").labels == ["positive", "negative"]


def test_unknown_labels_are_one_line_naming_a_few_and_what_to_do():
    with pytest.raises(DataError) as caught:
        relabel(_stars(), "1,2=negative;4,5=positive")
    message = str(caught.value)
    assert "\n" not in message
    assert "'3'" in message and "(2 row(s))" in message and "=drop" in message and "Add them to the map" in message
    many = TextDataset([str(i) for i in range(9)], [f"c{i}" for i in range(9)], name="many")
    with pytest.raises(DataError, match=r"'c1', 'c2', 'c3', 'c4', 'c5' and 3 more"):
        relabel(many, "c0=x")


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", "is empty"),
        (" ; ;", "is empty"),
        ("1=negative=bad", "more than one '='"),
        ("=negative", "an empty value"),
        ("1,,2=negative", "an empty value"),
        ("1,2=", "names no class"),
        ("1=negative;1.0=positive", "mapped twice"),
        (["1=negative"], "give text like"),
        ({1: ["a"]}, "is not a class name"),
        ({1: True}, "is not a class name"),
    ],
)
def test_malformed_maps_are_one_line_errors(spec, words):
    with pytest.raises(DataError, match=words) as caught:
        parse_label_map(spec)
    assert "\n" not in str(caught.value)


def test_a_colon_works_as_an_equals_sign():
    """Once a puzzling error: '1,2:negative' was read as the bare values '1' and '2:negative'."""
    colon = relabel(_stars(), "1,2:negative; 3:drop; 4,5:positive")
    assert colon.labels == relabel(_stars(), "1,2=negative;3=drop;4,5=positive").labels
    assert relabel(_stars(), "1,2:negative;3=neutral;4,5:positive").label_counts()["neutral"] == 2


def test_entries_joined_by_commas_with_colons_name_the_colon():
    with pytest.raises(DataError, match="more than one ':'. Write entries like 1,2=negative"):
        parse_label_map("1:negative,2:negative")


@pytest.mark.parametrize(
    ("spec", "pair"),
    [
        ("1,2=negative;3=neutral;4=positive;5=postive", "'positive' and 'postive'"),
        ("1=negative;2=Negative", "'Negative' and 'negative'"),
        ("1=negatvie;2=negative", "'negative' and 'negatvie'"),
        ("1=neutral;2=neutrals", "'neutral' and 'neutrals'"),
        ({1: "positive", 2: "positiv"}, "'positiv' and 'positive'"),
    ],
)
def test_a_class_one_slip_from_another_names_both(spec, pair):
    """Once silent: 'postive' became a class of its own."""
    with pytest.raises(DataError, match="differ by one letter or in case only") as caught:
        parse_label_map(spec)
    assert pair in str(caught.value)


@pytest.mark.parametrize("spec", ["1=label_0;2=label_1", "1=4star;2=5star", "1=pos;2=pas", "1,2=0;3=1", STARS])
def test_numbered_short_and_distinct_classes_are_fine(spec):
    assert parse_label_map(spec) is not None


def test_a_map_that_drops_everything_is_refused():
    with pytest.raises(DataError, match="drops every row"):
        relabel(_stars(), "1,2,3,4,5=drop")


def test_the_same_value_twice_to_the_same_class_is_fine_and_no_map_changes_nothing():
    assert relabel(_stars(), "1,2=negative;2=negative;3,4,5=positive").labels[:2] == ["negative", "negative"]
    data = _stars()
    assert relabel(data, None) is data


# ----------------------------------------------------------------------------- where labels are read


def test_data_command_shows_counts_before_and_after(tiny_model_dir, write_csv, capsys):
    path = write_csv([(f"review {i}", 1 + i % 5) for i in range(10)], "stars.csv")
    assert (
        main(["data", str(path), "--model", str(tiny_model_dir), "--label-map", "1,2=negative;3=drop;4,5=positive"])
        == 0
    )
    out = capsys.readouterr().out
    assert "label map 1,2=negative;3=drop;4,5=positive  (2 rows dropped)" in out
    assert "before    1 2 (20.0%), 2 2 (20.0%), 3 2 (20.0%), 4 2 (20.0%), 5 2 (20.0%)" in out
    assert "after     negative 4 (50.0%), positive 4 (50.0%)" in out
    assert main(["data", str(path), "--model", str(tiny_model_dir), "--json", "--label-map", STARS]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] == {"negative": 4, "neutral": 2, "positive": 4}
    assert info["label_map"]["before"]["3"] == 2 and info["rows"] == 10


@pytest.mark.parametrize("spec", ["1,2=negative;4,5=positive", "1=a=b"])
def test_data_command_errors_are_one_line(tiny_model_dir, write_csv, capsys, spec):
    path = write_csv([(f"review {i}", 1 + i % 5) for i in range(10)], "stars.csv")
    assert main(["data", str(path), "--model", str(tiny_model_dir), "--label-map", spec]) == 2
    _, err = capsys.readouterr()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "--label-map" in err


def _star_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """make_reviews' texts with star ratings: negative ones 1 or 2 stars, positive ones 4 or 5, and some 3s."""
    texts, labels = make_reviews(n, seed=seed)
    rows = [(t, (1 + i % 2) if y == "negative" else (4 + i % 2)) for i, (t, y) in enumerate(zip(texts, labels))]
    return rows + [(f"so-so {i}", 3) for i in range(6)]


def test_train_and_evaluate_with_a_map(tiny_model_dir, write_csv, tmp_path, capsys):
    train = write_csv(_star_rows(80, 1), "train.csv")
    test = write_csv(_star_rows(30, 2), "test.csv")
    spec = "1,2=negative;3=drop;4,5=positive"
    logs = []
    result = bertsent.train(
        str(train),
        str(test),
        out=tmp_path / "model",
        label_map=spec,
        model=str(tiny_model_dir),
        epochs=1,
        batch_size=16,
        progress=False,
        report=False,
        log=logs.append,
    )
    meta = json.loads((result.model_dir / "bertsent.json").read_text())
    assert meta["labels"] == ["negative", "positive"]
    assert meta["data"]["train"]["rows"] == 80 and meta["data"]["validation"]["rows"] == 30
    assert any("label map" in line and "6 row(s) dropped" in line for line in logs)
    metrics = bertsent.evaluate(result.model_dir, str(test), label_map=spec)
    assert metrics["n"] == 30 and metrics["data"]["label_map"]["dropped_rows"] == 6
    with pytest.raises(DataError, match="does not cover"):  # without the map the data's 1..5 are not classes
        bertsent.evaluate(result.model_dir, str(test), label_map="1,2=negative;4,5=positive")
    code = main(["evaluate", str(result.model_dir), "--data", str(test), "--label-map", spec])
    assert code == 0 and "examples   30" in capsys.readouterr().out
    with pytest.raises(DataError, match="more than one"):  # a malformed map fails before any training
        bertsent.train(str(train), label_map="1=a=b", model=str(tiny_model_dir), out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_compare_and_cli_train_refuse_an_unknown_label_before_training(tiny_model_dir, write_csv, capsys):
    path = write_csv(_star_rows(40, 1), "train.csv")
    for command in (["train"], ["compare", "--models", str(tiny_model_dir)]):
        args = [*command, "--data", str(path), "--label-map", "1,2=negative;4,5=positive", "--out", "out"]
        assert main(args + (["--model", str(tiny_model_dir)] if command == ["train"] else [])) == 2
        _, err = capsys.readouterr()
        assert len(err.strip().splitlines()) == 1 and "'3'" in err and "=drop" in err


def test_compare_applies_the_map(tiny_model_dir, write_csv, tmp_path):
    from bertsent.workflows.experiments import compare

    path = write_csv(_star_rows(60, 1), "train.csv")
    table = compare(
        [str(tiny_model_dir)],
        str(path),
        label_map={(1, 2): "negative", 3: "drop", (4, 5): "positive"},
        out=tmp_path / "cmp",
        epochs=1,
        batch_size=16,
        progress=False,
        log=lambda *_: None,
    )
    assert table["n"] == 6  # a tenth of the 60 mapped rows held out
    meta = json.loads((tmp_path / "cmp" / table["models"][0]["model_dir"].split("/")[-1] / "bertsent.json").read_text())
    assert meta["labels"] == ["negative", "positive"]


def test_export_reads_its_data_through_the_map(trained, write_csv):
    from bertsent.data.sources import DataOptions
    from bertsent.prediction.export import _read_labeled

    path = write_csv(_star_rows(24, 3), "stars.csv")
    reading = DataOptions(label_map="1,2=negative;3=drop;4,5=positive")
    dataset = _read_labeled(str(path), ["negative", "positive"], reading)
    assert set(dataset.labels) == {"negative", "positive"} and len(dataset) == 24
