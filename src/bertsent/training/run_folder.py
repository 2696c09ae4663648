"""The model folder being written: a hidden partial folder beside `out`, its checkpoint, the final rename.

Everything lands in `.OUT.partial` first; `publish` renames it to OUT only once it is complete (an
older OUT, with --overwrite, goes only then). A crash leaves OUT as it was and the partial folder with
its last checkpoint, from which `--resume` continues. Only the main process writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ..errors import BertsentError
from ..files import partial_folder, publish_folder

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FORMAT = 3  # the layout of state.pt; older checkpoints are refused with a message (3: no pickle)


class RunFolder:
    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False):
        self.out = Path(out).expanduser()
        self.work = partial_folder(self.out)
        self.checkpoint_path = self.work / CHECKPOINT_DIR / "state.pt"
        if self.out.exists() and not overwrite:
            raise BertsentError(f"{self.out}: already exists. Pass --overwrite to replace it, or another --out.")
        if not resume and not overwrite and self.checkpoint_path.exists():  # never delete hours of work unasked
            raise BertsentError(
                f"{self.out}: an interrupted run left a checkpoint in {self.checkpoint_path.parent}. Continue it with "
                f"--resume, or pass --overwrite to start again (the checkpoint is then deleted)."
            )
        if resume and not self.checkpoint_path.exists():
            raise BertsentError(
                f"--resume: no checkpoint for {self.out} (looked in {self.checkpoint_path.parent}). "
                f"Train with --checkpoint-every N first."
            )

    def load_checkpoint(self) -> dict:
        # weights_only: tensors, numbers, strings and containers only, so a planted file cannot run code
        try:
            state = torch.load(self.checkpoint_path, weights_only=True, map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - the unpickler's refusals come as several kinds
            raise BertsentError(
                f"--resume: {self.checkpoint_path} is not a checkpoint bertsent can read safely "
                f"({type(exc).__name__}). Train again without --resume."
            ) from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise BertsentError(
                f"--resume: {self.checkpoint_path} was written by another version of bertsent. "
                f"Train again without --resume."
            )
        return state

    def prepare(self, *, fresh: bool) -> None:
        """A fresh run starts from an empty partial folder; a resumed one keeps its log and checkpoint."""
        if fresh and self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(self, state: dict) -> None:
        self.checkpoint_path.parent.mkdir(exist_ok=True)
        temporary = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state | {"format": CHECKPOINT_FORMAT}, temporary)
        os.replace(temporary, self.checkpoint_path)

    def publish(self) -> None:
        shutil.rmtree(self.work / CHECKPOINT_DIR, ignore_errors=True)
        publish_folder(self.work, self.out)
