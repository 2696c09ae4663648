"""Where and how the computation runs: device, precision, random state, out-of-memory errors, processes.

One process, or several started by `torchrun` / `accelerate launch` for data-parallel training: each
process holds the whole model on its own device and takes its share of every batch. `Runtime` wraps
Accelerate's `Accelerator` for that, and its collective helpers do nothing when there is one process.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import random
import sys
from typing import TYPE_CHECKING

import numpy as np

from bertsent.environment import launched_processes, package_version
from bertsent.errors import BertsentError

if TYPE_CHECKING:  # imported where used: prediction with an ONNX backend runs without torch
    import torch

MIXED_PRECISION_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # Accelerate's name: torch's dtype
BUCKET_ELEMENTS = 32 * 2**20  # numbers per gradient all-reduce: a few large messages, not one per tensor


# -- versions --------------------------------------------------------------------------------------------


def library_versions() -> dict:
    import accelerate
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "bertsent": package_version(),
    }


# -- device and precision ----------------------------------------------------------------------------------


def pick_device(device: str | None = None) -> torch.device:
    """CUDA, then Apple MPS, then CPU; or what the user asked for, if this machine has it."""
    import torch

    if device and device != "auto":
        return check_device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_device(device: str) -> torch.device:
    """The device named, or a user error when it is not a device or not on this machine (a run asked for
    CUDA must not quietly train on the CPU)."""
    import torch

    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError):
        raise BertsentError(f"--device {device}: not a device. Use auto, cpu, cuda, cuda:N or mps.") from None
    if wanted.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BertsentError(f"--device {device}: this machine has no CUDA GPU PyTorch can use. Use --device cpu.")
        if wanted.index is not None and wanted.index >= count:
            raise BertsentError(f"--device {device}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
    elif wanted.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise BertsentError(f"--device {device}: Apple's MPS is not available here. Use --device cpu.")
    elif wanted.type != "cpu":
        raise BertsentError(f"--device {device}: bertsent runs on cpu, cuda or mps.")
    return wanted


def device_type(device: str | None = None) -> str:
    """`pick_device(device).type`, without importing torch (seconds) where the answer is plainly "cpu": asked for,
    or auto on a machine with no GPU driver in sight (then torch would find no CUDA or MPS device either)."""
    if device == "cpu" or (device in (None, "auto") and not _gpu_in_sight()):
        return "cpu"
    return pick_device(device).type


def _gpu_in_sight() -> bool:
    """Whether this machine may have a GPU torch can use: an NVIDIA or AMD (ROCm) driver, WSL's GPU, Apple silicon.
    A false yes only costs importing torch to ask it."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1") and sys.platform != "darwin":
        return False
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/gpus", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


def mixed_precision(precision: str, device: torch.device) -> str:
    """Accelerate's name for the autocast precision: "no", "bf16" or "fp16"."""
    if precision in ("fp32", "no"):
        return "no"
    if precision != "auto":
        return precision
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"  # CPU autocast to bf16 is slower than fp32 on most CPUs


def scoring_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype to score in: bf16 on a CUDA GPU that has it (about twice the speed, the same labels:
    tests/test_throughput.py), else None (fp32; CPU autocast to bf16 is slower on most CPUs)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# -- random state ------------------------------------------------------------------------------------------


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """Every random stream's state: Python's and NumPy's as plain lists and numbers (JSON), torch's as tensors."""
    import torch

    version, internal, gauss_next = random.getstate()
    numpy_state = np.random.get_state()
    assert isinstance(numpy_state, tuple)  # legacy=True, the default: the tuple form
    name, keys, position, has_gauss, gauss = numpy_state
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- out of memory -----------------------------------------------------------------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS/XPU out-of-memory errors, and the CPU allocator's "can't allocate memory"."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory(device: torch.device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


# -- processes ---------------------------------------------------------------------------------------------


class Runtime:
    """This process's device and mixed precision, and its place among the processes of the run."""

    def __init__(self, device: str = "auto", precision: str = "auto"):
        import torch
        from accelerate import Accelerator

        wanted = pick_device(device)
        launched = launched_processes() > 1
        if launched and wanted.index is not None:
            raise BertsentError(
                f"--device {device}: under torchrun or accelerate launch each process takes its own GPU. "
                f"Use --device auto (or cuda), and pick GPUs with CUDA_VISIBLE_DEVICES."
            )
        if wanted.type == "cuda" and wanted.index is not None:
            torch.cuda.set_device(wanted)  # so that Accelerate's "cuda" is the one asked for
        if not launched:
            _forget_accelerate_settings()
        self.accelerator = Accelerator(mixed_precision=mixed_precision(precision, wanted), cpu=wanted.type == "cpu")
        self.device = self.accelerator.device
        self.mixed_precision = self.accelerator.mixed_precision
        dtype = MIXED_PRECISION_DTYPES.get(self.mixed_precision)
        self.autocast_dtype = getattr(torch, dtype) if dtype else None
        self.rank = self.accelerator.process_index
        self.processes = self.accelerator.num_processes
        self.is_main = self.accelerator.is_main_process
        if self.device.type == "cuda":
            # TF32 matmuls for what runs in fp32: same accuracy in practice, faster; --precision fp32 is strict.
            torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
            torch.backends.cudnn.allow_tf32 = precision != "fp32"
        self._host_group = None
        if self.processes > 1:
            import torch.distributed as dist

            # Flags are agreed on the host (gloo), so agreeing does not wait for the GPU to finish its queue.
            gloo = dist.get_backend() == "gloo"
            self._host_group = dist.group.WORLD if gloo else dist.new_group(backend="gloo")

    def autocast(self):
        return self.accelerator.autocast()

    def main_only(self, log):
        """`log` on the main process; elsewhere a function that drops the line (one copy of each is enough)."""
        return log if self.is_main else _drop_line

    def any(self, flag: bool) -> bool:
        """True on every process when `flag` is true on any of them."""
        if self.processes == 1:
            return flag
        import torch
        import torch.distributed as dist

        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self._host_group)
        return bool(value.item())

    def sum_across(self, tensors: list[torch.Tensor]) -> None:
        """Sum tensors over the processes, in place, in a few large all-reduces rather than one per tensor."""
        if self.processes == 1:
            return
        import torch
        import torch.distributed as dist

        for bucket in _buckets(tensors):
            flat = torch.cat([t.reshape(-1) for t in bucket])
            dist.all_reduce(flat)
            offset = 0
            for t in bucket:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Every process starts from the main process's weights."""
        if self.processes == 1:
            return
        import torch.distributed as dist

        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)

    def gather(self, value) -> list:
        """Each process's `value`, in rank order, on every process."""
        if self.processes == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def broadcast(self, value):
        """The main process's `value`, on every process."""
        if self.processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value])[0]

    def wait_for_everyone(self) -> None:
        self.accelerator.wait_for_everyone()

    def main_process_first(self):
        """The main process runs the block first (downloads, caches), then the others."""
        if self.processes == 1:
            return contextlib.nullcontext()
        return self.accelerator.main_process_first()


def _drop_line(*_args, **_kwargs) -> None:
    pass


def _buckets(tensors: list[torch.Tensor]):
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        if bucket and (size + tensor.numel() > BUCKET_ELEMENTS or tensor.dtype != bucket[0].dtype):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += tensor.numel()
    if bucket:
        yield bucket


def _forget_accelerate_settings() -> None:
    """Accelerate keeps the first device and precision of a process for good; one process may train several
    models with different settings (seeds, compare, notebooks), so without a launcher they start afresh."""
    from accelerate.state import AcceleratorState

    with contextlib.suppress(AttributeError):  # a private helper: if it goes, settings must then not change
        AcceleratorState._reset_state(reset_partial_state=True)
