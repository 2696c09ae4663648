"""Shards: `--shard i/n` scores rows i, i+n, ... into OUT.part-i-of-n, and `merge_parts` joins the parts.

A part is JSON Lines with each row's index, between a header line (input, settings) and an end line (rows); a
part without its end line is incomplete. `merge_parts` checks that the parts are one whole, complete set of one
run, then merges them in row order, streaming.
"""

from __future__ import annotations

import glob
import heapq
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bertsent.data.tables import CHUNK_ROWS
from bertsent.errors import DataError
from bertsent.prediction.output import RecordFormat, output_format, run_difference

PART_NAME = re.compile(r"\.part-(\d+)-of-(\d+)$")
PART_HEADER, PART_END = "bertsent_part", "bertsent_part_end"


def parse_shard(spec) -> tuple[int, int] | None:
    """ "i/n" (or (i, n)): rows whose index is i modulo n; i counts from 0."""
    if spec is None:
        return None
    text = spec if isinstance(spec, str) else "/".join(map(str, spec)) if isinstance(spec, (tuple, list)) else ""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise DataError(f"--shard {spec}: give it as i/n, e.g. 0/4 for the first of 4 shards (i counts from 0).")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise DataError(f"--shard {spec}: n, the number of shards, must be at least 1.")
    if index >= count:
        raise DataError(
            f"--shard {spec}: i counts from 0 to n-1, so with n = {count} use 0/{count} to {count - 1}/{count}."
        )
    return index, count


def part_path(out: str | os.PathLike, index: int, count: int) -> Path:
    out = Path(out)
    return out.with_name(f"{out.name}.part-{index}-of-{count}")


def find_parts(out: str | os.PathLike) -> list[Path]:
    """OUT.part-i-of-n files beside OUT, complete ones (interrupted ones are hidden .partial files)."""
    out = Path(out)
    found = glob.glob(os.path.join(glob.escape(str(out.parent)), glob.escape(out.name) + ".part-*-of-*"))
    return sorted((Path(p) for p in found if PART_NAME.search(p)), key=lambda p: _part_numbers(p))


def _part_numbers(path: Path) -> tuple[int, int]:
    match = PART_NAME.search(path.name)
    return (int(match.group(2)), int(match.group(1))) if match else (0, 0)


def part_header(meta: dict, index: int, count: int, names: list[str], classes: list[str]) -> str:
    header = {**meta, "shard": [index, count], "columns": names, "classes": classes}
    return json.dumps({PART_HEADER: header}, ensure_ascii=False) + "\n"


def part_end(rows: int, input_rows: int) -> str:
    return json.dumps({PART_END: {"rows": rows, "input_rows": input_rows}}) + "\n"


def read_part_header(path: Path) -> dict:
    """A part's header, and its end line (`end`): a part without one is not complete."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.readline())[PART_HEADER]
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 4096))
            end = json.loads(handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]).get(PART_END)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f"{path}: not a complete part file of `bertsent predict --shard`.") from None
    if not isinstance(end, dict):
        raise DataError(f"{path}: incomplete (no end line); rerun its shard with --resume.")
    return dict(header, end=end)


def _part_records(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        next(handle)  # the header
        for line in handle:
            record = json.loads(line)
            if PART_END in record:
                return
            yield record.pop("row"), record


def merge_parts(
    out: str | os.PathLike,
    parts: Sequence[str | os.PathLike] | None = None,
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    keep_parts: bool = False,
    progress: bool = True,
) -> dict:
    """Merge the parts of a sharded run (`parts`, else OUT.part-i-of-n beside OUT) into OUT in row order,
    streaming. Every part must be complete, of the same input and settings, and i of n whole. The parts are
    removed once OUT is written unless `keep_parts`. Returns {"out", "rows", "parts", "seconds"}."""
    started = time.perf_counter()
    out = Path(out).expanduser()
    fmt = output_format(out, fmt)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: already exists. Pass --overwrite to replace it.")
    paths = find_parts(out) if parts is None else [Path(p).expanduser() for p in parts]
    headers = _check_parts(out, paths)
    first = headers[0]
    total = first["end"]["input_rows"]
    writer = RecordFormat(fmt, first["columns"], first["classes"])
    work = out.with_name(f".{out.name}.merging")  # not .OUT.partial: that may be an unsharded run's
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="rows", unit_scale=True, desc="merge", disable=not progress, file=sys.stderr)
    try:
        with open(work, "w", encoding="utf-8", newline="") as handle:
            handle.write(writer.header())
            rows = heapq.merge(*(_part_records(p) for p in paths), key=lambda item: item[0])
            expected = 0
            for batch in _batches(rows, CHUNK_ROWS):
                for row, _ in batch:
                    if row != expected:
                        raise DataError(f"{out}: no part holds row {expected} (damaged?); rerun its shard.")
                    expected += 1
                handle.write(writer.encode([record for _, record in batch]))
                bar.update(len(batch))
        if expected != total:
            raise DataError(f"{out}: the parts hold {expected:,} rows of {total:,}; rerun the shard that lost some.")
        os.replace(work, out)
    finally:
        bar.close()
        work.unlink(missing_ok=True)
    if not keep_parts:
        for path in paths:
            path.unlink(missing_ok=True)
    return {"out": str(out), "rows": expected, "parts": len(paths), "seconds": time.perf_counter() - started}


def _check_parts(out: Path, paths: list[Path]) -> list[dict]:
    """The parts' headers, once they are found to be one whole, complete set."""
    if not paths:
        raise DataError(f"{out}: no parts found ({out.name}.part-I-of-N). Run `bertsent predict --shard I/N` first.")
    headers = [read_part_header(p) for p in paths]
    counts = sorted({h["shard"][1] for h in headers})
    if len(counts) > 1:
        raise DataError(f"{out}: parts of runs split {' and '.join(map(str, counts))} ways; give the parts of one run.")
    count = counts[0]
    have = sorted(h["shard"][0] for h in headers)
    if len(set(have)) != len(have):
        raise DataError(f"{out}: part {have[0]} of {count} given twice; give each part once.")
    missing = sorted(set(range(count)) - set(have))
    if missing:
        name = part_path(out, missing[0], count).name
        raise DataError(
            f"{out}: part {missing[0]} of {count} is missing ({name}). Run --shard {missing[0]}/{count}; if "
            f".{name}.partial exists it was interrupted: rerun it with --resume."
        )
    reference = {"input": headers[0]["input"], "settings": _without_shard(headers[0]["settings"])}
    for path, header in zip(paths, headers):
        other = {"input": header["input"], "settings": _without_shard(header["settings"])}
        rows = header["end"]["input_rows"], headers[0]["end"]["input_rows"]
        counted = ("input rows", *map(str, rows)) if rows[0] != rows[1] else None
        difference = run_difference(other, reference) or counted
        if difference:
            name, this, first = difference
            changed = " (changed between the runs)" if this == first else ""
            raise DataError(
                f"{out}: {path.name} and {paths[0].name} come from different runs ({name} {this} vs {first}{changed}). "
                f"Give the parts of one run."
            )
    return sorted(headers, key=lambda h: h["shard"][0])


def _without_shard(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "shard"}


def _batches(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
