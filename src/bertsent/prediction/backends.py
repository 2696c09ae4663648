"""Where a trained model's logits come from: PyTorch, or the model exported to ONNX (fp32 or int8) and run by
ONNX Runtime. Each backend takes token-id lists and returns logits in their order, in length-sorted batches
so little is padded; each is built once per loaded model, never per call."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bertsent.defaults import BACKENDS
from bertsent.errors import ModelError
from bertsent.modeling.batching import Collator, LengthBucketBatchSampler

ONNX_DIR = "onnx"
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model_int8.onnx"}
ONNX_METADATA = "export.json"  # per exported file: parity, accuracy, refitted temperature

Progress = Callable[[int], None]  # called with the number of sequences just scored
# ONNX Runtime on CPU slows down per text as a batch grows long: MiniLM exported (fp32), 32 reviews of 512
# tokens ran 3.6/s in batches of 16 and 9.9/s one at a time, while 1,000 snippets ran fastest at about 512
# padded tokens a batch (371/s against 331/s in batches of 64). So ONNX batches hold about that many tokens.
ONNX_BATCH_TOKENS = 512


def onnx_path(folder: Path, backend: str) -> Path:
    return Path(folder) / ONNX_DIR / ONNX_FILES[backend]


def resolve_backend(name: str, folder: Path | None, device_type: str) -> str:
    """The backend `name` stands for: "auto" is the int8 model, else the fp32 one, when the folder has it and
    the device is the CPU (ONNX Runtime here runs on CPU), else torch."""
    if name not in BACKENDS:
        raise ModelError(f"backend {name!r}: use one of {', '.join(BACKENDS)}.")
    if name == "auto":
        if folder is None or device_type != "cpu":
            return "torch"
        return next((b for b in ("onnx-int8", "onnx") if onnx_path(folder, b).is_file()), "torch")
    if name != "torch" and (folder is None or not onnx_path(folder, name).is_file()):
        where = folder if folder is not None else "this model"
        int8 = " --int8" if name == "onnx-int8" else ""
        raise ModelError(
            f"backend {name}: {where} has no {ONNX_DIR}/{ONNX_FILES[name]}. Export it first: "
            f"bertsent export {where}{int8}"
        )
    return name


def default_threads() -> int:
    """The cores this process may use (a container's or taskset's limit, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class TorchBackend:
    name = "torch"

    def __init__(self, model, collator: Collator, device, batch_size: int = 64, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        from bertsent.runtime import scoring_dtype

        self.model = model.to(device).eval()
        self.collator = collator
        self.device = device
        self.batch_size = batch_size
        self.autocast_dtype = scoring_dtype(device)

    def logits(self, ids: list[list[int]], progress: Progress | None = None) -> np.ndarray:
        from bertsent.modeling.inference import predict_logits

        return predict_logits(
            self.model,
            ids,
            self.collator,
            self.batch_size,
            device=self.device,
            autocast_dtype=self.autocast_dtype,
            progress=progress,
        )


def onnx_temperature(folder: Path, backend: str) -> float | None:
    """The temperature refitted for an exported model on `bertsent export --data`, if it was."""
    if backend == "torch":
        return None
    import json

    path = Path(folder) / ONNX_DIR / ONNX_METADATA
    try:
        entry = json.loads(path.read_text()).get(ONNX_FILES[backend], {})
    except (OSError, ValueError, AttributeError):
        return None
    value = entry.get("temperature") if isinstance(entry, dict) else None
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def import_onnxruntime():
    """The onnxruntime module, or a ModelError that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError("ONNX Runtime is not installed: pip install 'bertsent[onnx]'") from None
    return onnxruntime


class OnnxBackend:
    """An exported model run by ONNX Runtime on the CPU: one session, built here, for every call."""

    def __init__(
        self, path: Path, collator: Collator, batch_size: int = 64, threads: int | None = None, spinning: bool = True
    ):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            folder = path.parent.parent
            raise ModelError(f"{path}: no such ONNX model. Export it first: bertsent export {folder}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:
            # Threads that sleep between operations instead of spinning: where other work shares the cores (the
            # server's event loop), spinning took them from it (ONNX int8 MiniLM, 2 cores, 64 clients: 40 against
            # 51 reviews/s, 5 runs each).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: the optimizer's notes are not the user's business
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own kinds for damaged or foreign files
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"{path}: cannot load the ONNX model ({detail}). Export it again: bertsent export {path.parent.parent}"
            ) from None
        self.path = path
        self.inputs = {i.name for i in self.session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self.inputs
        if missing:
            raise ModelError(
                f"{path}: the ONNX model takes no {', '.join(sorted(missing))}; it was not written by bertsent "
                f"export. Export it again: bertsent export {path.parent.parent}"
            )
        outputs = self.session.get_outputs()
        self.output = next((o.name for o in outputs if o.name == "logits"), outputs[0].name)
        width = next(o.shape for o in outputs if o.name == self.output)[-1]
        self.num_labels = width if isinstance(width, int) else None
        self.collator = collator
        self.batch_size = batch_size

    def logits(self, ids: list[list[int]], progress: Progress | None = None) -> np.ndarray:
        lengths = [len(x) for x in ids]
        sampler = LengthBucketBatchSampler(lengths, self.batch_size, max_tokens=ONNX_BATCH_TOKENS, shuffle=False)
        order, parts = [], []
        for batch_indices in sampler:
            feeds = self.collator.pad([(ids[i], None) for i in batch_indices])
            if "token_type_ids" in self.inputs:
                feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
            parts.append(self.session.run([self.output], feeds)[0])
            order += batch_indices
            if progress is not None:
                progress(len(batch_indices))
        width = parts[0].shape[1] if parts else (self.num_labels or 0)
        out = np.zeros((len(ids), width), dtype=np.float32)
        if parts:
            out[order] = np.concatenate(parts).astype(np.float32, copy=False)
        return out
