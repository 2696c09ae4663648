"""Checkpoint save and load times: format 4 (safetensors + JSON, no pickle) against torch.save / torch.load.

    python bench/checkpoint_io.py [--sizes tiny,bert-base] [--repeats 3]

A checkpoint as `bertsent train --checkpoint-every N` writes it: the model, AdamW's two moments, the best
evaluation's weights, random states. Each timing is the median of --repeats; saves include an fsync (format 4
syncs before its rename; torch.save is synced too, for a fair comparison).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from bertsent.runtime import rng_state
from bertsent.training.run_folder import RunFolder

SIZES = {
    "tiny": dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "bert-base": {},
}


def checkpoint(model, optimizer, step: int) -> dict:
    return {
        "config": {"model": "bench"},
        "fingerprint": "bench",
        "processes": 1,
        "position": {"step": step, "epoch": 0, "step_in_epoch": step},
        "micro_batch_size": 32,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"last_epoch": step, "base_lrs": [1e-4]},
        "scaler": None,
        "selection": {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "score": float("-inf")},
        "rng": [rng_state()],
    }


def median_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        clock = time.perf_counter()
        function()
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def measure(name: str, repeats: int) -> str:
    model = BertForSequenceClassification(BertConfig(**SIZES[name]))
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.tensor([[101, 2000, 102]]), labels=torch.tensor([0])).loss.backward()
    optimizer.step()  # the moments exist only after a step
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder = RunFolder(Path(tmp) / "run", overwrite=True)
        folder.prepare(fresh=True)
        steps = iter(range(1, 1000))
        save = median_time(lambda: folder.save_checkpoint(checkpoint(model, optimizer, next(steps))), repeats)
        load = median_time(folder.load_checkpoint, repeats)
        size = sum(p.stat().st_size for p in folder.checkpoint_dir.iterdir())
        pickle_path = Path(tmp) / "state.pt"

        def torch_save():
            torch.save(checkpoint(model, optimizer, 1), pickle_path)
            descriptor = os.open(pickle_path, os.O_RDONLY)
            os.fsync(descriptor)
            os.close(descriptor)

        old_save = median_time(torch_save, repeats)
        old_load = median_time(lambda: torch.load(pickle_path, weights_only=True), repeats)
    return (
        f"{name}: {size / 1e6:.1f} MB; format 4 save {save:.3f} s, load {load:.3f} s; "
        f"torch.save {old_save:.3f} s, torch.load(weights_only=True) {old_load:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,bert-base")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in args.sizes.split(","):
        print(measure(name, args.repeats))


if __name__ == "__main__":
    main()
