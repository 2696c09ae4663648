"""Step records: metrics.jsonl (one line per optimizer step and per evaluation), TensorBoard, the progress bar.

Only the main process writes. A step's loss and gradient norm stay on the device until read: reading a
number waits for the GPU to catch up, and then the GPU waits while Python prepares the next step. So the
records are read in groups, about once a second, while the CPU queues the next steps (on a CPU every
step takes longer than that: each is written at once). The last record of a group is timed after the
read, so its samples/s is exact.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from bertsent.evaluation.metrics import headline
from bertsent.extras import require_extra

METRICS_LOG = "metrics.jsonl"
FLUSH_SECONDS = 1.0
FLUSH_RECORDS = 200


def tensorboard_writer_class():
    """TensorBoard's SummaryWriter, or a one-line error: asked before training, not after it."""
    return require_extra("tensorboard", "--tensorboard", "torch.utils.tensorboard").SummaryWriter


class StepLog:
    """Writes the records of a run into `path`; does nothing on processes other than the main one."""

    def __init__(
        self,
        path: Path,
        *,
        enabled: bool,
        total_steps: int,
        first_step: int = 0,
        progress: bool = True,
        tensorboard_dir: Path | None = None,
        writer_class=None,
    ):
        from tqdm.auto import tqdm

        self.enabled = enabled
        if enabled and first_step:
            _drop_records_after(path, first_step)  # a resumed run's log reads as one run
        self.file = open(path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115 - open for the run
        self.board = writer_class(log_dir=str(tensorboard_dir)) if enabled and writer_class else None
        self.bar = tqdm(
            total=total_steps,
            initial=first_step,
            disable=not (progress and enabled),
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )
        self.pending: list[dict] = []
        self.clock = self.last_flush = time.time()
        self.seen = 0

    def step(
        self, step: int, epoch: float, loss: torch.Tensor, grad_norm: torch.Tensor | None, lr: float, samples: int
    ) -> None:
        """One optimizer step's record; `loss` and `grad_norm` are tensors, read later with the others."""
        self.seen += samples
        if not self.enabled:
            return
        self.bar.update(1)
        elapsed = time.time() - self.clock  # when the step was queued; the last of a group is timed after a sync
        record = {"step": step, "epoch": round(epoch, 4), "loss": loss}
        if grad_norm is not None:
            record["grad_norm"] = torch.as_tensor(grad_norm, device=loss.device)
        record |= {"lr": lr, "samples_per_s": round(self.seen / elapsed, 2) if elapsed > 0 else None}
        self.pending.append(record)
        if len(self.pending) >= FLUSH_RECORDS or time.time() - self.last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Read the pending records' loss and gradient norm tensors in one go, then write the records."""
        if not self.pending:
            return
        on_device = [(record, key) for record in self.pending for key in ("loss", "grad_norm") if key in record]
        values = torch.stack([record[key].float() for record, key in on_device]).tolist()
        for (record, key), value in zip(on_device, values):
            record[key] = round(value, 5 if key == "loss" else 4)
        elapsed = time.time() - self.clock  # after the read above, so the GPU has finished these steps
        last = self.pending[-1]
        last["samples_per_s"] = round(self.seen / elapsed, 2) if elapsed > 0 else None
        for record in self.pending:
            self._write(record)
        self.bar.set_postfix(
            epoch=f"{last['epoch']:.2f}",
            loss=f"{last['loss']:.4f}",
            samples_s=f"{last['samples_per_s'] or 0:.1f}",
            refresh=False,
        )
        self.pending.clear()
        self.last_flush = time.time()

    def evaluation(self, step: int, epoch: float, metrics: dict) -> None:
        if self.enabled:
            self.flush()
            self._write({"step": step, "epoch": round(epoch, 3), "split": "validation", **headline(metrics)})

    def close(self) -> None:
        if self.enabled:
            self.flush()
            assert self.file is not None  # enabled: opened in __init__
            self.file.close()
            if self.board is not None:
                self.board.close()
        self.bar.close()

    def _write(self, record: dict) -> None:
        assert self.file is not None  # written only when enabled
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.board is not None:
            _tensorboard_scalars(self.board, record)


def _tensorboard_scalars(writer, record: dict) -> None:
    """The scalars of one metrics.jsonl record: train/loss, train/lr, ..., validation/accuracy, ..."""
    prefix = record.get("split", "train")
    for key, value in record.items():
        if key not in ("step", "split") and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(f"{prefix}/{key}", value, record["step"])


def _drop_records_after(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
