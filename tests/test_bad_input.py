"""Regression tests for values and paths a user gets wrong: each is caught before the work, in one line, with
exit code 2 on the command line and BertsentError in Python (the hardening issue's cases)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bertsent import load
from bertsent.cli import main
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError
from bertsent.files import publish_folder
from bertsent.runtime import check_device
from bertsent.training import TrainConfig
from bertsent.workflows import experiments

from conftest import make_reviews


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "error:" in err and "Traceback" not in err
    return err


# -- devices that are not there --------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps"])
def test_a_device_this_machine_lacks_is_refused_not_replaced_by_the_cpu(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BertsentError, match="--device cpu"):
        check_device(device)
    with pytest.raises(BertsentError, match=f"--device {device}"):
        TrainConfig(device=device)


def test_a_gpu_index_beyond_the_machines_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BertsentError, match="2 CUDA GPU"):
        check_device("cuda:2")


def test_train_on_a_missing_gpu_exits_2_before_loading_anything(reviews_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--data", str(reviews_csv), "--device", "cuda", "--out", str(tmp_path / "m")])
    assert code == 2
    assert "no CUDA GPU" in _one_line_error(capsys)
    assert not list(tmp_path.glob("*m*"))


def test_predicting_on_a_missing_gpu_is_a_user_error(trained, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BertsentError, match="no CUDA GPU"):
        load(trained, device="cuda")


# -- the Python API refuses what the command line refuses ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threads": 0}, "--threads 0"),
        ({"threads": 1.5}, "--threads 1.5"),
        ({"neutral_band": 5}, "--neutral-band 5"),
        ({"batch_size": 0}, "--batch-size 0"),
        ({"truncation": "middle"}, "--truncation middle"),
    ],
)
def test_load_refuses_bad_settings(trained, kwargs, match):
    with pytest.raises(BertsentError, match=match):
        load(trained, **kwargs)


@pytest.mark.parametrize("texts", [5, None, b"bytes", {"text": "a"}])
def test_predict_wants_a_list_of_texts(trained, texts):
    model = load(trained, backend="torch")
    with pytest.raises(BertsentError, match="list of texts"):
        model.predict(texts)


@pytest.mark.parametrize(
    ("texts", "said"),
    [
        ([None, 3], "text 1 is None, not a string"),
        (["fine", 3], "text 2 is an int ('3'), not a string"),
        (["fine", float("nan")], "text 2 is a float ('nan'), not a string"),
        (["fine", b"bytes"], "text 2 is a bytes"),
        (iter(["fine", "good", None]), "text 3 is None"),
    ],
)
def test_items_that_are_not_text_are_refused_not_scored(trained, texts, said):
    """Once scored as the texts '', '3' and 'nan'."""
    model = load(trained, backend="torch")
    items = list(texts)
    for method in (model.predict, model.predict_proba, model.predict_records, model.decision_function):
        with pytest.raises(BertsentError, match=re.escape(said)):
            method(iter(items) if not isinstance(texts, list) else items)


# -- output locations ----------------------------------------------------------------------------------------


def test_train_overwrite_never_replaces_a_users_file(reviews_csv, tmp_path, capsys):
    victim = tmp_path / "notes.csv"
    victim.write_text("keep me\n")
    code = main(["train", "--data", str(reviews_csv), "--out", str(victim), "--overwrite"])
    assert code == 2
    assert "is a file" in _one_line_error(capsys)
    assert victim.read_text() == "keep me\n"
    assert not list(tmp_path.glob(".notes.csv*"))


def test_publishing_over_a_file_or_link_leaves_nothing_old_behind(tmp_path):
    for kind in ("file", "link", "folder"):
        out = tmp_path / kind
        if kind == "file":
            out.write_text("old")
        elif kind == "link":
            out.symlink_to(tmp_path / "nowhere")
        else:
            (out / "inner").mkdir(parents=True)
        work = tmp_path / f".{kind}.partial"
        work.mkdir()
        (work / "new.txt").write_text("new")
        publish_folder(work, out)
        assert (out / "new.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "link"]


# -- compare and seeds: every model found first, no half-filled output --------------------------------------


def test_compare_with_a_missing_second_model_trains_nothing(tiny_model_dir, reviews_csv, tmp_path, capsys):
    code = main(
        ["compare", "--models", f"{tiny_model_dir},{tmp_path / 'no-such-model'}", "--data", str(reviews_csv),
         "--out", str(tmp_path / "cmp"), "--epochs", "1", "--quiet"]
    )  # fmt: skip
    assert code == 2
    assert "no-such-model" in _one_line_error(capsys)
    assert not (tmp_path / "cmp").exists() and not (tmp_path / ".cmp.partial").exists()


def test_a_compare_that_fails_midway_leaves_no_output_and_can_be_rerun(tiny_model_dir, tmp_path, monkeypatch):
    train_set = TextDataset(*make_reviews(40, seed=5), name="t")
    settings = dict(epochs=1, batch_size=16, validation_fraction=0.25, progress=False, log=lambda *a: None)
    calls = {"n": 0}
    real_train = experiments.train

    def second_run_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise BertsentError("disk full (simulated)")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiments, "train", second_run_fails)
    models = [str(tiny_model_dir), str(tiny_model_dir)]
    with pytest.raises(BertsentError, match="simulated"):
        experiments.compare(models, train_set, out=tmp_path / "cmp", **settings)
    assert not (tmp_path / "cmp").exists()  # nothing that blocks the rerun
    assert (tmp_path / ".cmp.partial").exists()  # (the rerun clears what the failed attempt left)
    monkeypatch.setattr(experiments, "train", real_train)
    table = experiments.compare(models, train_set, out=tmp_path / "cmp", **settings)
    assert not list(tmp_path.glob(".cmp*"))
    written = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    for row in written["models"] + table["models"]:
        assert (tmp_path / "cmp") in Path(row["model_dir"]).parents
        assert (Path(row["model_dir"]) / "model.safetensors").exists()


def test_seeds_that_fail_midway_leave_no_output(tiny_model_dir, tmp_path, monkeypatch):
    train_set = TextDataset(*make_reviews(40, seed=6), name="t")
    real_train = experiments.train
    calls = {"n": 0}

    def second_seed_fails(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    monkeypatch.setattr(experiments, "train", second_seed_fails)
    with pytest.raises(KeyboardInterrupt):
        experiments.train_seeds(
            train_set, seeds=2, out=tmp_path / "s", model=str(tiny_model_dir), epochs=1, batch_size=16,
            validation_fraction=0.25, progress=False, log=lambda *a: None, report=False,
        )  # fmt: skip
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--tensorboard", "{file}/tb"], "--tensorboard"),
        (["--out", "{file}/model"], "--out"),
        (["--out", ""], "--out: give a folder name"),
    ],
)
def test_train_output_folders_that_cannot_be_written_fail_before_the_work(
    flags, match, reviews_csv, tmp_path, capsys, monkeypatch
):
    import bertsent.workflows.run

    def no_model(*_a, **_k):
        raise AssertionError("the model was loaded before the output folders were checked")

    monkeypatch.setattr(bertsent.workflows.run.hub, "resolve_model", no_model)
    flags = [f.format(file=reviews_csv) for f in flags]
    code = main(["train", "--data", str(reviews_csv), "--out", str(tmp_path / "m"), *flags])
    assert code == 2
    assert match in _one_line_error(capsys)


def test_checking_an_output_location_creates_no_folders(tmp_path):
    from bertsent.files import check_writable

    assert check_writable(tmp_path / "a" / "b" / "model" / "probe") is None
    assert not (tmp_path / "a").exists()
    (tmp_path / "f").write_text("x")
    assert check_writable(tmp_path / "f" / "model") == "Not a directory"


def test_more_flags_a_user_gets_wrong(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BERTSENT_API_KEY", raising=False)
    (tmp_path / "f").write_text("x")
    cases = [
        (["explain", str(trained), "good", "--html", str(tmp_path / "f" / "x.html")], "--html"),
        (["evaluate", str(trained), "--data", "d.csv", "--out", ""], "--out: give a file name"),
        (["serve", str(trained), "--api-key", ""], "--api-key"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert match in _one_line_error(capsys)
    assert not (trained / "onnx").exists()


def test_undecodable_standard_input_is_labeled_not_an_internal_error(trained, capsys, monkeypatch):
    import io

    class Stdin(io.TextIOWrapper):
        def isatty(self):
            return False

    monkeypatch.setattr("sys.stdin", Stdin(io.BytesIO(b"great film \xff\xfe\n\x80 awful\n"), encoding="utf-8"))
    assert main(["predict", str(trained), "--backend", "torch", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["great film \ufffd\ufffd", "\ufffd awful"]


def test_a_text_with_lone_surrogates_is_a_data_error(trained):
    with pytest.raises(BertsentError, match="text 2 is not valid Unicode"):
        load(trained, backend="torch").predict(["fine", "bad \udcff"])


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("BERTSENT_CACHE", str(tmp_path / "file" / "cache"))
    assert main(["data", "rotten-tomatoes"]) == 2
    assert "BERTSENT_CACHE" in _one_line_error(capsys)


def test_a_huge_text_is_tokenized_by_its_head_and_tail_only(tiny_model_dir):
    from bertsent.modeling import hub
    from bertsent.modeling.tokens import MAX_TEXT_CHARS, tokenize

    tokenizer = hub.load_tokenizer(tiny_model_dir)
    huge = "wonderful " + "plot " * (MAX_TEXT_CHARS // 2) + "awful"  # 2.6 MB of text
    ids, _ = tokenize(tokenizer, [huge])[0]
    assert len(ids) < MAX_TEXT_CHARS // 4  # bounded by the clip, not by the text
    words = tokenizer.convert_ids_to_tokens(ids)
    assert words[1] == "wonderful" and words[-2] == "awful"  # head and tail kept


# -- model folders: one permission mode for all their files -------------------------------------------------


def _modes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir() if p.is_file()}


def test_a_trained_model_folders_files_share_one_mode(trained):
    """safetensors writes 0600 where the other files get 0644 (from the umask): the weights once stayed 0600."""
    modes = _modes(trained)
    assert "model.safetensors" in modes and len(set(modes.values())) == 1, modes


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_model_takes_the_umask_for_every_file(trained, tmp_path, umask):
    import os

    model = load(trained, backend="torch")
    previous = os.umask(umask)
    try:
        model.save(tmp_path / "copy")
    finally:
        os.umask(previous)
    assert set(_modes(tmp_path / "copy").values()) == {0o666 & ~umask}
