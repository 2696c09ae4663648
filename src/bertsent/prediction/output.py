"""Writing predictions: the output formats, the partial output file and its progress record, the progress bar.

An output OUT is written as `.OUT.partial`; after each chunk `.OUT.partial.json` records the input rows done
and the bytes of output that hold them, so after a crash `--resume` cuts the partial file back to there and
goes on; the finished file is renamed to OUT. `plan_output` says, before any work, whether a run starts afresh,
resumes or is already complete; `check_same_run` refuses to resume a run of another input or other settings.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bertsent.checks import flag
from bertsent.data.tables import Chunk, Table
from bertsent.errors import DataError
from bertsent.files import partial_folder, remove_temporaries, write_json_atomic

OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
OUTPUT_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
# Names the prediction writes; a kept input column with one of them is written as input_<name>.
PREDICTION_NAMES = ("row", "text", "label", "probs")
# Settings named by their flag when --resume or merge refuses a difference (the model and classes by name).
FLAG_SETTINGS = ("backend", "truncation", "max_length", "stride", "neutral_band", "text_column", "keep_columns",
                 "encoding", "format", "shard")  # fmt: skip


def output_format(out: str | os.PathLike | None, fmt: str | None = None) -> str:
    """jsonl, csv or tsv: `fmt` when given, else from OUT's suffix (JSON Lines on standard output)."""
    if fmt is not None:
        if fmt not in OUTPUT_FORMATS:
            raise DataError(f"--format {fmt}: use one of {', '.join(OUTPUT_FORMATS)} for a file of predictions.")
        return fmt
    if out is None:
        return "jsonl"
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(
            f"--out {out}: cannot tell the format from '{suffix}'. Name it .jsonl, .csv or .tsv, or pass --format."
        )
    return OUTPUT_SUFFIXES[suffix]


def output_names(keep_columns: list[str], classes: list[str]) -> list[str]:
    """The kept columns' names in the output: input_<name> where the prediction has a column of that name."""
    taken = set(PREDICTION_NAMES) | {f"p_{c}" for c in classes}
    return [f"input_{c}" if c in taken else c for c in keep_columns]


class RecordFormat:
    """Prediction records, {kept..., "text", "label", "probs": {class: p}}, as JSON Lines, CSV or TSV text:
    the records and columns of `bertsent predict --format jsonl|csv`, kept columns first."""

    def __init__(self, fmt: str, names: list[str], classes: list[str]):
        self.fmt, self.names, self.classes = fmt, list(names), list(classes)

    def header(self) -> str:
        if self.fmt == "jsonl":
            return ""
        return self._rows([[*self.names, "text", "label", *(f"p_{c}" for c in self.classes)]])

    def encode(self, records: list[dict]) -> str:
        if self.fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        return self._rows(
            [
                [*(_cell(r.get(n)) for n in self.names), r["text"], r["label"], *(r["probs"][c] for c in self.classes)]
                for r in records
            ]
        )

    def _rows(self, rows: list[list]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter="\t" if self.fmt == "tsv" else ",").writerows(rows)
        return buffer.getvalue()


def _cell(value):
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list)) else value


@dataclass
class Plan:
    """Where an output stands before a run: start afresh, resume from `state`, or already complete."""

    partial: PartialOutput
    state: dict | None = None
    complete: bool = False


class PartialOutput:
    """OUT built as `.OUT.partial`; after each chunk `.OUT.partial.json` records the input rows done
    (`next_row`), the output rows and the bytes that hold them (`offset`). Data is on disk before the
    record says so, so the record never points past what a crash left."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = partial_folder(self.out)
        self.record_path = self.path.with_name(self.path.name + ".json")
        self.handle: BinaryIO | None = None
        self.state: dict = {}

    def leftover(self) -> dict | None:
        """An interrupted run's record; {} for a partial file without one (it stopped before its first chunk)."""
        if self.record_path.exists():
            try:
                state = json.loads(self.record_path.read_text())
            except (OSError, ValueError):
                raise DataError(f"{self.record_path}: unreadable; pass --overwrite to start again.") from None
            return state if isinstance(state, dict) else {}
        return {} if self.path.exists() else None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.record_path.unlink(missing_ok=True)
        remove_temporaries(self.record_path)

    def start(self, meta: dict, header: str = "") -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "wb")  # noqa: SIM115 - open for the run, closed by finish/close
        self.state = dict(meta, next_row=0, rows=0, offset=0)
        self.append(header, 0, 0)

    def resume(self, state: dict) -> None:
        offset = int(state["offset"])
        if not self.path.exists() or self.path.stat().st_size < offset:
            raise DataError(f"{self.path}: shorter than its record says (damaged); pass --overwrite to start again.")
        self.handle = open(self.path, "r+b")  # noqa: SIM115 - as in start
        self.handle.truncate(offset)  # what was written after the last record: written again
        self.handle.seek(offset)
        self.state = dict(state)

    def append(self, text: str, next_row: int, rows: int) -> None:
        data = text.encode("utf-8")
        assert self.handle is not None  # started or resumed
        self.handle.write(data)
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.state.update(next_row=next_row, rows=self.state["rows"] + rows, offset=self.state["offset"] + len(data))
        write_json_atomic(self.record_path, self.state)

    def finish(self, trailer: str = "") -> None:
        assert self.handle is not None  # started or resumed
        self.handle.write(trailer.encode("utf-8"))
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.close()
        os.replace(self.path, self.out)
        self.record_path.unlink(missing_ok=True)
        remove_temporaries(self.record_path)  # a record half-written when an earlier run was killed

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def plan_output(out: Path, *, resume: bool = False, overwrite: bool = False) -> Plan:
    """Refuse what would lose work or mix runs; with `overwrite`, drop an interrupted run's partial file
    (OUT itself is replaced only once the new one is complete)."""
    if resume and overwrite:
        raise DataError("--resume and --overwrite: pass one of them (continue the interrupted run, or start again).")
    if out.is_dir():
        raise DataError(f"--out {out}: is a folder; give a file name, e.g. --out {out / 'predictions.jsonl'}.")
    partial = PartialOutput(out)
    state = partial.leftover()
    if overwrite:
        partial.discard()
        return Plan(partial)
    if state is not None:
        if not resume:
            done = f" ({state.get('next_row', 0):,} input rows done)" if state else ""
            raise DataError(
                f"{out}: an interrupted run left {partial.path.name}{done}. Pass --resume to continue it, or "
                f"--overwrite to start again."
            )
        return Plan(partial, state)
    if out.exists():
        if resume:
            return Plan(partial, complete=True)
        raise DataError(f"{out}: already exists. Pass --overwrite to replace it.")
    return Plan(partial)


def run_difference(started: dict, meta: dict) -> tuple[str, str, str] | None:
    """The first thing that tells two runs' {"input", "settings"} apart: (its name, then, now), or None.
    An input of the same path that changed since comes as ("input", path, path)."""
    old, new = started.get("input") or {}, meta["input"]
    if old != new:
        return "input", str(old.get("path") or old.get("source")), str(new.get("path") or new.get("source"))
    settings = started.get("settings") or {}
    for key in dict.fromkeys([*meta["settings"], *settings]):
        if settings.get(key) != meta["settings"].get(key):
            named = flag(key) if key in FLAG_SETTINGS else key
            return named, _shown(settings.get(key)), _shown(meta["settings"].get(key))
    return None


def check_same_run(started: dict, meta: dict, what: str) -> None:
    """Refuse to continue, with --resume, what was started on another input or with other settings."""
    difference = run_difference(started, meta)
    if difference is None:
        return
    name, then, now = difference
    if then == now:
        raise DataError(
            f"--resume: {now} changed since {what} was started (size or modification time). Pass --overwrite to "
            f"start again."
        )
    raise DataError(
        f"--resume: {what} was started with {name} {then}; this run has {now}. Pass the same, or --overwrite to "
        f"start again."
    )


def _shown(value) -> str:
    if value is None or value == []:
        return "(none)"
    if isinstance(value, list):
        return ",".join(map(str, value)) if isinstance(value[0], str) else "/".join(map(str, value))
    return str(value)


class Progress:
    """A bar on stderr over the bytes of the input file (the time left follows from them), with rows and rows
    per second; over rows for a source read whole."""

    def __init__(self, table: Table, enabled: bool = True, desc: str = "predict"):
        from tqdm.auto import tqdm

        self.by_rows = table.frame is not None
        self.rows, self.started = 0, time.perf_counter()
        self.bar = tqdm(
            total=len(table.frame) if self.by_rows else table.size,
            unit="rows" if self.by_rows else "B",
            unit_scale=True,
            unit_divisor=1000 if self.by_rows else 1024,
            desc=desc,
            disable=not enabled,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, chunk: Chunk, scored: int) -> None:
        self.rows += scored
        if self.bar.disable:
            return
        self.bar.update(max(0.0, (chunk.end if self.by_rows else chunk.position) - self.bar.n))
        rate = self.rows / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.rows:,} rows, {rate:,.0f} rows/s", refresh=False)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
