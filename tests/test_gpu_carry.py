"""scripts/gpu_carry_mpnet.sh: a file cut into parts that fit one device call each, joined bit for bit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_carry_mpnet.sh"

pytestmark = pytest.mark.skipif(shutil.which("split") is None or shutil.which("sha256sum") is None, reason="coreutils")


def _run(*args, chunk=1_000_000):
    env = {**os.environ, "CHUNK_BYTES": str(chunk)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env)


def test_split_and_join_round_trip_bit_for_bit(tmp_path):
    original = tmp_path / "mpnet.tar"
    original.write_bytes(os.urandom(2_500_000))
    here, there = tmp_path / "here", tmp_path / "there"
    assert _run("split", str(original), str(here)).returncode == 0
    parts = sorted(here.glob("mpnet.part*"))
    assert [p.name for p in parts] == ["mpnet.part01", "mpnet.part02", "mpnet.part03"]
    assert all(p.stat().st_size <= 1_000_000 for p in parts)
    there.mkdir()
    for path in [*parts, here / "mpnet.sha256"]:  # as they arrive on the device, one call each
        shutil.copy(path, there)
    joined = _run("join", str(there))
    assert joined.returncode == 0, joined.stderr
    assert (there / "mpnet.tar").read_bytes() == original.read_bytes()


def test_join_refuses_a_missing_or_damaged_part(tmp_path):
    original = tmp_path / "mpnet.tar"
    original.write_bytes(os.urandom(2_100_000))
    assert _run("split", str(original), str(tmp_path / "d")).returncode == 0
    damaged = tmp_path / "d" / "mpnet.part02"
    damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
    result = _run("join", str(tmp_path / "d"))
    assert result.returncode == 2 and "missing or damaged" in result.stderr
    damaged.unlink()
    assert _run("join", str(tmp_path / "d")).returncode == 2
