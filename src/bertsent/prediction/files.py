"""Predictions for a file of any size: read, scored and written a chunk at a time, in flat memory.

`predict_file(MODEL, SRC, OUT)` writes OUT (JSON Lines, CSV or TSV) through a partial file that survives a
crash: `resume=True` goes on from the last chunk written. `shard="i/n"` scores every n-th row into
OUT.part-i-of-n, for jobs run apart and joined by `merge_parts`; under torchrun or accelerate launch each
process takes the shard of its rank, and the first process merges the parts once all are done.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from bertsent.data.sources import open_table
from bertsent.data.tables import CHUNK_ROWS, Chunk, Table
from bertsent.environment import launched_processes, process_rank
from bertsent.errors import BertsentError
from bertsent.prediction.output import (
    PartialOutput,
    Plan,
    Progress,
    RecordFormat,
    check_same_run,
    output_format,
    output_names,
    plan_output,
)
from bertsent.prediction.predictor import SentimentModel, load
from bertsent.prediction.shards import merge_parts, parse_shard, part_end, part_header, part_path, read_part_header

__all__ = ["iter_predictions", "predict_file"]

WAIT_FOR_PROCESSES = timedelta(days=7)  # the processes wait for the slowest shard, however long it takes


def predict_file(
    model_dir: SentimentModel | str | os.PathLike,
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    text_column: str | None = None,
    keep_columns: str | list[str] | None = None,
    encoding: str = "utf-8",
    resume: bool = False,
    overwrite: bool = False,
    shard: str | tuple[int, int] | None = None,
    fmt: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **load_kwargs: Any,
) -> dict:
    """Label every row of `source` (CSV, TSV, JSON Lines, Parquet, plain lines, compressed too; or any source
    `read_data` takes) into `out`, a chunk of `chunk_rows` rows at a time: memory stays flat.

    The output has one record per input row, in order: the `keep_columns` ("a,b", a list or "all"), then
    text, label and one probability per class, as `bertsent predict --format jsonl|csv|tsv` writes them
    (`fmt`, else from OUT's suffix). Without `out`, JSON Lines (or `fmt`) go to standard output.

    OUT is written as .OUT.partial and renamed when complete. An existing OUT is replaced only with
    `overwrite`; a partial one left by a crash is continued with `resume` (same input and settings). `shard`
    "i/n" writes OUT.part-i-of-n (rows i, i+n, ...) for `merge_parts`. `load_kwargs` go to `bertsent.load`.
    Returns {"out", "rows" (written by this call), "output_rows", "resumed_rows", "input_rows", "seconds",
    "rows_per_s", "shard", "merged"}.
    """
    started = time.perf_counter()
    log = log or (lambda _message: None)
    out = Path(out).expanduser() if out is not None else None
    shard, merge = _pick_shard(shard, out, resume, overwrite)
    fmt = output_format(out, fmt)
    # a shard, and so a merge, comes with --out (check_output_flags)
    target = part_path(out, *shard) if shard and out is not None else out
    if (
        merge
        and out is not None
        and shard is not None
        and out.exists()
        and _merged_already(out, shard[1], resume, overwrite)
    ):
        return _result(out, 0, None, started, shard, merged=True)
    plan = plan_output(target, resume=resume, overwrite=overwrite) if target is not None else None
    table = open_table(
        source, text_column=text_column, keep_columns=keep_columns, encoding=encoding, chunk_rows=chunk_rows
    )
    predictor = _load(model_dir, load_kwargs)
    meta = {"input": table.identity(), "settings": _settings(predictor, table, None if shard else fmt, shard)}
    shown = progress and process_rank() == 0
    if plan is None:
        written = _write_stream(predictor, table, fmt, chunk_rows, shown)
        return _result(None, written, {"rows": written, "next_row": written}, started, None)
    assert target is not None  # the plan is for it
    if plan.complete:
        written, state = 0, _completed(target, meta, shard)
    else:
        written, state = _write_partial(predictor, table, plan, meta, fmt, shard, chunk_rows, shown, log)
    result = _result(target, written, state, started, shard)
    if merge:
        assert out is not None and shard is not None  # _pick_shard: a launcher's processes, into --out
        _wait_for_other_processes()
        if process_rank() == 0:
            parts = [part_path(out, i, shard[1]) for i in range(shard[1])]
            merged = merge_parts(out, parts, fmt=fmt, overwrite=True, progress=shown)
            result.update(out=str(out), output_rows=merged["rows"], merged=True)
    return result


def iter_predictions(
    model_dir: SentimentModel | str | os.PathLike,
    source: str | os.PathLike,
    *,
    text_column: str | None = None,
    keep_columns: str | list[str] | None = None,
    encoding: str = "utf-8",
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
    **load_kwargs,
) -> Iterator[list[dict]]:
    """The records of `predict_file`, a chunk (a list of records) at a time, in row order."""
    table = open_table(
        source, text_column=text_column, keep_columns=keep_columns, encoding=encoding, chunk_rows=chunk_rows
    )
    predictor = _load(model_dir, load_kwargs)
    for _chunk, records in _scored(predictor, table, 0, None, chunk_rows, progress):
        yield records


def _scored(predictor, table: Table, start: int, shard, chunk_rows: int, progress: bool):
    """(chunk, its records) for the rows of `table` from `start` (of `shard`, if one)."""
    names = output_names(table.keep_columns, predictor.classes_)
    with Progress(table, progress) as bar:
        for chunk in table.chunks(start, chunk_rows):
            chunk = chunk.shard(*shard) if shard else chunk
            records = _records(predictor, chunk, table.keep_columns, names)
            yield chunk, records
            bar.update(chunk, len(records))


def _records(predictor, chunk: Chunk, keep_columns: list[str], names: list[str]) -> list[dict]:
    """The records of `predict_records` (rounded alike), kept columns first."""
    if not len(chunk):
        return []
    probs = predictor.predict_proba(chunk.texts)
    labels = predictor.labels_from_proba(probs)
    kept = [chunk.kept[c] for c in keep_columns]
    records = []
    for j, (text, label, row) in enumerate(zip(chunk.texts, labels, probs)):
        record = {name: values[j] for name, values in zip(names, kept)}
        record.update(text=text, label=label, probs={c: round(float(p), 6) for c, p in zip(predictor.classes_, row)})
        records.append(record)
    return records


def _write_stream(predictor, table: Table, fmt: str, chunk_rows: int, progress: bool) -> int:
    writer = RecordFormat(fmt, output_names(table.keep_columns, predictor.classes_), predictor.classes_)
    sys.stdout.write(writer.header())
    written = 0
    for _chunk, records in _scored(predictor, table, 0, None, chunk_rows, progress):
        sys.stdout.write(writer.encode(records))
        sys.stdout.flush()
        written += len(records)
    return written


def _write_partial(
    predictor, table: Table, plan: Plan, meta: dict, fmt: str, shard: tuple[int, int] | None, chunk_rows, progress, log
):
    """Score into the partial file, chunk by chunk, then publish it. Returns (rows written, final record)."""
    partial = plan.partial
    names = output_names(table.keep_columns, predictor.classes_)
    writer = RecordFormat("jsonl" if shard else fmt, names, predictor.classes_)  # a part: JSON Lines with the row
    if plan.state:
        check_same_run(plan.state, meta, partial.path.name)
        partial.resume(plan.state)
        log(f"Resuming {partial.out}: {partial.state['next_row']:,} input rows done, skipping them")
    else:
        partial.start(meta, part_header(meta, *shard, names, predictor.classes_) if shard else writer.header())
    before = partial.state["rows"]
    try:
        for chunk, records in _scored(predictor, table, partial.state["next_row"], shard, chunk_rows, progress):
            if shard:
                records = [{"row": row, **record} for row, record in zip(chunk.rows, records)]
            partial.append(writer.encode(records), chunk.end, len(records))
        state = dict(partial.state)
        partial.finish(part_end(state["rows"], state["next_row"]) if shard else "")
    except KeyboardInterrupt:
        log(f"Stopped with {partial.state['next_row']:,} input rows done; --resume goes on from there.")
        raise
    finally:
        partial.close()
    return state["rows"] - before, state


def _completed(part: Path, meta: dict, shard) -> dict:
    """A part already complete (resume): of this run, or refused."""
    if shard is None:
        return {"rows": None, "next_row": None}
    header = read_part_header(part)
    check_same_run(header, meta, part.name)
    return {"rows": header["end"]["rows"], "next_row": header["end"]["input_rows"], "resumed": True}


def check_output_flags(out, shard, resume: bool, overwrite: bool) -> None:
    """--shard, --resume and --overwrite act on an output file: without one they would be ignored."""
    if out is None and (shard or resume or overwrite):
        raise BertsentError("--shard, --resume and --overwrite are for a file of predictions: give --out F.")


def _pick_shard(shard, out: Path | None, resume: bool, overwrite: bool) -> tuple[tuple[int, int] | None, bool]:
    """(the shard this process scores, whether the parts are merged at the end): under a launcher, its rank."""
    shard = parse_shard(shard)
    check_output_flags(out, shard, resume, overwrite)
    processes = launched_processes()
    if processes == 1:
        return shard, False
    if shard is not None:
        raise BertsentError(
            "--shard: under torchrun or accelerate launch each process takes the shard of its rank; drop --shard."
        )
    if out is None:
        raise BertsentError("under torchrun or accelerate launch, give --out F: the processes' parts are merged there.")
    return (process_rank(), processes), True


def _merged_already(out: Path, count: int, resume: bool, overwrite: bool) -> bool:
    """Under a launcher, OUT exists: complete when resumed with no parts left; refused without a flag."""
    if overwrite:
        return False
    if not resume:
        raise BertsentError(f"{out}: already exists. Pass --overwrite to replace it.")
    parts = [part_path(out, i, count) for i in range(count)]
    return not any(p.exists() or PartialOutput(p).leftover() is not None for p in parts)


def _load(model_dir, load_kwargs: dict) -> SentimentModel:
    if isinstance(model_dir, SentimentModel):
        if load_kwargs:
            raise BertsentError(f"{', '.join(load_kwargs)}: settings for loading a model, and this one is loaded.")
        return model_dir
    if launched_processes() > 1 and load_kwargs.get("device") is None:
        import torch

        if torch.cuda.is_available():  # one GPU per process (shared when there are more processes than GPUs)
            local = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
            load_kwargs = {**load_kwargs, "device": f"cuda:{local}"}
    return load(model_dir, **load_kwargs)


def _settings(predictor: SentimentModel, table: Table, fmt: str | None, shard) -> dict:
    """What the output depends on besides the input: --resume and merge refuse a difference."""
    return {
        "model": str(predictor.folder.resolve()) if predictor.folder is not None else None,
        "classes": list(predictor.classes_),
        "backend": predictor.backend_name,
        "truncation": predictor.truncation,
        "max_length": predictor.max_length,
        "stride": predictor.stride,
        "neutral_band": predictor.neutral_band,
        "text_column": table.text_column,
        "keep_columns": list(table.keep_columns),
        "encoding": table.encoding,
        "format": fmt,  # None for a part: its format is the merge's
        "shard": list(shard) if shard else None,
    }


def _result(out, written: int, state: dict | None, started: float, shard, merged: bool = False) -> dict:
    seconds = time.perf_counter() - started
    state = state or {}
    return {
        "out": str(out) if out is not None else None,
        "rows": written,
        "output_rows": state.get("rows"),
        "resumed_rows": (state["rows"] - written) if state.get("rows") is not None else None,
        "input_rows": state.get("next_row"),
        "seconds": seconds,
        "rows_per_s": written / seconds if seconds > 0 else 0.0,
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "merged": merged,
    }


def _wait_for_other_processes() -> None:
    """A barrier over the launcher's processes (gloo, on the host), with no timeout that a long shard meets."""
    import torch.distributed as dist

    own = not dist.is_initialized()
    if own:
        dist.init_process_group("gloo", timeout=WAIT_FOR_PROCESSES)
    try:
        gloo = dist.get_backend() == "gloo"
        group = dist.group.WORLD if gloo else dist.new_group(backend="gloo", timeout=WAIT_FOR_PROCESSES)
        dist.barrier(group=group)
    finally:
        if own:
            dist.destroy_process_group()
