"""What this process knows without importing a model library: the installed bertsent's version, and its place
among the processes a launcher (torchrun, accelerate launch) started. The command line reads both before any
work, so nothing heavy is imported here."""

from __future__ import annotations

import os


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # about 30 ms: only when asked

    try:
        return version("bertsent")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src) without installing
        return "unknown"


def launched_processes() -> int:
    """How many processes torchrun or accelerate launch started for this run (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    """This process's rank among them, from the launcher's environment (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))
