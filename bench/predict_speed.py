"""Prediction speed and accuracy: transformers.pipeline against our backends, one model, one run.

The same fine-tuned model folder and the same IMDB test reviews for every engine: reviews/s and accuracy for
`transformers.pipeline("text-classification")` (called as its docs show: a list of texts, a batch size,
truncation to the model's 512 tokens), and our torch, ONNX fp32 and ONNX int8 backends doing the same work
(head truncation at 512 tokens), overall and by length bucket (Rotten Tomatoes snippets; IMDB reviews up to
128, 512 and over 512 tokens). Then our default way to score (the backend `auto` picks, long texts in
windows of the training length) for its accuracy. Then the peak memory of `bertsent predict --file` streaming
20,000 and 200,000 rows (short texts, so the run stays short; memory is what is measured).

Speeds are ratios to the pipeline measured in the same run; the load average before and after each engine is
printed and kept in the JSON, since a figure from a machine shared with other work is only a rough one. The
targets (issue 18), on full IMDB reviews (the buckets up to 512 tokens and over): int8 >= 3x the pipeline
within 0.5 accuracy points of torch, ONNX fp32 >= 2x.

    bertsent export runs/latest --int8 --data rotten-tomatoes:validation      # once: the ONNX files
    python bench/predict_speed.py runs/latest --samples 2000 --json bench/results/cpu-predict-speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bertsent
from bertsent.data.sources import read_data
from bertsent.modeling.tokens import tokenize

from common import DEFAULT_IMDB, machine, sample_indices

BUCKETS = (("snippets", None), ("<=128", (0, 128)), ("129-512", (128, 512)), (">512", (512, 10**9)))
ENGINES = ("pipeline", "torch", "onnx", "onnx-int8")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--imdb", default=DEFAULT_IMDB + ":test")
    p.add_argument("--snippets", default="rotten-tomatoes:test", help="short texts for the snippets bucket")
    p.add_argument("--samples", type=int, default=2000, help="IMDB reviews (a reproducible sample)")
    p.add_argument("--snippet-samples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="the pipeline's and ours")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--stream-rows", default="20000,200000", help="row counts for the memory check ('' skips)")
    p.add_argument("--stream-backend", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)  # one engine, in a process of its own
    return p.parse_args(argv)


def load_texts(args, tokenizer):
    """IMDB reviews and snippets with their labels and token lengths, and each text's bucket."""
    imdb = read_data(args.imdb)
    snippets = read_data(args.snippets)
    pick = sample_indices(len(imdb), args.samples, args.seed)
    short = sample_indices(len(snippets), args.snippet_samples, args.seed)
    texts = [imdb.texts[i] for i in pick] + [snippets.texts[i] for i in short]
    labels = [imdb.labels[i] for i in pick] + [snippets.labels[i] for i in short]
    lengths = np.array([len(ids) for ids, _ in tokenize(tokenizer, texts)])
    bucket = np.array(["snippets"] * len(texts), dtype=object)
    for name, span in BUCKETS[1:]:
        inside = (lengths > span[0]) & (lengths <= span[1])
        bucket[: len(pick)][inside[: len(pick)]] = name
    return texts, labels, bucket


def run_pipeline(model_dir: str, texts: list[str], batch_size: int) -> tuple[list[str], float]:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model_dir, device=-1)
    pipe(texts[:8], batch_size=batch_size, truncation=True, max_length=512)  # warm-up, as ours gets one
    start = time.perf_counter()
    out = pipe(texts, batch_size=batch_size, truncation=True, max_length=512)
    return [o["label"] for o in out], time.perf_counter() - start


def run_ours(model_dir: str, texts: list[str], batch_size: int, **settings) -> tuple[list[str], float]:
    model = bertsent.load(model_dir, batch_size=batch_size, **settings)
    model.predict(texts[:8])  # warm-up, as the pipeline's first call also pays its own
    start = time.perf_counter()
    labels = model.predict(texts)
    return labels, time.perf_counter() - start


def by_bucket(name, labels, truth, bucket, seconds_total, n_total) -> list[dict]:
    """Accuracy per bucket; the speed per bucket is timed separately (see time_buckets)."""
    rows = []
    for bucket_name in ["all", *[b for b, _ in BUCKETS]]:
        mask = np.ones(len(truth), bool) if bucket_name == "all" else bucket == bucket_name
        if not mask.any():
            continue
        correct = np.array(labels)[mask] == np.array(truth)[mask]
        rows.append({"engine": name, "bucket": bucket_name, "n": int(mask.sum()), "accuracy": float(correct.mean())})
    rows[0]["reviews_per_s"] = n_total / seconds_total
    return rows


def time_engine(name, args, texts, truth, bucket) -> list[dict]:
    """Each bucket scored on its own (its speed), then the accuracy of all of them."""
    labels = [None] * len(texts)
    speeds, total = {}, 0.0
    for bucket_name, _ in BUCKETS:
        idx = np.flatnonzero(bucket == bucket_name)
        if not len(idx):
            continue
        part = [texts[i] for i in idx]
        if name == "pipeline":
            got, seconds = run_pipeline(args.model_dir, part, args.batch_size)
        else:
            got, seconds = run_ours(
                args.model_dir, part, args.batch_size, backend=name, truncation="head", max_length=512
            )
        for i, label in zip(idx, got):
            labels[i] = label
        speeds[bucket_name] = len(idx) / seconds
        total += seconds
    rows = by_bucket(name, labels, truth, bucket, total, len(texts))
    for row in rows[1:]:
        row["reviews_per_s"] = speeds.get(row["bucket"])
    return rows


def peak_memory(model_dir: str, rows: int, backend: str, workdir: Path) -> dict:
    """Peak RSS of `bertsent predict --file` on `rows` short lines, in a process of its own."""
    source = workdir / f"lines-{rows}.txt"
    words = ["good", "bad", "fine", "awful", "great", "dull", "moving", "boring"]
    rng = np.random.RandomState(rows)
    with open(source, "w") as f:
        for _ in range(rows):
            f.write(" ".join(rng.choice(words, 6)) + "\n")
    out = workdir / f"out-{rows}.jsonl"
    command = ["bertsent", "predict", model_dir, "--file", str(source), "--out", str(out), "--overwrite"]
    command += ["--backend", backend]
    probe = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); "
    probe += "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, kib = result.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"bertsent predict failed: {result.stderr[-2000:]}")
    with open(out) as f:
        written = sum(1 for _ in f)
    return {"rows": rows, "written": written, "peak_rss_mib": int(kib) / 1024, "seconds": seconds}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def in_own_process(name: str, argv) -> list[dict]:
    """One engine timed in a fresh process: after a transformers.pipeline call, PyTorch in the same process
    runs several times slower (339 -> 114 snippets/s measured here), so engines must not share one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    before = load_average()
    result = subprocess.run(
        [sys.executable, __file__, *argv, "--worker", name], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(f"{name} failed: {result.stderr[-3000:]}")
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    for row in rows:
        row["load_average"] = {"before": before, "after": load_average()}
    return rows


def full_reviews(rows: list[dict]) -> list[dict]:
    """Each engine on the IMDB reviews alone (every bucket but the snippets): reviews/s from the buckets'
    times, its ratio to the pipeline and its accuracy against torch's, the figures the targets are set on."""
    out = []
    for engine in dict.fromkeys(r["engine"] for r in rows):
        parts = [r for r in rows if r["engine"] == engine and r["bucket"] not in ("all", "snippets")]
        if not parts or any(not r.get("reviews_per_s") for r in parts):
            continue
        n = sum(r["n"] for r in parts)
        seconds = sum(r["n"] / r["reviews_per_s"] for r in parts)
        correct = sum(r["accuracy"] * r["n"] for r in parts)
        out.append({"engine": engine, "n": n, "reviews_per_s": n / seconds, "accuracy": correct / n})
    base = next((r["reviews_per_s"] for r in out if r["engine"] == "pipeline"), None)
    torch_accuracy = next((r["accuracy"] for r in out if r["engine"] == "torch"), None)
    print(f"\nIMDB reviews only{'':<4} {'n':>5} {'reviews/s':>10} {'vs pipeline':>12} {'accuracy':>9} {'vs torch':>9}")
    for r in out:
        r["vs_pipeline"] = r["reviews_per_s"] / base if base else None
        r["points_vs_torch"] = (r["accuracy"] - torch_accuracy) * 100 if torch_accuracy is not None else None
        ratio = f"{r['vs_pipeline']:.2f}x" if r["vs_pipeline"] else "-"
        points = f"{r['points_vs_torch']:+.2f}" if r["points_vs_torch"] is not None else "-"
        print(
            f"{r['engine']:<21} {r['n']:>5} {r['reviews_per_s']:>10.1f} {ratio:>12} {r['accuracy']:>9.4f} {points:>9}"
        )
    return out


def print_table(rows: list[dict]) -> None:
    reference = {r["bucket"]: r["reviews_per_s"] for r in rows if r["engine"] == "pipeline"}
    print(f"\n{'engine':<15} {'bucket':<9} {'n':>5} {'reviews/s':>10} {'vs pipeline':>12} {'accuracy':>9}")
    for r in rows:
        speed, base = r.get("reviews_per_s"), reference.get(r["bucket"])
        r["vs_pipeline"] = speed / base if speed and base else None
        shown = f"{speed:.1f}" if speed else "-"
        ratio = f"{r['vs_pipeline']:.2f}x" if r["vs_pipeline"] else "-"
        print(f"{r['engine']:<15} {r['bucket']:<9} {r['n']:>5} {shown:>10} {ratio:>12} {r['accuracy']:>9.4f}")


def measure_memory(args) -> list[dict]:
    memory = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.stream_rows.split(",")]:
            m = peak_memory(args.model_dir, n, args.stream_backend, Path(tmp))
            memory.append(m)
            print(f"stream {m['rows']:>7} rows: peak RSS {m['peak_rss_mib']:.0f} MiB, {m['seconds']:.0f} s")
    if len(memory) > 1:
        ratio = memory[-1]["peak_rss_mib"] / memory[0]["peak_rss_mib"]
        print(f"peak memory, {memory[-1]['rows']} rows against {memory[0]['rows']}: {ratio:.2f}x")
    return memory


def main(argv=None) -> int:
    args = parse_args(argv)
    print(f"machine   {machine()}\ndate      {date.today()}\ncommand   python {' '.join(sys.argv)}")
    print(f"load      {load_average()} (1, 5, 15 min averages, {os.cpu_count()} cores)")
    tokenizer = bertsent.load(args.model_dir, backend="torch").tokenizer
    texts, truth, bucket = load_texts(args, tokenizer)
    counts = {b: int((bucket == b).sum()) for b, _ in BUCKETS}
    print(f"data      {args.samples} IMDB test reviews and {args.snippet_samples} snippets; buckets {counts}")
    if args.worker:  # a child: this engine's rows on stdout, last line
        print(json.dumps(time_engine(args.worker, args, texts, truth, bucket)))
        return 0
    rows = []
    for name in args.engines.split(","):
        found = in_own_process(name, argv)
        rows += found
        print(
            f"{name:<10} "
            + "  ".join(f"{r['bucket']}: {r['reviews_per_s'] or 0:.1f}/s {r['accuracy']:.4f}" for r in found)
        )
    labels, seconds = run_ours(args.model_dir, texts, args.batch_size)
    default = by_bucket("ours, default", labels, truth, bucket, seconds, len(texts))
    rows += default
    print("default    " + "  ".join(f"{r['bucket']}: {r['accuracy']:.4f}" for r in default))
    print_table(rows)
    reviews = full_reviews(rows)
    print(f"load      {load_average()} at the end")
    memory = measure_memory(args) if args.stream_rows else []
    if args.json:
        payload = {
            "machine": machine(),
            "date": str(date.today()),
            "argv": sys.argv,
            "rows": rows,
            "imdb_reviews": reviews,
            "load_average_end": load_average(),
            "memory": memory,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
