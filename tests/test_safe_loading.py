"""Model folders load from safetensors only: pickle weights (pytorch_model.bin) are refused with one line that says
how to convert them, unless --allow-pickle; a model's own Python code never runs unless --trust-remote-code."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bertsent
from bertsent.cli import main

from conftest import make_reviews


def _pickled(folder: Path, to: Path) -> Path:
    """A copy of a model folder whose weights are only in pytorch_model.bin, as older tools wrote them."""
    from safetensors.torch import load_file

    shutil.copytree(folder, to)
    torch.save(load_file(to / "model.safetensors"), to / "pytorch_model.bin")
    (to / "model.safetensors").unlink()
    return to


@pytest.fixture
def pickled_classifier(trained, tmp_path) -> Path:
    return _pickled(trained, tmp_path / "pickled")


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_trained_folder_with_only_pickle_weights_is_refused(pickled_classifier, trained, capsys):
    texts = ["a wonderful and superb film", "dull, awful and boring"]
    assert main(["predict", str(pickled_classifier), *texts]) == 2
    line = _one_error_line(capsys)
    assert "pytorch_model.bin, a pickle" in line and "--allow-pickle" in line and "save_file" in line

    assert main(["predict", str(pickled_classifier), *texts, "--allow-pickle", "--format", "jsonl"]) == 0
    allowed = capsys.readouterr().out
    assert main(["predict", str(trained), *texts, "--format", "jsonl"]) == 0
    assert allowed == capsys.readouterr().out  # the same weights, the same answers

    with pytest.raises(bertsent.ModelError, match=r"--allow-pickle \(allow_pickle=True in Python\)"):
        bertsent.load(pickled_classifier)
    assert bertsent.load(pickled_classifier, allow_pickle=True).predict(texts) == bertsent.load(trained).predict(texts)


@pytest.mark.slow  # a fresh Python that imports torch: several seconds
def test_the_conversion_the_message_gives_works(pickled_classifier, trained, capsys):
    assert main(["predict", str(pickled_classifier), "fine"]) == 2
    line = _one_error_line(capsys)
    command = shlex.split(line.split("Convert it once (torch's weights-only loader): ")[1].split(" -- or")[0])
    assert command[:2] == ["python", "-c"]
    subprocess.run([sys.executable, *command[1:]], check=True, timeout=120)
    texts = ["a wonderful and superb film", "dull, awful and boring"]
    assert bertsent.load(pickled_classifier).predict(texts) == bertsent.load(trained).predict(texts)


@pytest.mark.parametrize("command", ["evaluate", "export", "serve"])
def test_other_commands_refuse_pickle_weights_too(command, pickled_classifier, write_csv, capsys):
    texts, labels = make_reviews(8)
    data = str(write_csv(list(zip(texts, labels))))
    args = {"evaluate": ["--data", data], "export": [], "serve": ["--port", "0"]}[command]
    assert main([command, str(pickled_classifier), *args]) == 2
    assert "--allow-pickle" in _one_error_line(capsys)


# Every command that trains from a base model takes --allow-pickle and passes it on to the loader.
TRAINING = {
    "train": (["--model", "BASE", "--no-report"], "model.safetensors"),
    "compare": (["--models", "BASE"], "compare.csv"),
    "tune": (["--model", "BASE", "--trials", "1"], "best/model.safetensors"),
    "audit": (["--model", "BASE", "--folds", "2"], "label_issues.csv"),
}


@pytest.mark.parametrize("command", list(TRAINING))
def test_training_from_a_pickle_only_model_needs_allow_pickle(command, tiny_model_dir, tmp_path, write_csv, capsys):
    base = _pickled(tiny_model_dir, tmp_path / "base")
    texts, labels = make_reviews(40)
    data = str(write_csv(list(zip(texts, labels))))
    own, written = TRAINING[command]
    own = [str(base) if word == "BASE" else word for word in own]
    args = [command, "--data", data, *own, "--out", "m", "--epochs", "1", "--quiet"]
    assert main(args) == 2
    assert "--allow-pickle" in _one_error_line(capsys) and not Path("m").exists()
    assert main([*args, "--allow-pickle"]) == 0
    assert (Path("m") / written).exists()  # what bertsent writes is safetensors
    if command == "tune":  # the best settings' train command loads the same model: it needs the flag too
        assert "--allow-pickle" in json.loads(Path("m/tune.json").read_text())["best_command"].split()


def test_a_models_own_code_does_not_run_by_default(trained, tmp_path, capsys):
    """A folder whose config points at Python code shipped with it (auto_map): refused in one line, and the
    code never runs (it would write a marker file)."""
    folder = tmp_path / "custom"
    shutil.copytree(trained, folder)
    marker = tmp_path / "code-ran"
    (folder / "custom_bert.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom-bert"
    config["auto_map"] = {
        "AutoConfig": "custom_bert.CustomConfig",
        "AutoModelForSequenceClassification": "custom_bert.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["predict", str(folder), "fine"]) == 2
    line = _one_error_line(capsys)
    assert "ships its own Python code" in line and "--trust-remote-code" in line
    assert not marker.exists()
    with pytest.raises(bertsent.ModelError, match="--trust-remote-code"):
        bertsent.load(folder)
    assert not marker.exists()


@pytest.fixture
def loader_calls(monkeypatch):
    """The keywords each transformers loader is called with."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    calls = []
    for cls in (AutoConfig, AutoTokenizer, AutoModelForSequenceClassification):
        original = cls.from_pretrained

        def record(*args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", record)
    return calls


def test_trust_remote_code_is_off_unless_the_flag_is_given(trained, loader_calls, capsys):
    assert main(["predict", str(trained), "fine"]) == 0
    assert {name for name, _ in loader_calls} == {"AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification"}
    assert all(kwargs["trust_remote_code"] is False for _, kwargs in loader_calls)
    weights = [kw["use_safetensors"] for name, kw in loader_calls if name == "AutoModelForSequenceClassification"]
    assert weights == [True]
    loader_calls.clear()
    assert main(["predict", str(trained), "fine", "--trust-remote-code"]) == 0
    assert loader_calls and all(kwargs["trust_remote_code"] is True for _, kwargs in loader_calls)


def test_data_passes_trust_remote_code_to_the_tokenizer(trained, loader_calls, write_csv, capsys):
    """`data --model M` loads M's tokenizer: its refusal of shipped code names --trust-remote-code, which data takes."""
    texts, labels = make_reviews(8)
    args = ["data", str(write_csv(list(zip(texts, labels)))), "--model", str(trained), "--json"]
    for extra, trusted in (([], False), (["--trust-remote-code"], True)):
        loader_calls.clear()
        assert main([*args, *extra]) == 0
        assert [kwargs["trust_remote_code"] for name, kwargs in loader_calls if name == "AutoTokenizer"] == [trusted]


def test_every_function_that_loads_a_model_takes_the_loading_keywords():
    """The commands' flags are the Python functions' keywords (what the refusals name in Python), in their
    signatures, where users, the API reference and type checkers see them."""
    import inspect

    from bertsent.prediction.export import export_onnx
    from bertsent.workflows.experiments import compare, train_seeds
    from bertsent.workflows.tune import tune

    functions = [bertsent.train, bertsent.evaluate, bertsent.audit, bertsent.SentimentModel.load, train_seeds, compare]
    for function in [*functions, tune, export_onnx]:  # bertsent.load passes its keywords to SentimentModel.load
        parameters = inspect.signature(function).parameters
        assert {"allow_pickle", "trust_remote_code"} <= set(parameters), function.__name__
        assert all(parameters[name].default is False for name in ("allow_pickle", "trust_remote_code"))
