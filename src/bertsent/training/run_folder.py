"""The model folder being written: a hidden partial folder beside `out`, its checkpoint, the final rename.

Everything lands in `.OUT.partial` first; `publish` renames it to OUT only once it is complete (an
older OUT, with --overwrite, goes only then). A crash leaves OUT as it was and the partial folder with
its last checkpoint, from which `--resume` continues. Only the main process writes.

A checkpoint holds no pickle: its tensors (weights, optimizer moments, random generators) are in a
safetensors file, everything else (positions, settings, optimizer scalars, schedule, random states as
lists of numbers) in `state.json`, which names that file. A save writes a new tensors file, then
replaces state.json in one rename, then removes the old tensors file: killed at any moment, the folder
still holds a complete checkpoint (the old or the new one).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch

from bertsent.errors import BertsentError
from bertsent.files import partial_folder, publish_folder, remove_path

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FORMAT = 4  # 4: safetensors + JSON; 1-3 were pickles (state.pt) and are refused with a message
STATE_FILE = "state.json"
OLD_STATE_FILE = "state.pt"
TENSORS_NAME = re.compile(r"tensors-\d+-[0-9a-f]+\.safetensors")
# Markers for what JSON has no type for; a checkpoint's own dicts never use these keys.
TENSOR, TUPLE, ITEMS, FLOAT = "__tensor__", "__tuple__", "__items__", "__float__"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during `fit`: where the run was and which checkpoint (if any) continues it."""

    def __init__(self, out: Path, step: int | None, checkpoint_step: int | None):
        self.out, self.step, self.checkpoint_step = out, step, checkpoint_step
        where = f" at step {step}" if step is not None else ""
        if checkpoint_step is None:
            said = "no checkpoint was saved (train with checkpoint_every=N to be able to continue)"
        else:
            said = f"the checkpoint of step {checkpoint_step} continues it (resume=True, out={str(out)!r})"
        super().__init__(f"interrupted{where}; {said}")


class RunFolder:
    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False):
        self.out = Path(out).expanduser()
        self.work = partial_folder(self.out)
        self.checkpoint_dir = self.work / CHECKPOINT_DIR
        self.checkpoint_path = self.checkpoint_dir / STATE_FILE
        if self.out.exists() and not self.out.is_dir():  # --overwrite replaces model folders, never a user's file
            raise BertsentError(f"{self.out}: is a file, not a model folder. Pass another --out.")
        if self.out.exists() and not overwrite:
            raise BertsentError(f"{self.out}: already exists. Pass --overwrite to replace it, or another --out.")
        if not resume and not overwrite and self.has_checkpoint():  # never delete hours of work unasked
            raise BertsentError(
                f"{self.out}: an interrupted run left a checkpoint in {self.checkpoint_dir}. Continue it with "
                f"--resume, or pass --overwrite to start again (the checkpoint is then deleted)."
            )
        if resume and not self.has_checkpoint():
            raise BertsentError(
                f"--resume: no checkpoint for {self.out} (looked in {self.checkpoint_dir}). "
                f"Train with --checkpoint-every N first."
            )

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists() or (self.checkpoint_dir / OLD_STATE_FILE).exists()

    def read_state(self) -> dict:
        """state.json, checked: the checkpoint's settings and positions, without its tensors (cheap)."""
        if not self.checkpoint_path.exists():  # formats 1-3 wrote state.pt, a pickle: never opened
            raise self._other_version()
        try:
            state = json.loads(self.checkpoint_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._damaged(f"{STATE_FILE}: {type(exc).__name__}") from None
        if not isinstance(state, dict) or "format" not in state:
            raise self._damaged(f"{STATE_FILE} is not a checkpoint's")
        if state["format"] != CHECKPOINT_FORMAT:
            raise self._other_version()
        name = state.get("tensors")
        if not isinstance(name, str) or not TENSORS_NAME.fullmatch(name) or not isinstance(state.get("state"), dict):
            raise self._damaged(f"{STATE_FILE} names no tensors file")
        wrong = _wrong_field(state["state"])
        if wrong:
            raise self._damaged(f"{STATE_FILE}: {wrong}")
        return state

    def checkpoint_settings(self) -> dict:
        """The settings (TrainConfig fields) the checkpoint's run was started with."""
        state = self.read_state()
        try:
            config = _decode(state["state"].get("config"), {})
        except (KeyError, TypeError, ValueError):
            config = None
        if not isinstance(config, dict):
            raise self._damaged(f"{STATE_FILE} has no settings")
        return config

    def checkpoint_step(self) -> int | None:
        """The step of the checkpoint on disk now, or None when there is none (or none that can be read)."""
        try:
            return int(self.read_state()["state"]["position"]["step"])
        except (BertsentError, KeyError, TypeError, ValueError):
            return None

    def load_checkpoint(self) -> dict:
        """The whole checkpoint, read without unpickling anything: JSON and safetensors only."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        state = self.read_state()
        path = self.checkpoint_dir / state["tensors"]
        try:
            tensors = load_file(path)
            decoded = _decode(state["state"], tensors)
        except (OSError, SafetensorError, KeyError, TypeError, ValueError) as exc:
            raise self._damaged(f"{path.name}: {type(exc).__name__}") from None
        for key in ("config", "fingerprint", "processes", "position", "model", "optimizer", "rng"):
            if key not in decoded:
                raise self._damaged(f"no {key!r}")
        return decoded

    def prepare(self, *, fresh: bool) -> None:
        """A fresh run starts from an empty partial folder; a resumed one keeps its log and checkpoint."""
        if fresh and self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)

    def discard(self) -> None:
        """Remove the partial folder (a run that ended with nothing to continue from)."""
        remove_path(self.work)

    def save_checkpoint(self, state: dict) -> None:
        """Tensors into a new safetensors file, then state.json replaced in one rename: the commit."""
        from safetensors.torch import save_file

        folder = self.checkpoint_dir
        folder.mkdir(exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        encoded = _encode(state, tensors, "", {})
        step = int(state["position"]["step"])
        name = f"tensors-{step:09d}-{uuid.uuid4().hex[:8]}.safetensors"
        save_file(tensors, folder / name, metadata={"format": str(CHECKPOINT_FORMAT), "step": str(step)})
        _fsync(folder / name)
        payload = json.dumps({"format": CHECKPOINT_FORMAT, "tensors": name, "state": encoded}, allow_nan=False)
        temporary = folder / f".{STATE_FILE}.{uuid.uuid4().hex[:8]}.tmp"
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.checkpoint_path)
        _fsync(folder)
        for stray in folder.iterdir():  # the previous tensors file, and leftovers of a save that was killed
            if stray.name not in (name, STATE_FILE):
                stray.unlink(missing_ok=True)

    def publish(self) -> None:
        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        publish_folder(self.work, self.out)

    def _other_version(self) -> BertsentError:
        return BertsentError(
            f"--resume: the checkpoint in {self.checkpoint_dir} was written by another version of bertsent "
            f"(it is not read: older ones were pickles). Train again without --resume (with --overwrite)."
        )

    def _damaged(self, detail: str) -> BertsentError:
        return BertsentError(
            f"--resume: the checkpoint in {self.checkpoint_dir} is damaged or not bertsent's ({detail}). "
            f"Train again without --resume (with --overwrite)."
        )


def _wrong_field(state: dict) -> str | None:
    """The first field of a checkpoint's state that is missing or of the wrong kind (None when all are right):
    read before anything is done with them, so a damaged field is a damaged checkpoint, not a crash later."""
    position = state.get("position")
    if not isinstance(position, dict):
        return "no position"
    counts = {f"position.{k}": position.get(k) for k in ("step", "epoch", "step_in_epoch")}
    counts |= {k: state.get(k) for k in ("processes", "micro_batch_size")}
    for name, value in counts.items():
        least = 1 if name in ("processes", "micro_batch_size") else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            return f"{name} is {value!r}, not a whole number of at least {least}"
    if not isinstance(state.get("fingerprint"), str) or not isinstance(state.get("config"), dict):
        return "no data fingerprint or settings"
    return None


def _fsync(path: Path) -> None:
    """On disk before the rename that points at it, so a power cut cannot leave a checkpoint half there."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. folders cannot be opened on Windows: the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _encode(value, tensors: dict, path: str, seen: dict):
    """`value` as JSON, its tensors moved into `tensors` under their path (one copy of a shared tensor)."""
    if isinstance(value, torch.Tensor):
        return {TENSOR: _store(value.detach(), tensors, path, seen)}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, tensors, f"{path}/{k}", seen) for k, v in value.items()}
        return {ITEMS: [[k, _encode(v, tensors, f"{path}/{k}", seen)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_encode(v, tensors, f"{path}/{i}", seen) for i, v in enumerate(value)]
        return {TUPLE: items} if isinstance(value, tuple) else items
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {FLOAT: repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__} (at {path})")


def _store(tensor: torch.Tensor, tensors: dict, path: str, seen: dict) -> str:
    # safetensors refuses tensors that share memory (tied weights): the same tensor is stored once, an
    # overlapping view as a copy
    if tensor.numel() == 0:
        tensors[path] = tensor.clone()
        return path
    storage = (tensor.device, tensor.untyped_storage().data_ptr())
    view = (*storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
    if view in seen:
        return seen[view]
    if storage in seen or not tensor.is_contiguous():
        tensor = tensor.contiguous().clone()
    seen[view] = seen[storage] = path
    tensors[path] = tensor
    return path


def _decode(value, tensors: dict):
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {TENSOR}:
        return tensors[value[TENSOR]]
    if set(value) == {TUPLE}:
        return tuple(_decode(v, tensors) for v in value[TUPLE])
    if set(value) == {ITEMS}:
        return {k: _decode(v, tensors) for k, v in value[ITEMS]}
    if set(value) == {FLOAT}:
        return float(value[FLOAT])
    return {k: _decode(v, tensors) for k, v in value.items()}
