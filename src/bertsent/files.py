"""Files that readers never see half-written, folders replaced only once the new one is whole, the cache."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import stat
import uuid
from pathlib import Path


def cache_dir() -> Path:
    """Where downloads and unpacked models are kept: $BERTSENT_CACHE, else ~/.cache/bertsent."""
    root = os.environ.get("BERTSENT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "bertsent"
    )
    return Path(root)


def cache_folder(name: str) -> Path:
    """A folder in the cache, made if need be; one clear line when the cache cannot be written."""
    from bertsent.errors import BertsentError

    folder = cache_dir() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = check_writable(folder / "probe")
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    if problem:
        raise BertsentError(
            f"cache {folder}: cannot write there ({problem}). Set BERTSENT_CACHE to a folder you can write to."
        )
    return folder


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # mode from the umask
    try:
        with open(temporary, "xb") as handle:
            handle.write(payload)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike) -> str | None:
    """Why a file cannot be written at `path` (None when it can), found by creating and removing a temporary
    file in its nearest existing folder now: before the work, not after it. Creates no folders."""
    path = Path(path).expanduser().absolute()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return "Not a directory"
    try:
        probe = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        with open(probe, "xb"):
            pass
        probe.unlink()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def remove_temporaries(path: str | os.PathLike) -> None:
    """Delete what `write_atomic` of `path` leaves behind when its process is killed mid-write."""
    path = Path(path)
    for stray in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stray.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, payload) -> None:
    write_atomic(path, json.dumps(payload, indent=2))


def partial_folder(out: Path) -> Path:
    """The hidden folder beside `out` where it is built before `publish_folder` renames it."""
    return out.parent / f".{out.name}.partial"


def publish_folder(work: Path, out: Path) -> None:
    """Move a finished folder into place; an older folder at `out` goes only once the new one is whole. Its
    files first take the mode the umask gives new files: safetensors writes its files 0600, the rest are 0644."""
    share_file_mode(work)
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old"
        remove_path(old)
        os.replace(out, old)
        os.replace(work, out)
        remove_path(old)
    else:
        os.replace(work, out)


def remove_path(path: Path) -> None:
    """Delete a folder, a file or a link at `path`, if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def share_file_mode(folder: Path) -> None:
    """Give every file under `folder` the permissions a file created there now gets (0666 less the umask),
    found by creating one: reading the umask would mean setting it, which races with other threads."""
    probe = folder / f".mode.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with open(probe, "xb"):
        pass
    try:
        mode = stat.S_IMODE(probe.stat().st_mode)
    finally:
        probe.unlink()
    for root, _folders, names in os.walk(folder):
        for name in names:
            path = Path(root) / name
            if not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) != mode:
                os.chmod(path, mode)


def sha256_of(path: Path) -> str:
    """A file's sha256, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
