"""`bertsent export DIR`: the trained classifier as ONNX (fp32, and statically quantized int8 on request) in
DIR/onnx/, for the onnx and onnx-int8 prediction backends.

The model is exported by the TorchScript tracer (ONNX Runtime's transformer optimizer fuses attention in its
graph), or by torch.export (the "dynamo" exporter) when that fails, with the batch and sequence axes left
dynamic. Every exported file is checked against PyTorch on texts of varied lengths, padded in batches and
alone; an fp32 model that disagrees is not kept. With labeled data, each model's accuracy is measured and its
temperature refitted (onnx/export.json), and an int8 model that loses more than `max_drop` accuracy points
against PyTorch is deleted.

int8 is static quantization (prediction/quantize.py): the activations' ranges are measured once, here, on
calibration texts (the --data given, else the sample of training texts `bertsent train` keeps in the folder),
so a text's probabilities do not depend on the texts batched with it. (Dynamic quantization picks each
activation's scale from the whole batch tensor at run time: a text's answer moved with its neighbours,
onnxruntime #10111.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bertsent.checks import number
from bertsent.data.sources import DataOptions, TextDataset
from bertsent.errors import BertsentError, DataError, ModelError, first_line
from bertsent.evaluation.metrics import fit_temperature, softmax
from bertsent.files import check_writable, partial_folder, publish_folder, write_json_atomic
from bertsent.modeling import hub
from bertsent.modeling.batching import Collator
from bertsent.modeling.inference import predict_logits
from bertsent.modeling.tokens import CUTS, encode
from bertsent.prediction import backends
from bertsent.prediction.quantize import QUANTIZATION, quantize_int8
from bertsent.progress import progress_bar

FP32 = backends.ONNX_FILES["onnx"]
INT8 = backends.ONNX_FILES["onnx-int8"]
# TorchScript first: ONNX Runtime's transformer optimizer fuses attention in its graph (with eager attention),
# and fused nothing but layer norms and GELU in the dynamo exporter's.
EXPORTERS = ("torchscript", "dynamo")
# Encoder families whose graphs the optimizer's BERT fusions apply to (kept only when parity holds).
OPTIMIZABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert"}
PLAIN_DIR = ".plain"  # inside the export's work folder: the export before optimization, removed at the end
TORCHSCRIPT_OPSET = 17
# Largest probability difference from PyTorch an fp32 export may show (float32 kernels differ in rounding;
# a real model shows ~1e-6, a broken graph ~1e-1).
FP32_TOLERANCE = 1e-3
# Weights above this size go to an external-data file beside the model (ONNX's protobuf limit is 2 GiB).
EXTERNAL_DATA_BYTES = 1536 << 20
PARITY_DATA_ROWS = 16
CALIBRATION_TEXTS = hub.CALIBRATION_TEXTS  # texts the activation ranges are measured on, at most
# Fewest labeled rows export --data takes: fewer cannot fit a temperature (nor measure accuracy) sensibly.
MIN_DATA_ROWS = 20
PARITY_BATCH = 4
SAMPLE_TEXTS = [
    "Great.",
    "Dull, slow and far too long.",
    "I loved every minute of it: the cast is superb and the ending is moving.",
    "Not the worst film I have seen this year, but the plot makes no sense and the acting is wooden.",
    "A beautiful, patient film. " * 6 + "I would watch it again tomorrow.",
    "meh",
    # Longer than any model's length: cut to max_length, so the largest positions are checked too.
    "The story starts well enough, then loses its way in a middle hour of subplots nobody asked for. " * 60,
]


def export_onnx(
    model_dir: str | os.PathLike,
    *,
    int8: bool = False,
    data: str | os.PathLike | TextDataset | None = None,
    max_drop: float = 0.5,
    text_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
    log=print,
    label_map: str | dict | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict:
    """Export the classifier in `model_dir` to model_dir/onnx/model.onnx (and model_int8.onnx with `int8`).

    `data` (a labeled source as `read_data` takes, or a TextDataset, two classes and MIN_DATA_ROWS rows at
    least): accuracy of PyTorch and of each export on it, each export's temperature refitted on it, int8
    calibrated on it, and the int8 model kept only when its accuracy is at most `max_drop` percentage points
    below PyTorch's. Without data, int8 is calibrated on the training sample the folder keeps. The onnx
    folder is replaced whole, once everything in it is written and checked; progress goes to `log`, one line
    at a time, and the long steps show a bar on stderr (`progress`).

    Returns {"folder", "onnx_dir", "model_type", "max_length", "truncation" (what the texts were cut to),
    "files": {file name: {"path", "bytes", "exporter" ("dynamo" or "torchscript"), "opset", "seconds",
    "parity", ["failed_exporters"], ["quantization"], ["accuracy", "temperature"] with data}} for the files
    kept, "parity": {file name: {"texts", "labels_agree", "label_agreement", "max_prob_diff",
    "max_logit_diff"}}, "evaluation": None or {"data", "n", "accuracy": {"torch", file name: ...},
    "max_drop"}, "int8_kept" (None without int8), "int8_reason" (why not kept), "seconds"}."""
    started = time.perf_counter()
    number("max_drop", max_drop, rule="give accuracy points, e.g. 0.5 (0.005 accuracy)")
    _check_packages()
    folder = Path(model_dir).expanduser()
    hub.check_model_folder(folder, need_classifier=True)
    onnx_dir = folder / backends.ONNX_DIR
    problem = check_writable(onnx_dir)
    if problem:  # before minutes of loading and exporting, not after
        raise BertsentError(f"{folder}: cannot write {onnx_dir.name}/ there ({problem}). Export a copy you can write.")
    hub.check_safe_weights(folder, allow_pickle)  # loading options: as `bertsent.load` takes them
    # The data and the calibration texts are checked before the model is loaded: a refusal costs no time.
    classes = _classes(folder, trust_remote_code)
    reading = DataOptions(text_column=text_column, label_column=label_column, label_map=label_map, encoding=encoding)
    dataset = _read_labeled(data, classes, reading) if data is not None else None
    calibration = _calibration_texts(folder, dataset) if int8 else None
    job = _Job(folder, log, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, progress=progress)
    parity_texts = SAMPLE_TEXTS + (dataset.texts[:PARITY_DATA_ROWS] if dataset is not None else [])
    job.parity_ids = encode(job.tokenizer, parity_texts, job.max_length, job.truncation)
    log(
        f"Exporting {folder} ({job.model_type}, {hub.parameter_count(job.model) / 1e6:.1f}M parameters, "
        f"{job.max_length} tokens at most) to ONNX"
    )
    work = partial_folder(onnx_dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        entries = {FP32: job.export_fp32(work / FP32)}
        if calibration is not None:  # asked for int8
            entries[INT8] = job.quantize(job.plain, work / INT8, entries[FP32]["exporter"], calibration)
        shutil.rmtree(work / PLAIN_DIR)
        evaluation = job.evaluate(dataset, work, entries, max_drop) if dataset is not None else None
        if int8 and dataset is None:
            log(f"{INT8}: kept without an accuracy check (pass labeled data with --data to measure it)")
        for name, entry in entries.items():
            if entry.get("kept", True):
                entry["bytes"] = _file_bytes(work, name)
        _write_metadata(work, job, entries, dataset)
        publish_folder(work, onnx_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    log(f"Wrote {onnx_dir} in {seconds:.1f} s")
    int8_entry = entries.get(INT8)
    return {
        "folder": str(folder),
        "onnx_dir": str(onnx_dir),
        "model_type": job.model_type,
        "max_length": job.max_length,
        "truncation": job.truncation,
        "files": {
            name: {**entry, "path": str(onnx_dir / name)} for name, entry in entries.items() if entry.get("kept", True)
        },
        "parity": {name: entry["parity"] for name, entry in entries.items()},
        "evaluation": evaluation,
        "int8_kept": None if int8_entry is None else int8_entry.get("kept", True),
        "int8_reason": None if int8_entry is None else int8_entry.get("reason"),
        "seconds": round(seconds, 2),
    }


def _classes(folder: Path, trust_remote_code: bool) -> list[str]:
    """The model's class names, from its config (without loading the weights)."""
    config = hub.load_config(folder, trust_remote_code=trust_remote_code)
    return [config.id2label[i] for i in range(config.num_labels)]


def _calibration_texts(folder: Path, dataset: TextDataset | None) -> dict:
    """The texts int8's activation ranges are measured on: --data's, else the folder's training sample."""
    if dataset is not None:
        texts, source = dataset.texts, dataset.name or "--data"
    else:
        texts, source = hub.read_calibration_texts(folder), f"the training sample ({hub.CALIBRATION_FILE})"
    if not texts:
        raise BertsentError(
            f"{folder}: --int8 needs texts to calibrate on and this folder keeps no sample of its training texts "
            f"(trained elsewhere or by an older bertsent). Give labeled texts like those it will score: --data SRC"
        )
    if len(texts) > CALIBRATION_TEXTS:
        picked = np.random.default_rng(0).permutation(len(texts))[:CALIBRATION_TEXTS]
        texts = [texts[i] for i in sorted(picked.tolist())]
    return {"texts": list(texts), "source": source}


def _check_packages() -> None:
    backends.import_onnxruntime()
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError("The onnx package is not installed: pip install 'bertsent[onnx]'") from None


def _read_labeled(data, classes: list[str], reading: DataOptions) -> TextDataset:
    dataset = reading.read(data, default_split="test")
    name = dataset.name or data
    if not dataset.labels:
        raise DataError(f"{name}: no labels; export --data needs labeled data to measure accuracy.")
    unknown = sorted(set(dataset.labels) - set(classes))
    if unknown:
        raise DataError(
            f"{name}: labels {', '.join(map(repr, unknown))} are not among the model's "
            f"classes ({', '.join(classes)}). Use data with the model's labels."
        )
    present = sorted(set(dataset.labels))
    if len(present) < 2:  # a temperature fitted on one class only grows confidence in it: distorted scores
        raise DataError(
            f"{name}: every row is labeled {present[0]!r}; export --data needs at least two classes to measure "
            f"accuracy and fit a temperature. Use labeled data with the model's classes ({', '.join(classes)})."
        )
    if len(dataset) < MIN_DATA_ROWS:
        raise DataError(
            f"{name}: {len(dataset)} labeled rows; export --data needs {MIN_DATA_ROWS} at least to measure "
            f"accuracy and fit a temperature. Use more labeled data."
        )
    return dataset


class _Logits(torch.nn.Module):
    """The classifier with the two inputs the export takes and its logits as the one output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class _Job:
    """One export: the PyTorch model and tokenizer, the ids the exports are checked on, the log."""

    def __init__(
        self, folder: Path, log, allow_pickle: bool = False, trust_remote_code: bool = False, progress: bool = True
    ):
        self.folder = folder
        self.log = log
        self.progress = progress
        self.tokenizer = hub.load_tokenizer(folder, trust_remote_code=trust_remote_code)
        self.model = hub.load_classifier(folder, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        hub.set_padding_token(self.model, self.tokenizer)
        if getattr(self.model.config, "use_cache", False):
            self.model.config.use_cache = False  # GPT-2 style: no key/value cache in a classifier's graph
        self.model.eval()
        self.model_type = self.model.config.model_type
        self.classes = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        metadata = hub.read_metadata(folder)
        self.limit = hub.model_max_length(self.tokenizer, self.model.config)
        self.max_length = min(metadata.get("max_length") or self.limit, self.limit)
        self.truncation = metadata.get("truncation") or "head"
        if self.truncation not in CUTS:  # windows: parity and accuracy on each text's first window
            self.truncation = "head"
        self.collator = Collator(self.tokenizer.pad_token_id, self.tokenizer.padding_side)
        self.parity_ids: list[list[int]] = []
        self._torch_parity: np.ndarray | None = None
        self.tried: dict[str, str] = {}  # exporter -> why it was not used

    # -- fp32 ------------------------------------------------------------------------------------------------

    def export_fp32(self, path: Path) -> dict:
        """The model exported to `path`, optimized by ONNX Runtime's transformer optimizer when that keeps
        parity; the plain export stays in `self.plain` (the int8 model is quantized from it)."""
        self.plain = path.parent / PLAIN_DIR / path.name
        self.plain.parent.mkdir(exist_ok=True)
        for exporter in EXPORTERS:
            started = time.perf_counter()
            try:
                with _quiet():
                    (self._dynamo if exporter == "dynamo" else self._torchscript)(self.plain)
                self.log(f"{FP32}: {exporter} exporter, {time.perf_counter() - started:.1f} s")
            except Exception as exc:  # noqa: BLE001 - either exporter fails in many ways; the next one is tried
                self.tried[exporter] = first_line(exc, named=True)
                self.log(f"{FP32}: the {exporter} exporter failed: {self.tried[exporter]}")
                _remove_model(self.plain)
                continue
            seconds = round(time.perf_counter() - started, 2)
            optimized = self._optimized(self.plain, path)
            parity = self.parity(path, FP32) if optimized["fused"] else None
            if parity is not None and parity["max_prob_diff"] > FP32_TOLERANCE:
                optimized = {"fused": None, "reason": f"parity lost ({parity['max_prob_diff']:.2g})"}
                self.log(f"{FP32}: the optimized graph is not kept: {optimized['reason']}")
            if parity is None or not optimized["fused"]:
                _copy_model(self.plain, path)
                parity = self.parity(path, FP32)
            if parity["max_prob_diff"] <= FP32_TOLERANCE:
                entry = {"exporter": exporter, "opset": _opset(path), "seconds": seconds, "parity": parity}
                entry["optimized"] = optimized
                if self.tried:
                    entry["failed_exporters"] = dict(self.tried)
                return entry
            self.tried[exporter] = (
                f"its output differs from PyTorch's (largest probability difference "
                f"{parity['max_prob_diff']:.2g} > {FP32_TOLERANCE:g})"
            )
            self.log(f"{FP32}: the {exporter} export is not kept: {self.tried[exporter]}")
            _remove_model(path)
            _remove_model(self.plain)
        reasons = "; ".join(f"{name}: {why}" for name, why in self.tried.items())
        raise BertsentError(f"{self.folder} ({self.model_type}) cannot be exported to ONNX. {reasons}")

    def _optimized(self, source: Path, path: Path, multi_head: bool = False) -> dict:
        """ONNX Runtime's transformer optimizer on `source`, written to `path`: attention, layer norms and GELU
        fused into single kernels. {"fused": {op: count}} when it fused attention, else {"fused": None,
        "reason"} and nothing written. `multi_head`: attention fused without its input projections, which
        stay MatMuls (quantizable)."""
        if self.model_type not in OPTIMIZABLE:
            return {"fused": None, "reason": f"no transformer optimizer for {self.model_type}"}
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions

        options = FusionOptions("bert")
        options.use_multi_head_attention = multi_head
        config = self.model.config
        try:
            with _quiet():
                optimized = optimizer.optimize_model(
                    str(source),
                    model_type="bert",
                    num_heads=config.num_attention_heads,
                    hidden_size=config.hidden_size,
                    optimization_options=options,
                    opt_level=0,
                )
                fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
                if not fused.get("MultiHeadAttention" if multi_head else "Attention"):
                    return {"fused": None, "reason": "the optimizer fused no attention"}
                optimized.save_model_to_file(str(path), use_external_data_format=self._external())
        except Exception as exc:  # noqa: BLE001 - the optimizer fails in many ways: the plain export is kept
            _remove_model(path)
            return {"fused": None, "reason": first_line(exc, named=True)}
        self.log(f"{path.name}: optimized ({', '.join(f'{op} {n}' for op, n in fused.items())})")
        return {"fused": fused}

    def _example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Two padded sequences of different lengths (a batch or length of 1 would be fixed in the graph)."""
        by_length = sorted((x for x in self.parity_ids if len(x) >= 3), key=len)
        batch = self.collator([(by_length[0], None), (by_length[-1][: max(len(by_length[0]) + 2, 8)], None)])
        return batch["input_ids"], batch["attention_mask"]

    def _external(self) -> bool:
        return hub.parameter_count(self.model) * 4 > EXTERNAL_DATA_BYTES

    def _dynamo(self, path: Path) -> None:
        batch = torch.export.Dim("batch")
        sequence = torch.export.Dim("sequence", max=self.limit)
        axes = {0: batch, 1: sequence}
        self._onnx_export(
            path,
            dynamic_shapes={"input_ids": axes, "attention_mask": axes},
            dynamo=True,
            external_data=self._external(),
            verbose=False,
        )

    def _torchscript(self, path: Path) -> None:
        axes = {0: "batch", 1: "sequence"}
        with _eager_attention(self.model):  # the attention pattern ONNX Runtime's optimizer fuses
            self._onnx_export(
                path,
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}},
                opset_version=TORCHSCRIPT_OPSET,
                dynamo=False,
            )

    def _onnx_export(self, path: Path, **exporter) -> None:
        """The logits graph of token ids and mask, written to `path` by the exporter `exporter` describes."""
        torch.onnx.export(
            _Logits(self.model).eval(),
            self._example(),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            **exporter,
        )

    # -- checks ----------------------------------------------------------------------------------------------

    def torch_logits(self, ids: list[list[int]], batch_size: int = PARITY_BATCH, progress=None) -> np.ndarray:
        return predict_logits(self.model, ids, self.collator, batch_size, device=torch.device("cpu"), progress=progress)

    def parity(self, path: Path, name: str) -> dict:
        """The export against PyTorch on the parity texts, in padded batches and one at a time."""
        if self._torch_parity is None:
            self._torch_parity = self.torch_logits(self.parity_ids)
        reference = self._torch_parity
        batched = backends.OnnxBackend(path, self.collator, PARITY_BATCH).logits(self.parity_ids)
        alone = backends.OnnxBackend(path, self.collator, 1).logits(self.parity_ids)
        expected = reference.argmax(axis=1)
        agree = int(((batched.argmax(axis=1) == expected) & (alone.argmax(axis=1) == expected)).sum())
        prob_diff = max(_largest_gap(softmax(reference), softmax(out)) for out in (batched, alone))
        parity = {
            "texts": len(self.parity_ids),
            "labels_agree": agree,
            "label_agreement": agree / len(self.parity_ids),
            "max_prob_diff": prob_diff,
            "max_logit_diff": max(_largest_gap(reference, out) for out in (batched, alone)),
        }
        self.log(
            f"{name}: parity with PyTorch on {parity['texts']} texts: labels {agree}/{parity['texts']} agree, "
            f"largest probability difference {prob_diff:.2g}"
        )
        return parity

    # -- int8 ------------------------------------------------------------------------------------------------

    def quantize(self, source: Path, path: Path, exporter: str, calibration: dict) -> dict:
        """The fp32 model at `source` (exported by `exporter`) statically quantized to int8, its activation
        ranges measured on `calibration`'s texts (each alone, unpadded: the ranges of real tokens only)."""
        from onnxruntime.quantization.shape_inference import quant_pre_process

        started = time.perf_counter()
        external = self._external()
        # Cut at the model's limit, not the training length: prediction may be asked for the longer texts
        # (--long head --max-length 512), and the ranges must cover the positions it reads then.
        ids = encode(self.tokenizer, calibration["texts"], self.limit, self.truncation)
        ids = [x for x in ids if x] or self.parity_ids
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".quantize-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            # Attention fused without its projections, which stay MatMuls and are quantized.
            optimized = self._optimized(source, prepared, multi_head=True)
            try:
                with _quiet():
                    if optimized["fused"]:
                        # The fused ops' output types, which ONNX's own shape inference does not know: without
                        # them the calibration measures no range for the products they feed.
                        shaped = Path(tmp) / "shaped.onnx"
                        quant_pre_process(
                            str(prepared), str(shaped), skip_optimization=True, auto_merge=True,
                            save_as_external_data=external,
                        )  # fmt: skip
                        prepared = shaped
                    else:
                        # ONNX shape inference and ORT's basic graph optimisations. (Symbolic shape inference
                        # fails on the dynamo exporter's dynamic-length graphs: skipped.)
                        quant_pre_process(
                            str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=external
                        )
            except Exception as exc:  # noqa: BLE001 - a preparation failure only leaves the graph as exported
                self.log(f"{INT8}: pre-processing skipped ({first_line(exc, named=True)})")
                prepared = source
            try:
                with _quiet():
                    quantize_int8(prepared, path, ids, external=external, progress=self.progress)
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's quantizer raises many kinds
                raise BertsentError(
                    f"{self.folder} ({self.model_type}): int8 quantization failed "
                    f"({first_line(exc, named=True)}). "
                    f"Export without --int8 for the fp32 model."
                ) from None
        seconds = round(time.perf_counter() - started, 2)
        self.log(
            f"{INT8}: static int8 quantization calibrated on {len(ids)} texts of {calibration['source']}, "
            f"{seconds:.1f} s"
        )
        quantization = {**QUANTIZATION, "calibration_texts": len(ids), "calibration_source": calibration["source"]}
        entry = {"exporter": exporter, "opset": _opset(path), "seconds": seconds, "quantization": quantization}
        return {**entry, "optimized": optimized, "parity": self.parity(path, INT8)}

    # -- accuracy on labeled data ----------------------------------------------------------------------------

    def evaluate(self, dataset: TextDataset, work: Path, entries: dict, max_drop: float) -> dict:
        """Accuracy of PyTorch and each export on `dataset`; temperatures refitted; int8 kept or deleted."""
        ids = encode(self.tokenizer, dataset.texts, self.max_length, self.truncation)
        index = {name: i for i, name in enumerate(self.classes)}
        assert dataset.labels is not None  # labeled data: read so
        y = np.array([index[label] for label in dataset.labels])
        self.log(f"Scoring {len(ids)} texts of {dataset.name or 'the data'} with PyTorch and each export")
        with progress_bar(len(ids), "Scoring with PyTorch", self.progress) as advance:
            torch_accuracy = _accuracy(self.torch_logits(ids, 64, advance), y)
        accuracies = {"torch": torch_accuracy}
        for name, entry in entries.items():
            with progress_bar(len(ids), f"Scoring with {name}", self.progress) as advance:
                logits = backends.OnnxBackend(work / name, self.collator, 64).logits(ids, advance)
            entry["accuracy"] = accuracies[name] = _accuracy(logits, y)
            entry["temperature"] = fit_temperature(logits, y)
        temperatures = ", ".join(f"{name} {entry['temperature']:.3f}" for name, entry in entries.items())
        scores = ", ".join(f"{name} {value:.4f}" for name, value in accuracies.items())
        self.log(f"Accuracy: {scores} (temperatures refitted: {temperatures})")
        if INT8 in entries:
            drop = (torch_accuracy - entries[INT8]["accuracy"]) * 100
            entries[INT8]["accuracy_drop_points"] = drop
            if drop > max_drop:
                reason = (
                    f"int8 model not kept: accuracy {entries[INT8]['accuracy']:.3f} vs {torch_accuracy:.3f} "
                    f"(drop {drop:.1f} > {max_drop:g} points)"
                )
                (work / INT8).unlink()
                Path(f"{work / INT8}.data").unlink(missing_ok=True)
                entries[INT8].update(kept=False, reason=reason)
                del entries[INT8]["temperature"]
                self.log(reason)
        return {"data": dataset.name, "n": len(ids), "accuracy": accuracies, "max_drop": max_drop}


def _accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == y)) if len(y) else 0.0


def _largest_gap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b))) if a.size else 0.0


def _write_metadata(work: Path, job: _Job, entries: dict, dataset: TextDataset | None) -> None:
    import onnxruntime

    payload = {
        **entries,
        "model_type": job.model_type,
        "max_length": job.max_length,
        "truncation": job.truncation,
        "data": None if dataset is None else {"name": dataset.name, "n": len(dataset), "hash": dataset.fingerprint()},
        "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(work / backends.ONNX_METADATA, json.loads(json.dumps(payload, default=float)))


def _file_bytes(work: Path, name: str) -> int:
    data = work / f"{name}.data"
    return (work / name).stat().st_size + (data.stat().st_size if data.exists() else 0)


def _opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _copy_model(source: Path, path: Path) -> None:
    shutil.copyfile(source, path)
    if Path(f"{source}.data").exists():
        shutil.copyfile(f"{source}.data", f"{path}.data")


@contextlib.contextmanager
def _eager_attention(model):
    """The model with its plain ("eager") attention while exported: SDPA's graph is not one the optimizer
    fuses. Models that have no other attention are left as they are."""
    before = getattr(model.config, "_attn_implementation", None)
    try:
        model.set_attn_implementation("eager")
    except Exception:  # noqa: BLE001 - an architecture without the choice: exported as it is
        before = None
    try:
        yield
    finally:
        if before not in (None, "eager"):
            model.set_attn_implementation(before)


def _remove_model(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.data").unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet():
    """The exporters' and quantizer's warnings and notes (tracer warnings, missing torchvision ops, the
    quantizer's advice) are not the user's business: silenced while they run."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript", "root", "onnxruntime")
    loggers = [logging.getLogger(name if name != "root" else None) for name in names]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
