"""Prediction with an ONNX backend imports no torch (and no transformers): the tokenizer is the folder's
tokenizer.json run by `tokenizers` (`TokenizerFile`), the labels come from config.json read as JSON, batches are
padded in NumPy. Checked in a fresh interpreter, for `bertsent.load(DIR, backend="onnx")` and `bertsent predict
DIR "text"`, against the torch backend's probabilities; and `TokenizerFile` against transformers' tokenizer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bertsent
from bertsent.modeling import hub
from bertsent.modeling.tokenizer_file import TokenizerFile, readable, transformers_tokenizer
from bertsent.modeling.tokens import tokenize
from bertsent.prediction.export import export_onnx

from conftest import make_reviews
from test_model import _tiny_distilbert, _tiny_gpt2

TEXTS = [
    *make_reviews(6, seed=3)[0],
    "wonderful",
    "",
    " ".join(["dull"] * 300),  # longer than the model: windows
    "Ünïcödé ÀCCENTS, UPPER case, 中文字符, emoji 🙂🎬 and [SEP] [MASK] <|endoftext|> in the text",
    "  spaces\tand\nnewlines  ",
]
HEAVY = ("torch", "transformers", "accelerate")


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """A copy of the trained tiny BERT with its fp32 ONNX export."""
    folder = tmp_path_factory.mktemp("onnx-lite") / "model"
    shutil.copytree(trained, folder)
    export_onnx(folder, log=lambda *_: None)
    return folder


def _fresh(code: str, **env: str) -> dict:
    """Run `code` in a new interpreter (this checkout's source first on its path); its last line is JSON."""
    path = os.pathsep.join([os.path.dirname(bertsent.__path__[0]), *sys.path])
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path, **env},
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_load_with_the_onnx_backend_imports_no_torch_and_scores_as_torch(exported):
    found = _fresh(
        f"""
        import json, sys
        import bertsent
        model = bertsent.load({str(exported)!r}, backend="onnx")
        probs = model.predict_proba({TEXTS!r}).tolist()
        labels = model.predict({TEXTS!r})
        print(json.dumps({{"heavy": sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})),
                           "tokenizer": type(model.tokenizer).__name__, "backend": model.backend_name,
                           "probs": probs, "labels": labels, "classes": model.classes_,
                           "max_length": model.max_length, "stride": model.stride}}))
        """
    )
    torch_model = bertsent.load(exported, backend="torch")
    assert found["heavy"] == [] and found["tokenizer"] == "TokenizerFile" and found["backend"] == "onnx"
    assert (found["classes"], found["max_length"], found["stride"]) == (
        torch_model.classes_,
        torch_model.max_length,
        torch_model.stride,
    )
    expected = torch_model.predict_proba(TEXTS)
    assert np.abs(np.array(found["probs"]) - expected).max() < 1e-4
    assert found["labels"] == torch_model.predict(TEXTS)


@pytest.mark.skipif(sys.platform == "darwin", reason="Apple silicon has a GPU in sight: auto asks torch about MPS")
def test_the_predict_command_with_an_export_imports_no_torch(exported):
    """No --backend: auto takes the export on a machine without a GPU (CUDA_VISIBLE_DEVICES="" hides any)."""
    found = _fresh(
        f"""
        import contextlib, io, json, sys
        from bertsent.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["predict", {str(exported)!r}, "--format", "jsonl", *{TEXTS[:3]!r}])
        from bertsent.runtime import device_type
        print(json.dumps({{"code": code, "records": [json.loads(line) for line in out.getvalue().splitlines()],
                           "device": device_type(), "cpu": device_type("cpu"),
                           "heavy": sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))}}))
        """,
        CUDA_VISIBLE_DEVICES="",
    )
    assert (found["code"], found["heavy"], found["device"], found["cpu"]) == (0, [], "cpu", "cpu")
    expected = bertsent.load(exported, backend="torch").predict_records(TEXTS[:3])
    assert [r["label"] for r in found["records"]] == [r["label"] for r in expected]
    for got, want in zip(found["records"], expected):
        assert got["text"] == want["text"]
        assert max(abs(got["probs"][c] - p) for c, p in want["probs"].items()) < 1e-4


def test_an_onnx_model_still_explains_and_saves_with_the_transformers_tokenizer(exported, tmp_path):
    model = bertsent.load(exported, backend="onnx")
    assert isinstance(model.tokenizer, TokenizerFile)
    full = transformers_tokenizer(model.tokenizer)
    assert full.is_fast and full is transformers_tokenizer(model.tokenizer)  # loaded once
    saved = bertsent.load(model.save(tmp_path / "copy"), backend="torch")
    assert saved.predict(TEXTS) == model.predict(TEXTS)
    pytest.importorskip("captum")
    [explained] = model.explain(["a wonderful film"], n_steps=2)
    assert explained.words == ["a", "wonderful", "film"]


def _without_pad_token(folder):
    """A GPT-style tokenizer folder that names no padding token: both loaders pad with end-of-text."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("pad_token", None)
    config_path.write_text(json.dumps(config))
    special = folder / "special_tokens_map.json"
    if special.exists():
        special.write_text(json.dumps({k: v for k, v in json.loads(special.read_text()).items() if k != "pad_token"}))
    return folder


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2", "gpt2-no-pad"])
def test_tokenizer_file_gives_transformers_ids(kind, tiny_model_dir, tmp_path):
    """The same ids, special-token marks, padding and length limit as transformers' tokenizer of the folder."""
    if kind == "bert":
        folder = tiny_model_dir
    elif kind == "distilbert":
        folder = _tiny_distilbert(tiny_model_dir, tmp_path / "distilbert")
    else:
        folder = _tiny_gpt2(tmp_path / "gpt2")
        if kind == "gpt2-no-pad":
            folder = _without_pad_token(folder)
    assert readable(folder)
    light = hub.load_tokenizer(folder, light=True)
    full = hub.load_tokenizer(folder)
    assert isinstance(light, TokenizerFile) and not isinstance(full, TokenizerFile)
    assert tokenize(light, TEXTS) == tokenize(full, TEXTS)
    assert light.num_special_tokens_to_add() == full.num_special_tokens_to_add()
    assert (light.pad_token_id, light.padding_side) == (full.pad_token_id, full.padding_side)
    assert light.pad_token_id is not None
    config = hub.load_config(folder)
    assert hub.model_max_length(light, hub.read_config(folder)) == hub.model_max_length(full, config)


def test_tokenizer_file_refuses_what_it_cannot_run_as_transformers_would(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "auto_map": {"AutoTokenizer": ["x.Y", None]}}))
    assert not readable(folder)  # a tokenizer of the model's own code
    (folder / "tokenizer.json").unlink()
    assert not readable(folder)
    assert not isinstance(hub.load_tokenizer(tiny_model_dir, light=True, trust_remote_code=True), TokenizerFile)
    with pytest.raises(NotImplementedError):
        TokenizerFile(tiny_model_dir)(["a text"], truncation=True)


def _tokenizer_folder(kind: str, tiny_model_dir, folder):
    """A tokenizer folder of each family bertsent fine-tunes: BERT (the packaged vocab), MPNet (the same vocab, its
    own class and template) and RoBERTa (a byte-level BPE trained on the toy reviews)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, MPNetTokenizer, RobertaTokenizer

    if kind == "bert":
        shutil.copytree(tiny_model_dir, folder)
        return folder
    if kind == "mpnet":
        vocab = AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()
        specials = dict(bos_token="[CLS]", eos_token="[SEP]", cls_token="[CLS]", sep_token="[SEP]")
        MPNetTokenizer(vocab=vocab, pad_token="[PAD]", mask_token="[MASK]", **specials).save_pretrained(folder)
        return folder
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    bpe.train_from_iterator(
        make_reviews(300)[0], trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet)
    )
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    RobertaTokenizer(vocab=model["vocab"], merges=merges).save_pretrained(folder)
    return folder


def _edit(folder, name, change):
    path = folder / name
    found = json.loads(path.read_text())
    change(found)
    path.write_text(json.dumps(found))


ADDED = {"30522": {"content": "<new>", "special": True, "normalized": False, "lstrip": False, "rstrip": False}}
# tokenizer_config.json and tokenizer.json disagreeing; transformers' class takes the config's word (or, for the
# pipeline it builds itself, ignores tokenizer.json's): each case gave other ids before TokenizerFile did the same.
DISAGREEMENTS = {
    "bert, cased config": ("bert", "tokenizer_config.json", lambda c: c.update(do_lower_case=False)),
    "bert, cased tokenizer.json": ("bert", "tokenizer.json", lambda t: t["normalizer"].update(lowercase=False)),
    "bert, accents kept": ("bert", "tokenizer_config.json", lambda c: c.update(strip_accents=False)),
    "bert, no chinese split": ("bert", "tokenizer.json", lambda t: t["normalizer"].update(handle_chinese_chars=False)),
    "bert, no template": ("bert", "tokenizer.json", lambda t: t.update(post_processor=None)),
    "bert, short words only": ("bert", "tokenizer.json", lambda t: t["model"].update(max_input_chars_per_word=3)),
    "bert, other unknown": ("bert", "tokenizer_config.json", lambda c: c.update(unk_token="[MASK]")),
    "bert, token added in config": ("bert", "tokenizer_config.json", lambda c: c.update(added_tokens_decoder=ADDED)),
    "bert, no class named": ("bert", "tokenizer.json", lambda t: t["normalizer"].update(lowercase=False)),
    "mpnet, cased config": ("mpnet", "tokenizer_config.json", lambda c: c.update(do_lower_case=False)),
    "mpnet, no template": ("mpnet", "tokenizer.json", lambda t: t.update(post_processor=None)),
    "roberta, prefix space in config": ("roberta", "tokenizer_config.json", lambda c: c.update(add_prefix_space=True)),
    "roberta, lowercase normalizer": (
        "roberta",
        "tokenizer.json",
        lambda t: t.update(normalizer={"type": "Lowercase"}),
    ),
    "roberta, no template": ("roberta", "tokenizer.json", lambda t: t.update(post_processor=None)),
}


@pytest.mark.parametrize("case", DISAGREEMENTS)
def test_tokenizer_file_follows_transformers_where_the_tokenizer_files_disagree(case, tiny_model_dir, tmp_path):
    kind, name, change = DISAGREEMENTS[case]
    folder = _tokenizer_folder(kind, tiny_model_dir, tmp_path / kind)
    _edit(folder, name, change)
    if case.endswith("no class named"):  # transformers picks the class by config.json's model_type
        _edit(folder, "tokenizer_config.json", lambda c: c.pop("tokenizer_class"))
    texts = [*TEXTS, "a <new> token, <mask> and </s>", "Hello World"]
    from transformers import AutoTokenizer

    light, full = TokenizerFile(folder), AutoTokenizer.from_pretrained(folder)  # a folder of tokenizer files only
    assert readable(folder)
    assert tokenize(light, texts) == tokenize(full, texts)
    assert (light.pad_token_id, light.padding_side, light.model_max_length) == (
        full.pad_token_id,
        full.padding_side,
        full.model_max_length,
    )


def test_tokenizer_file_refuses_an_added_token_it_cannot_number_as_listed(tiny_model_dir, tmp_path):
    folder = _tokenizer_folder("bert", tiny_model_dir, tmp_path / "bert")
    _edit(folder, "tokenizer_config.json", lambda c: c.update(added_tokens_decoder={"30600": ADDED["30522"]}))
    with pytest.raises(
        bertsent.errors.BertsentError, match=r"^tokenizer_config.json gives token '<new>' .*--backend torch"
    ):
        TokenizerFile(folder)


def test_tokenizer_file_leaves_other_tokenizer_classes_to_transformers(tiny_model_dir, tmp_path):
    folder = _tokenizer_folder("bert", tiny_model_dir, tmp_path / "bert")
    _edit(folder, "tokenizer_config.json", lambda c: c.update(tokenizer_class="XLMRobertaTokenizer"))
    assert not readable(folder)


def test_read_config_gives_the_labels_and_length_transformers_reads(trained, tmp_path):
    light, full = hub.read_config(trained), hub.load_config(trained)
    assert light.id2label == full.id2label and light.num_labels == full.num_labels
    assert light.max_position_embeddings == full.max_position_embeddings
    gpt2 = _tiny_gpt2(tmp_path / "gpt2")  # n_positions, by another name
    assert hub.read_config(gpt2).max_position_embeddings == hub.load_config(gpt2).max_position_embeddings == 128
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(bertsent.ModelError, match="damaged"):
        hub.read_config(tmp_path / "broken")


def test_with_a_gpu_in_sight_auto_asks_torch_and_onnx_does_not(exported):
    """Where a GPU may be, auto needs torch's answer (PyTorch on the GPU, else the export); a named ONNX backend
    runs on the CPU whatever the machine has, so it never asks."""
    found = _fresh(
        f"""
        import json, sys
        import bertsent, bertsent.runtime
        bertsent.runtime._gpu_in_sight = lambda: True
        seen = {{}}
        for backend in ("onnx", "auto"):
            model = bertsent.load({str(exported)!r}, backend=backend)
            seen[backend] = [model.backend_name, "torch" in sys.modules]
        print(json.dumps(seen))
        """
    )
    device = bertsent.load(exported, backend="torch").device.type
    assert found == {"onnx": ["onnx", False], "auto": ["onnx" if device == "cpu" else "torch", True]}
