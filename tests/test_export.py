"""`export_onnx`: the classifier as ONNX (fp32 and int8) beside the PyTorch weights, checked against PyTorch;
the onnx and onnx-int8 prediction backends that run it; the int8 accuracy gate; the other architectures."""

from __future__ import annotations

import json
import re
import shutil
import sys

import numpy as np
import pytest

import bertsent
from bertsent.data.sources import TextDataset
from bertsent.errors import BertsentError, DataError, ModelError
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import encode
from bertsent.prediction import backends, export

from conftest import make_reviews
from test_model import _tiny_distilbert, _tiny_gpt2

VAL_TEXTS, VAL_LABELS = make_reviews(40, seed=2)
# Lengths from one token to past the model's length, in no particular order.
MIXED_TEXTS = [VAL_TEXTS[3], "wonderful", " ".join(["dull"] * 300), VAL_TEXTS[0] * 3, "", VAL_TEXTS[7]]


def _copy(folder, tmp_path_factory, name):
    out = tmp_path_factory.mktemp(name) / "model"
    shutil.copytree(folder, out)
    return out


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """A copy of the trained tiny BERT, exported with int8 and measured on the validation texts."""
    folder = _copy(trained, tmp_path_factory, "exported")
    lines = []
    summary = export.export_onnx(
        folder, int8=True, data=TextDataset(VAL_TEXTS, VAL_LABELS, name="toy val"), log=lines.append
    )
    return folder, summary, lines


def test_export_writes_checked_fp32_and_int8_models(exported):
    folder, summary, lines = exported
    onnx_dir = folder / "onnx"
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["export.json", "model.onnx", "model_int8.onnx"]
    assert not any(p.name.endswith(".partial") for p in folder.iterdir())
    assert set(summary) == {
        "folder", "onnx_dir", "model_type", "max_length", "truncation", "files", "parity", "evaluation",
        "int8_kept", "int8_reason", "seconds",
    }  # fmt: skip
    fp32, int8 = summary["files"]["model.onnx"], summary["files"]["model_int8.onnx"]
    assert fp32["exporter"] in export.EXPORTERS and fp32["opset"] >= 17
    assert fp32["bytes"] == (onnx_dir / "model.onnx").stat().st_size
    assert int8["bytes"] == (onnx_dir / "model_int8.onnx").stat().st_size < fp32["bytes"]
    assert fp32["parity"]["max_prob_diff"] < 1e-5 and fp32["parity"]["label_agreement"] == 1.0
    assert fp32["parity"]["texts"] == len(export.SAMPLE_TEXTS) + export.PARITY_DATA_ROWS
    assert int8["parity"]["label_agreement"] >= 0.8 and int8["parity"]["max_prob_diff"] < 0.1
    assert int8["exporter"] == fp32["exporter"] and int8["quantization"]["weights"] == "QInt8"
    assert summary["int8_kept"] is True and summary["int8_reason"] is None
    assert summary["evaluation"]["accuracy"]["torch"] >= 0.9 and summary["evaluation"]["n"] == 40
    assert abs(summary["evaluation"]["accuracy"]["model.onnx"] - summary["evaluation"]["accuracy"]["torch"]) < 1e-9
    assert any("parity with PyTorch" in line and "labels" in line for line in lines)
    assert any(line.startswith("Accuracy: torch") for line in lines)


def _products(path) -> dict[str, int]:
    """How many matrix products with a constant weight the graph holds, by kind: "fp32", "int8, float out"
    (int8 weight and input, fp32 result) or "int8, int8 out" (the result quantized again)."""
    import onnx

    graph = onnx.load(str(path)).graph
    constant = {w.name: w for w in graph.initializer}
    made_by = {out: node for node in graph.node for out in node.output}
    read_by = {name: [n for n in graph.node if name in n.input] for node in graph.node for name in node.output}
    kinds: dict[str, int] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = made_by.get(node.input[1])
        if node.input[1] in constant:
            kind = "fp32"
        elif weight is not None and weight.op_type == "DequantizeLinear" and weight.input[0] in constant:
            assert constant[weight.input[0]].data_type == onnx.TensorProto.INT8
            assert constant[weight.input[1]].dims, "per-channel weight scales"
            requantized = any(n.op_type == "QuantizeLinear" for n in read_by[node.output[0]])
            kind = "int8, int8 out" if requantized else "int8, float out"
        else:
            continue  # a product of two activations (attention scores): fp32 on purpose
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def test_int8_quantizes_every_product_and_keeps_its_result_float(exported, trained):
    """The projections and both feed-forward products in int8; their results not quantized again (a
    feed-forward output spans +-190 with a spread of 0.3: 8 bits of it cost most of int8's accuracy)."""
    folder, _, _ = exported
    layers = json.loads((trained / "config.json").read_text())["num_hidden_layers"]
    assert _products(folder / "onnx" / "model_int8.onnx") == {"int8, float out": 6 * layers}
    assert "MatMul" not in json.dumps(_products(folder / "onnx" / "model.onnx")).replace("fp32", "")


def test_smoothing_moves_outlier_channels_into_the_weights_and_changes_no_result(tmp_path):
    """x @ W = (x / s) @ (s * W): the smoothed graph computes what the original did, and the inputs of its
    products no longer have one channel far above the others."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from bertsent.prediction.quantize import smooth

    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(8, 3)).astype(np.float32)
    w1[:, 5] *= 40  # channel 5 of the hidden product: an outlier, as in BERT's feed-forward
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
            helper.make_node("Reshape", ["ids", "shape"], ["x"]),  # 4 ids a token: its features
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["logits"]),
        ],
        "toy",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, None]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, None]),
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, name) for w, name in ((w1, "w1"), (w2, "w2"), (np.array([1, -1, 4]), "shape"))],
    )
    source, smoothed = tmp_path / "toy.onnx", tmp_path / "smoothed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    calibration = [rng.integers(0, 5, size=24).tolist() for _ in range(8)]
    assert smooth(source, smoothed, calibration, external=False) == 2  # both products' inputs
    x = {"input_ids": rng.integers(0, 5, size=(1, 24)), "attention_mask": np.ones((1, 24), np.int64)}
    run = lambda path, names=None: ort.InferenceSession(str(path)).run(names, x)  # noqa: E731
    assert np.allclose(run(smoothed)[0], run(source)[0], rtol=1e-4, atol=1e-4)  # the same answers ...
    spread = lambda top: top.max() / np.median(top)  # noqa: E731
    probe = onnx.load(str(smoothed))
    probe.graph.output.extend([helper.make_tensor_value_info("r_smoothed", TensorProto.FLOAT, None)])
    onnx.save(probe, str(tmp_path / "probe.onnx"))
    original = onnx.load(str(source))
    original.graph.output.extend([helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    onnx.save(original, str(tmp_path / "original.onnx"))
    r = np.abs(run(tmp_path / "original.onnx", ["r"])[0]).reshape(-1, 8).max(axis=0)
    r_smoothed = np.abs(run(tmp_path / "probe.onnx", ["r_smoothed"])[0]).reshape(-1, 8).max(axis=0)
    assert spread(r) > 10 and spread(r_smoothed) < spread(r) / 4  # ... with its outlier channel tamed


def test_onnx_backend_logits_match_torch_in_input_order(exported):
    folder, _, _ = exported
    tokenizer = hub.load_tokenizer(folder)
    collator = Collator(tokenizer.pad_token_id, tokenizer.padding_side)
    ids = encode(tokenizer, MIXED_TEXTS + VAL_TEXTS, 32, "head")
    model = hub.load_classifier(folder)
    expected = predict_logits(model, ids, collator, batch_size=64)
    done = []
    backend = backends.OnnxBackend(backends.onnx_path(folder, "onnx"), collator, batch_size=5, threads=1)
    got = backend.logits(ids, progress=done.append)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.allclose(got, expected, atol=1e-4)
    assert sum(done) == len(ids) and len(done) == -(-len(ids) // 5)
    assert backend.logits([]).shape == (0, 2)


def test_export_json_temperatures_are_what_the_backends_use(exported):
    folder, summary, _ = exported
    written = json.loads((folder / "onnx" / "export.json").read_text())
    for backend, name in backends.ONNX_FILES.items():
        temperature = written[name]["temperature"]
        assert temperature == summary["files"][name]["temperature"] > 0
        assert backends.onnx_temperature(folder, backend) == pytest.approx(temperature)
        assert bertsent.load(folder, backend=backend).temperature == pytest.approx(temperature)
        assert written[name]["accuracy"] >= 0.9 and "parity" in written[name]
    assert written["data"]["n"] == 40 and written["max_length"] == summary["max_length"]


def test_load_with_onnx_backends_gives_torch_labels(exported):
    folder, _, _ = exported
    reference = bertsent.load(folder, backend="torch")
    texts = VAL_TEXTS + MIXED_TEXTS
    labels = reference.predict(texts)
    for backend in ("onnx", "onnx-int8", "auto"):
        model = bertsent.load(folder, backend=backend, device="cpu")
        assert model.predict(texts) == labels, backend
        assert model._model is None  # the PyTorch weights are not loaded for an ONNX backend
    assert bertsent.load(folder, backend="auto", device="cpu").backend_name == "onnx-int8"
    fp32 = bertsent.load(folder, backend="onnx").decision_function(texts)
    assert np.allclose(fp32, reference.decision_function(texts), atol=1e-4)


def test_int8_not_kept_when_accuracy_drops_beyond_the_bound_and_fallback_exporter(trained, tmp_path, monkeypatch):
    """The TorchScript exporter failing, the dynamo one is used (its graph is not one the optimizer fuses: kept
    as exported, int8 quantized from it all the same); a bound of -1 point refuses even an equal int8."""
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)

    def no_torchscript(self, path):
        raise RuntimeError("torchscript unavailable in this test\nsecond line")

    monkeypatch.setattr(export._Job, "_torchscript", no_torchscript)
    lines = []
    summary = export.export_onnx(
        folder, int8=True, data=TextDataset(VAL_TEXTS, VAL_LABELS, name="toy val"), max_drop=-1, log=lines.append
    )
    onnx_dir = folder / "onnx"
    assert not (onnx_dir / "model_int8.onnx").exists() and (onnx_dir / "model.onnx").is_file()
    assert summary["int8_kept"] is False and set(summary["files"]) == {"model.onnx"}
    accuracy = summary["evaluation"]["accuracy"]["torch"]
    reason = f"int8 model not kept: accuracy {accuracy:.3f} vs {accuracy:.3f} (drop 0.0 > -1 points)"
    assert summary["int8_reason"] == reason and reason in lines
    fp32 = summary["files"]["model.onnx"]
    assert fp32["exporter"] == "dynamo" and fp32["opset"] >= 17 and fp32["optimized"]["fused"] is None
    assert fp32["failed_exporters"] == {"torchscript": "RuntimeError: torchscript unavailable in this test"}
    assert fp32["parity"]["max_prob_diff"] < 1e-5
    written = json.loads((onnx_dir / "export.json").read_text())
    assert written["model_int8.onnx"]["kept"] is False and "temperature" not in written["model_int8.onnx"]
    assert backends.onnx_temperature(folder, "onnx-int8") is None
    assert bertsent.load(folder, backend="auto", device="cpu").backend_name == "onnx"
    with pytest.raises(ModelError, match="bertsent export .* --int8"):
        bertsent.load(folder, backend="onnx-int8")
    # Exporting again replaces the folder whole: no int8 model, no stale figures.
    export.export_onnx(folder, log=lines.append)
    assert sorted(p.name for p in onnx_dir.iterdir()) == ["export.json", "model.onnx"]
    assert "temperature" not in json.loads((onnx_dir / "export.json").read_text())["model.onnx"]


def test_failed_export_leaves_the_folder_as_it_was(trained, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"an earlier export")

    def broken(self, path):
        path.write_bytes(b"half a model")
        raise ValueError("unsupported operator")

    monkeypatch.setattr(export._Job, "_dynamo", broken)
    monkeypatch.setattr(export._Job, "_torchscript", broken)
    with pytest.raises(BertsentError, match=r"\(bert\) cannot be exported to ONNX\. torchscript: ValueError: unsup.*"
                       r"; dynamo: ValueError: unsupported operator$"):  # fmt: skip
        export.export_onnx(folder, log=lambda _: None)
    assert [p.name for p in (folder / "onnx").iterdir()] == ["model.onnx"]
    assert (folder / "onnx" / "model.onnx").read_bytes() == b"an earlier export"
    assert not (folder / ".onnx.partial").exists()


def test_an_export_that_disagrees_with_pytorch_is_refused(trained, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    monkeypatch.setattr(export._Job, "_dynamo", lambda self, path: (_ for _ in ()).throw(RuntimeError("no")))
    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)  # nothing is close enough
    with pytest.raises(BertsentError, match=r"torchscript: its output differs from PyTorch's \(largest probability"):
        export.export_onnx(folder, log=lambda _: None)
    assert not (folder / "onnx").exists() and not (folder / ".onnx.partial").exists()


def test_unknown_labels_and_bad_bounds_are_refused_before_exporting(trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    with pytest.raises(DataError, match="labels 'meh' are not among the model's classes"):
        export.export_onnx(folder, data=TextDataset(["fine"], ["meh"], name="odd"), log=lambda _: None)
    with pytest.raises(BertsentError, match=r"--max-drop nan: give accuracy points"):
        export.export_onnx(folder, max_drop=float("nan"), log=lambda _: None)
    assert not (folder / "onnx").exists()


@pytest.mark.parametrize(
    "rows, message",
    [
        ([("fine", "positive")] * 30, r"every row is labeled 'positive'; export --data needs at least two classes"),
        ([("fine", "positive"), ("dull", "negative")] * 4, r"8 labeled rows; export --data needs 20 at least"),
    ],
)
def test_data_of_one_class_or_too_few_rows_is_refused_and_the_model_left_as_it_was(
    rows, message, trained, tmp_path, write_csv, capsys, monkeypatch
):
    """A temperature fitted on one class (or a handful of rows) distorts every confidence: refused, exit 2, one
    line, before the model is loaded, the earlier export untouched."""
    from bertsent.cli import main

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "export.json").write_text('{"earlier": true}')
    monkeypatch.setattr(export, "_Job", lambda *a, **k: pytest.fail("the model was loaded"))
    data = write_csv(rows)
    assert main(["export", str(folder), "--int8", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert [p.name for p in (folder / "onnx").iterdir()] == ["export.json"]
    assert (folder / "onnx" / "export.json").read_text() == '{"earlier": true}'


def test_a_folder_that_cannot_be_written_is_refused_before_loading(trained, tmp_path, capsys, monkeypatch):
    from bertsent.cli import main

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    monkeypatch.setattr(export, "check_writable", lambda path: "Read-only file system")  # root writes anywhere
    monkeypatch.setattr(export, "_Job", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["export", str(folder), "--int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("cannot write onnx/ there (Read-only file system). Export a copy you can write.")
    assert len(err.splitlines()) == 1 and not (folder / "onnx").exists()


def test_int8_without_data_is_calibrated_on_the_training_sample_or_refused(trained, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    sample = hub.read_calibration_texts(folder)  # written by bertsent train
    assert 0 < len(sample) <= hub.CALIBRATION_TEXTS and set(sample) <= set(make_reviews(120, seed=1)[0])
    summary = export.export_onnx(folder, int8=True, log=lambda _: None, progress=False)
    quantization = summary["files"]["model_int8.onnx"]["quantization"]
    assert quantization["calibration_source"].startswith("the training sample")
    assert quantization["calibration_texts"] == len(sample) and quantization["method"].endswith("quantize_static")
    (folder / hub.CALIBRATION_FILE).unlink()
    with pytest.raises(BertsentError, match=r"--int8 needs texts to calibrate on .*: --data SRC$"):
        export.export_onnx(folder, int8=True, log=lambda _: None)
    assert (folder / "onnx" / "model_int8.onnx").is_file()  # the earlier export is untouched


def test_missing_export_or_onnxruntime_says_what_to_do(trained, monkeypatch):
    with pytest.raises(ModelError, match=r"has no onnx/model\.onnx\. Export it first: bertsent export "):
        bertsent.load(trained, backend="onnx")
    with pytest.raises(ModelError, match=r"has no onnx/model_int8\.onnx\. .*bertsent export .* --int8"):
        bertsent.load(trained, backend="onnx-int8")
    assert bertsent.load(trained, backend="auto").backend_name == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    collator = Collator(0)
    with pytest.raises(ModelError, match=r"ONNX Runtime is not installed: pip install 'bertsent\[onnx\]'"):
        backends.OnnxBackend(trained / "onnx" / "model.onnx", collator)
    with pytest.raises(ModelError, match=r"pip install 'bertsent\[onnx\]'"):
        export.export_onnx(trained, log=lambda _: None)


def test_a_damaged_onnx_file_is_a_model_error(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load the ONNX model .*Export it again: bertsent export"):
        backends.OnnxBackend(tmp_path / "onnx" / "model.onnx", Collator(0))


# ----------------------------------------------------------------------------- other architectures

# BERT is the fixture above; MPNet is the other packaged model; RoBERTa, slow, exports as MPNet does (positions
# counted from the padding id).
FAMILIES = ["distilbert", "gpt2", "mpnet", pytest.param("roberta", marks=pytest.mark.slow)]


def _tiny_base(family: str, tiny_model_dir, folder):
    """A 2-layer, 32-wide random base model; RoBERTa and MPNet reuse the WordPiece vocab (the ids are all
    the export sees)."""
    import torch
    from transformers import AutoModel, AutoTokenizer, MPNetConfig, RobertaConfig

    if family == "distilbert":
        return _tiny_distilbert(tiny_model_dir, folder)
    if family == "gpt2":
        return _tiny_gpt2(folder)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sizes = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,  # positions start after the padding id
        pad_token_id=tokenizer.pad_token_id,
    )
    config = RobertaConfig(**sizes) if family == "roberta" else MPNetConfig(**sizes)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def family_export(tiny_model_dir, tmp_path_factory):
    """family -> (classifier folder with a random 3-class head, export summary), built once each."""
    done = {}

    def get(family: str):
        if family not in done:
            root = tmp_path_factory.mktemp(family)
            base = _tiny_base(family, tiny_model_dir, root / "base")
            folder = root / "classifier"
            classifier = hub.load_classifier(str(base), ["negative", "neutral", "positive"])
            tokenizer = hub.load_tokenizer(str(base))
            hub.set_padding_token(classifier, tokenizer)
            classifier.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            done[family] = folder, export.export_onnx(folder, log=lambda _: None)
        return done[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_exports_and_agrees_with_torch(family, family_export):
    folder, summary = family_export(family)
    entry = summary["files"]["model.onnx"]
    assert summary["model_type"] == family and entry["exporter"] in export.EXPORTERS
    print(f"{family}: {entry['exporter']} exporter, {entry['bytes']} bytes, {summary['seconds']} s")
    assert entry["parity"]["max_prob_diff"] < 1e-4 and entry["parity"]["label_agreement"] == 1.0
    texts = VAL_TEXTS[:10] + MIXED_TEXTS
    if family == "gpt2":  # no special tokens: "" has no tokens at all, and nothing to classify from
        texts.remove("")
    torch_model = bertsent.load(folder, backend="torch")
    onnx_model = bertsent.load(folder, backend="onnx")
    assert np.allclose(onnx_model.predict_proba(texts), torch_model.predict_proba(texts), atol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_gpt2_takes_the_last_real_token_whichever_side_is_padded(side, family_export):
    """GPT-2 classifies from its last non-padding token (found from the padding id, end-of-text here): the
    export must find it in padded batches as PyTorch does, with the padding on either side. (On the left,
    GPT-2's positions shift with the padding, in PyTorch as in the export: its tokenizers pad on the right.)"""
    folder, _ = family_export("gpt2")
    tokenizer = hub.load_tokenizer(folder)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id and tokenizer.padding_side == "right"
    ids = encode(tokenizer, VAL_TEXTS[:12] + ["great"], 64)
    assert len({len(x) for x in ids}) > 3  # the batches are padded
    collator = Collator(tokenizer.pad_token_id, side)
    model = hub.load_classifier(folder)
    padded = predict_logits(model, ids, collator, batch_size=16)
    backend = backends.OnnxBackend(backends.onnx_path(folder, "onnx"), collator, batch_size=16)
    assert np.allclose(backend.logits(ids), padded, atol=1e-4)
    if side == "right":
        alone = predict_logits(model, ids, collator, batch_size=1)  # no padding at all
        assert np.allclose(padded, alone, atol=1e-5)


# ----------------------------------------------------------------------------- the real model


@pytest.mark.slow
def test_packaged_minilm_classifier_exports_with_parity(minilm_dir, tmp_path):
    folder = tmp_path / "minilm-classifier"
    classifier = hub.load_classifier(str(minilm_dir), ["negative", "positive"])
    tokenizer = hub.load_tokenizer(str(minilm_dir))
    classifier.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    hub.write_calibration_texts(folder, VAL_TEXTS)  # as training keeps them; no --data: no temperature refit
    summary = export.export_onnx(folder, int8=True, log=lambda _: None)
    assert summary["files"]["model.onnx"]["parity"]["max_prob_diff"] < 1e-4
    # int8 weights in every product of the 6 layers; the embedding tables (a third of the bytes) stay fp32
    assert summary["files"]["model_int8.onnx"]["bytes"] < summary["files"]["model.onnx"]["bytes"] * 0.7
    assert _products(folder / "onnx" / "model_int8.onnx") == {"int8, float out": 6 * 6}
    texts = VAL_TEXTS + MIXED_TEXTS
    reference = bertsent.load(folder, backend="torch").predict_proba(texts)
    assert np.allclose(bertsent.load(folder, backend="onnx").predict_proba(texts), reference, atol=1e-4)


def test_export_command_prints_what_it_wrote_and_evaluate_runs_the_export(trained, tmp_path, write_csv, capsys):
    from bertsent.cli import main

    folder = tmp_path / "model"
    shutil.copytree(trained, folder)
    data = write_csv(list(zip(VAL_TEXTS, VAL_LABELS)))
    assert main(["export", str(folder), "--int8", "--data", str(data), "--max-drop", "100"]) == 0
    out, err = capsys.readouterr()
    assert "model.onnx" in out and "model_int8.onnx" in out and "(PyTorch)" in out
    assert "Accuracy on" in out and "--backend auto picks onnx-int8" in out
    assert "parity with PyTorch" in err  # the progress lines go to stderr
    assert "int8 calibration" in err and "Scoring with PyTorch" in err and "Scoring with model_int8.onnx" in err
    assert (
        main(["evaluate", str(folder), "--data", str(data), "--backend", "onnx", "--out", str(tmp_path / "m.json")])
        == 0
    )
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["model"]["backend"] == "onnx" and metrics["accuracy"] >= 0.9
    assert "rows/s" in capsys.readouterr().err  # evaluate's progress bar ...
    assert main(["export", str(folder), "--int8", "--data", str(data), "--max-drop", "100", "--quiet"]) == 0
    assert main(["evaluate", str(folder), "--data", str(data), "--backend", "onnx-int8", "--quiet"]) == 0
    err = capsys.readouterr().err  # ... and none with --quiet: the log lines alone
    assert "parity with PyTorch" in err and "int8 calibration" not in err and "rows/s" not in err
    assert main(["export", str(folder), "--max-drop", "nan"]) == 2
    assert "--max-drop nan" in capsys.readouterr().err
