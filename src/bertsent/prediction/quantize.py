"""Static int8 for an exported ONNX model: SmoothQuant, then ONNX Runtime's static quantization in QDQ form.

Every matrix product with a constant weight (the attention projections, both feed-forward products) gets int8
weights per output channel and an int8 input whose scale and zero point are fixed here, from calibration
texts, so a text's probabilities do not depend on the texts batched with it. The products' outputs stay
float: ONNX Runtime runs each as MatMulIntegerToFloat. (Requantizing them, as the QOperator form does, cost
most of int8's accuracy: the feed-forward output of a fine-tuned MiniLM ranges over +-190 with a spread of
0.3, so 8 bits of it are steps of 1.5.) Attention scores, softmax, layer norms, the embedding tables and the
classifier head stay fp32.

SmoothQuant (Xiao et al., 2023) first moves the activations' outlier channels into the weights: a product
x @ W becomes (x / s) @ (s * W), s = max|x|^alpha / max|W|^(1 - alpha) per input channel, so one scale per
tensor serves every channel of x. On a fine-tuned MiniLM (500 IMDB reviews at 512 tokens) this took the
mean probability difference from fp32 from 0.015 to 0.009-0.010 with calibration texts from another corpus
or the same one; alpha 0.5 did worse (0.023), 0.7-0.85 about the same (bench/RESULTS.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bertsent.progress import progress_bar

SMOOTHING_ALPHA = 0.75
QUANTIZATION = {
    "method": "onnxruntime.quantization.quantize_static",
    "format": "QDQ, float outputs (MatMulIntegerToFloat)",
    "ops": "MatMul with a constant weight",
    "weights": "QInt8",
    "per_channel": True,
    "activations": "QUInt8",
    "calibration": "MinMax",
    "smoothing": {"method": "SmoothQuant", "alpha": SMOOTHING_ALPHA},
}


def quantize_int8(source: Path, path: Path, ids: list[list[int]], *, external: bool, progress: bool = True) -> None:
    """`source` (an fp32 ONNX model with shapes inferred) written to `path` as static int8, smoothed and
    calibrated on `ids` (each text alone, unpadded: the ranges of real tokens only)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    bar = progress_bar(2 * len(ids), "int8 calibration", progress, unit="texts")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".smooth-") as tmp, bar as advance:
        smoothed = Path(tmp) / "smoothed.onnx"
        smooth(source, smoothed, ids, external=external, advance=advance)
        quantize_static(
            str(smoothed),
            str(path),
            CalibrationReader(ids, advance),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, str(QUANTIZATION["calibration"])),
            use_external_data_format=external,
            extra_options={
                # Attention's two products of activations stay fp32: their ranges vary most per text.
                "MatMulConstBOnly": True,
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )


def smooth(source: Path, path: Path, ids: list[list[int]], *, external: bool, advance=None) -> int:
    """SmoothQuant on `source`, written to `path`: before each group of products that share an input, a Mul
    by 1/s, and their weights' rows times s. Returns how many inputs were smoothed."""
    import onnx

    model = onnx.load(str(source))
    weights = {w.name: w for w in model.graph.initializer}
    groups = _products_by_input(model.graph, weights)
    maxima = _input_maxima(model, list(groups), ids, external, advance)
    made_by = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    inserted: dict[int, list] = {}
    for tensor, products in groups.items():
        smoothed = f"{tensor}_smoothed"
        inverse = _scale_weights([weights[p.input[1]] for p in products], maxima[tensor], f"{tensor}_smoothing")
        model.graph.initializer.append(inverse)
        mul = onnx.helper.make_node("Mul", [tensor, inverse.name], [smoothed], name=f"{tensor}_smoothing")
        inserted.setdefault(made_by.get(tensor, -1), []).append(mul)  # -1: a graph input, first in the graph
        for p in products:
            p.input[0] = smoothed
    nodes = list(inserted.get(-1, []))
    for i, node in enumerate(model.graph.node):  # each Mul right after what makes its input: still in order
        nodes += [node, *inserted.get(i, [])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path), save_as_external_data=external)
    return len(groups)


def _products_by_input(graph, weights: dict) -> dict[str, list]:
    """{input tensor: the MatMuls with a constant 2-D weight that read it} (the attention projections share
    theirs). Products of two activations (attention scores) are not smoothed."""
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    groups: dict[str, list] = {}
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        # A weight read elsewhere too (tied) cannot be scaled for this product alone.
        if weight is not None and len(weight.dims) == 2 and readers[weight.name] == 1 and node.input[0] not in weights:
            groups.setdefault(node.input[0], []).append(node)
    return groups


def _input_maxima(model, tensors: list[str], ids: list[list[int]], external: bool, advance) -> dict[str, np.ndarray]:
    """Each tensor's largest magnitude per channel (its last axis) over the calibration texts."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path), save_as_external_data=external)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    reader = CalibrationReader(ids, advance)
    while (inputs := reader.get_next()) is not None:
        for name, value in zip(tensors, session.run(tensors, inputs)):
            top = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            maxima[name] = np.maximum(maxima[name], top) if name in maxima else top
    return maxima


def _scale_weights(weights: list, x_max: np.ndarray, name: str):
    """Each weight's rows times s, in place; returns 1/s as an initializer named `name`."""
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(w) for w in weights]
    w_max = np.max([np.abs(a).max(axis=1) for a in arrays], axis=0)
    # A channel never seen (all zeros) or a zero row keeps scale 1.
    seen = (x_max > 0) & (w_max > 0)
    balanced = np.maximum(x_max, 1e-5) ** SMOOTHING_ALPHA / np.maximum(w_max, 1e-5) ** (1 - SMOOTHING_ALPHA)
    scale = np.where(seen, balanced, 1.0).astype(np.float32)
    for weight, array in zip(weights, arrays):
        weight.CopyFrom(numpy_helper.from_array((array * scale[:, None]).astype(array.dtype), weight.name))
    return numpy_helper.from_array((1.0 / scale).astype(np.float32), name)


class CalibrationReader:
    """Calibration inputs for ONNX Runtime's quantizer: one text at a time, so no padding enters the ranges."""

    def __init__(self, ids: list[list[int]], advance=None):
        self.ids = ids
        self.advance = advance
        self.rewind()

    def get_next(self) -> dict | None:
        x = next(self._next, None)
        if x is None:
            return None
        if self.advance is not None:
            self.advance(1)
        tokens = np.array([x], dtype=np.int64)
        return {"input_ids": tokens, "attention_mask": np.ones_like(tokens)}

    def rewind(self) -> None:
        self._next = iter(self.ids)
