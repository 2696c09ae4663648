"""Helpers shared by the benchmarks: model specs, data sampling, machine description, tables, FLOP counts, servers."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

DEFAULT_IMDB = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "aclImdb_v1_labeled.tar.xz")


# Random-weight models by name: BERT-base's shape, and tiny BERT / MPNet ones for smoke runs (SMOKE=1).
RANDOM_MODELS = {
    "bert-base": ("bert", {}),
    "tiny-bert": ("bert", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)),
    "tiny-mpnet": ("mpnet", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=514, pad_token_id=0)),
}  # fmt: skip


def model_spec(name: str, workdir: Path) -> str:
    """`bert-base` (a BertConfig() model), `tiny-bert`, `tiny-mpnet`: random weights and the packaged MiniLM's
    uncased vocab, written once to `workdir`; anything else is passed through (alias, folder or Hub id)."""
    if name not in RANDOM_MODELS:
        return name
    from transformers import AutoTokenizer, BertConfig, BertModel, MPNetConfig, MPNetModel

    from bertsent.modeling.hub import resolve_model

    kind, shape = RANDOM_MODELS[name]
    folder = Path(workdir) / f"{name}-random"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = BertModel(BertConfig(**shape)) if kind == "bert" else MPNetModel(MPNetConfig(**shape))
        model.save_pretrained(folder)
        # The uncased WordPiece vocab: the packaged MiniLM's, or (on a machine without the package)
        # the folder named by BERTSENT_VOCAB_MODEL, e.g. .gpu/minilm16.
        vocab_source = os.environ.get("BERTSENT_VOCAB_MODEL") or resolve_model("minilm")
        AutoTokenizer.from_pretrained(vocab_source, model_max_length=512).save_pretrained(folder)
    return str(folder)


def sample_indices(total: int, n: int | None, seed: int) -> list[int]:
    """A reproducible random choice of n row numbers out of `total` (all of them when n is None or larger)."""
    if not n or n >= total:
        return list(range(total))
    return sorted(int(i) for i in np.random.RandomState(seed).choice(total, n, replace=False))


def sample(dataset, n: int | None, seed: int):
    """A reproducible random subset of n rows (the whole set when n is None or larger)."""
    if not n or n >= len(dataset):
        return dataset
    return dataset.subset(sample_indices(len(dataset), n, seed), f"{dataset.name} ({n} sampled)")


def machine() -> str:
    """CPU model and cores, or the GPU name: what a results row needs to be read."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (1 GPU), torch {torch.__version__}"
    name = platform.processor() or "CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def from_args(args, *names: str) -> dict:
    """The command line's values under their own names: the settings a benchmark passes on as given."""
    return {name: getattr(args, name) for name in names}


def write_results(path: str | os.PathLike, **fields) -> None:
    """A benchmark's figures as JSON, with the machine, the date and the command line they came from."""
    payload = {"machine": machine(), "date": date.today().isoformat(), "argv": sys.argv, **fields}
    Path(path).write_text(json.dumps(payload, indent=2, default=str))


class Table:
    """A text table printed a row at a time, its columns aligned: each column is a title and a format spec
    ("<22", ">9.4f"), so the header and every row take their widths from one list. None shows as "-"."""

    def __init__(self, *columns: tuple[str, str]):
        self.columns = columns

    def header(self) -> str:
        return " ".join(f"{title:{_width(spec)}}" for title, spec in self.columns)

    def row(self, *values) -> str:
        cells = []
        for value, (_, spec) in zip(values, self.columns, strict=True):
            text = value is None or isinstance(value, str)  # text takes the width, not the number format
            cells.append(f"{'-' if value is None else value:{_width(spec) if text else spec}}")
        return " ".join(cells)


def _width(spec: str) -> str:
    """A format spec's alignment and width alone: ">9.4f" -> ">9"."""
    return spec.split(".")[0].rstrip("dfgs")


def training_flops(model, lengths: list[int], epochs: int = 1) -> float:
    """FLOPs of forward+backward over the real (unpadded) tokens: 6 x non-embedding parameters per token,
    plus attention scores and mixing, 12 x layers x hidden x length^2 per sequence."""
    config = model.config
    embedding = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    dense = sum(p.numel() for p in model.parameters()) - embedding
    tokens = float(sum(lengths))
    squares = float(sum(n * n for n in lengths))
    return epochs * (6.0 * dense * tokens + 12.0 * config.num_hidden_layers * config.hidden_size * squares)


def run_in_scratch(main, args) -> int:
    """Run `main(args, work)` with a scratch folder that is removed afterwards, whatever happens;
    with `args.threads`, on that many torch threads."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bertsent-bench-"))
    try:
        return main(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            process.log.seek(0)
            raise SystemExit(f"the server stopped: {process.log.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become healthy in {timeout} s")
