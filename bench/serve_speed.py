"""Serving speed on loopback: `bertsent serve` against a plain FastAPI endpoint that calls
`transformers.pipeline` once per request (the way most tutorials serve a model), same model, same machine,
one run.

Each server runs in a process of its own, one at a time; this process is the client (httpx, asyncio). Measured:
the latency of a one-review request (p50, p99, one client, requests one after another), and reviews/s with
1, 16 and 64 concurrent clients, each sending one review per request. Both score the same reviews (IMDB test
reviews of --min-tokens to --max-tokens tokens, or built-in ones without the data) cut at the same length
(--max-length, longer than the reviews: both run the whole review), and their labels are checked to agree.
With --explain-steps, also the time to explain one review of --explain-tokens tokens (word attributions).

    python bench/serve_speed.py runs/latest --json bench/results/cpu-serve-speed.json
    python bench/serve_speed.py runs/latest --quick        # small request counts: a minute
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_IMDB, machine, wait_healthy

CONCURRENCY = (1, 16, 64)
BUILT_IN = [
    "I went in expecting very little and came out moved. The two leads have an easy warmth together, the "
    "script gives even the smallest parts a line worth remembering, and the last twenty minutes build to an "
    "ending that feels earned rather than forced. The middle drags a little, and one subplot about a lost "
    "letter goes nowhere, but the photography is gorgeous and the score never tells you what to feel. "
    "I have already recommended it to three friends and would happily watch it again.",
    "This was a chore to sit through. The plot borrows every twist from better films and still manages to "
    "make them predictable, the dialogue is stiff, and the lead seems to be reading his lines off a card just "
    "out of frame. A few action scenes are competently staged, and the villain has one good monologue, but "
    "the film is at least forty minutes too long and the ending simply stops rather than concludes. I cannot "
    "think of anyone I would recommend it to, and I like this genre a great deal.",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir")
    p.add_argument("--imdb", default=DEFAULT_IMDB + ":test", help="reviews to send ('' for the built-in ones)")
    p.add_argument("--min-tokens", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--reviews", type=int, default=256, help="distinct reviews sent, in turn")
    p.add_argument("--max-length", type=int, default=512, help="tokens scored per review, by both servers")
    p.add_argument("--latency-requests", type=int, default=300, help="one-review requests for p50/p99")
    p.add_argument("--requests", type=int, default=640, help="requests per concurrency level")
    p.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    p.add_argument("--servers", default="bertsent,pipeline")
    p.add_argument("--backend", default="auto", help="bertsent serve's (auto: ONNX int8 when exported)")
    p.add_argument("--threads", type=int, help="CPU threads of both servers and of explain (default: all cores)")
    p.add_argument("--explain-steps", type=int, nargs="*", default=[], help="n_steps values to time explain with")
    p.add_argument("--explain-tokens", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="30 latency requests, 128 per concurrency level")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)  # run the pipeline endpoint
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.latency_requests, args.requests = 30, 128
    return args


# -- the plain endpoint, as tutorials write it ---------------------------------------------------


def plain_app(model_dir: str, max_length: int):
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    classifier = pipeline("text-classification", model=model_dir, tokenizer=model_dir, device=-1)
    app = FastAPI()

    class Request(BaseModel):  # (no `from __future__ import annotations` here: FastAPI reads this annotation)
        inputs: str

    @app.post("/predict")
    def predict(request: Request):
        return classifier(request.inputs, truncation=True, max_length=max_length, top_k=None)

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app


# -- running a server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, args, port: int) -> subprocess.Popen:
    if kind == "bertsent":
        command = [sys.executable, "-m", "bertsent", "serve", args.model_dir, "--port", str(port)]
        command += ["--backend", args.backend, "--long", "head", "--max-length", str(args.max_length)]
        command += ["--log-level", "warning", "--max-texts", "64"]
        command += ["--threads", str(args.threads)] if args.threads else []
    else:
        command = [sys.executable, __file__, args.model_dir, "--plain-server", "--port", str(port)]
        command += ["--max-length", str(args.max_length)]
        command += ["--threads", str(args.threads)] if args.threads else []
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the process; not a pipe, which blocks when full
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    process.log = log
    return process


# -- the client ----------------------------------------------------------------------------------


async def post(client, url: str, body: dict, tries: int = 3):
    """A POST, sent again when the server closed a kept-alive connection just as it was reused."""
    import httpx

    for attempt in range(tries):
        try:
            return await client.post(url, json=body)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            if attempt == tries - 1:
                raise


async def latency(url: str, reviews: list[str], n: int) -> list[float]:
    import httpx

    times = []
    async with httpx.AsyncClient(timeout=120) as client:
        for i in range(n):
            started = time.perf_counter()
            response = await client.post(f"{url}/predict", json={"inputs": reviews[i % len(reviews)]})
            times.append(time.perf_counter() - started)
            response.raise_for_status()
    return times


async def throughput(url: str, reviews: list[str], n: int, clients: int) -> float:
    """Reviews/s with `clients` concurrent clients sending n one-review requests in all."""
    import httpx

    counter = iter(range(n))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one_client():
            for i in counter:
                response = await post(client, f"{url}/predict", {"inputs": reviews[i % len(reviews)]})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return n / (time.perf_counter() - started)


async def labels(url: str, reviews: list[str]) -> list[str]:
    import httpx

    async with httpx.AsyncClient(timeout=120) as client:
        out = []
        for text in reviews:
            answer = (await client.post(f"{url}/predict", json={"inputs": text})).json()
            out.append(max(answer, key=lambda item: item["score"])["label"])
        return out


def measure(kind: str, args, reviews: list[str]) -> dict:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start(kind, args, port)
    try:
        started = time.time()
        wait_healthy(url, process)
        ready = time.time() - started
        backend = httpx.get(f"{url}/info").json().get("backend", "torch") if kind == "bertsent" else "torch"
        asyncio.run(latency(url, reviews, 10))  # warm-up
        times = asyncio.run(latency(url, reviews, args.latency_requests))
        row = {
            "server": kind,
            "backend": backend,
            "ready_s": round(ready, 1),
            "p50_ms": round(1000 * statistics.median(times), 1),
            "p99_ms": round(1000 * percentile(times, 99), 1),
            "labels": asyncio.run(labels(url, reviews[:32])),
        }
        for clients in args.concurrency:
            row[f"reviews_per_s_{clients}"] = round(asyncio.run(throughput(url, reviews, args.requests, clients)), 1)
        return row
    except Exception:
        process.log.seek(0)
        print(f"{kind} server's log, last lines:\n{process.log.read()[-3000:]}", file=sys.stderr)
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        process.log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- the reviews and the explanation timing ------------------------------------------------------


def pick_reviews(args, tokenizer) -> tuple[list[str], str]:
    """Reviews of min..max tokens: IMDB test reviews (reproducible order), or the built-in ones."""
    if args.imdb:
        try:
            from bertsent.data.sources import read_data

            texts = read_data(args.imdb).texts
        except Exception as exc:  # noqa: BLE001 - no data here: the built-in reviews do
            print(f"({args.imdb}: {exc}; using the built-in reviews)", file=sys.stderr)
        else:
            lengths = [len(ids) for ids in tokenizer(texts[:20000], truncation=False)["input_ids"]]
            chosen = [t for t, n in zip(texts, lengths) if args.min_tokens <= n <= args.max_tokens]
            return chosen[: args.reviews], f"IMDB test reviews of {args.min_tokens}-{args.max_tokens} tokens"
    return BUILT_IN, "two built-in reviews of about 100 tokens"


def explain_timing(args, tokenizer) -> list[dict]:
    import torch

    import bertsent

    model = bertsent.load(args.model_dir, backend="torch", max_length=args.max_length)
    words = " ".join(BUILT_IN).split()
    text = " ".join(words)
    while len(tokenizer(text)["input_ids"]) < args.explain_tokens:
        text += " " + text
    ids = tokenizer(text)["input_ids"][1 : args.explain_tokens - 1]
    text = tokenizer.decode(ids)
    tokens = len(tokenizer(text)["input_ids"])
    rows = []
    for steps in args.explain_steps:
        model.explain([text], n_steps=steps)  # warm-up
        times, deltas = [], []
        for _ in range(3):
            started = time.perf_counter()
            (x,) = model.explain([text], n_steps=steps)
            times.append(time.perf_counter() - started)
            deltas.append(abs(x.delta))
        total = sum(abs(s) for s in x.scores)
        rows.append(
            {
                "n_steps": steps,
                "tokens": tokens,
                "seconds": round(statistics.median(times), 2),
                "best_seconds": round(min(times), 2),
                "delta": round(max(deltas), 4),
                "sum_abs_scores": round(total, 3),
                "torch_threads": torch.get_num_threads(),
            }
        )
        print(
            f"explain {tokens} tokens, n_steps {steps}: median {rows[-1]['seconds']:.2f} s, best "
            f"{rows[-1]['best_seconds']:.2f} s (delta {rows[-1]['delta']}, sum of |scores| {total:.3f})"
        )
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.plain_server:
        import torch
        import uvicorn

        if args.threads:
            torch.set_num_threads(args.threads)
        uvicorn.run(plain_app(args.model_dir, args.max_length), host="127.0.0.1", port=args.port, log_level="warning")
        return 0
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from bertsent.modeling.hub import load_tokenizer

    tokenizer = load_tokenizer(args.model_dir)
    explained = explain_timing(args, tokenizer) if args.explain_steps else []
    reviews, described = pick_reviews(args, tokenizer)
    lengths = [len(ids) for ids in tokenizer(reviews)["input_ids"]]
    print(f"{len(reviews)} {described}; median {statistics.median(lengths):.0f} tokens; {machine()}")
    rows = [measure(kind, args, reviews) for kind in args.servers.split(",") if kind]
    header = f"{'server':<10} {'backend':<10} {'p50 ms':>7} {'p99 ms':>7} " + " ".join(
        f"{f'rev/s @{c}':>10}" for c in args.concurrency
    )
    print(header)
    for row in rows:
        print(
            f"{row['server']:<10} {row['backend']:<10} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
            + " ".join(f"{row[f'reviews_per_s_{c}']:>10.1f}" for c in args.concurrency)
        )
    ratios = {}
    if len(rows) == 2:
        ours, plain = rows
        agree = sum(a == b for a, b in zip(ours["labels"], plain["labels"]))
        ratios = {
            f"speedup_{c}": round(ours[f"reviews_per_s_{c}"] / plain[f"reviews_per_s_{c}"], 2) for c in args.concurrency
        }
        ratios["p50_ratio"] = round(plain["p50_ms"] / ours["p50_ms"], 2)
        shown = ", ".join(f"{c} clients {ratios[f'speedup_{c}']:.2f}x" for c in args.concurrency)
        print(f"ours / plain, reviews/s: {shown}")
        print(f"plain p50 / ours: {ratios['p50_ratio']:.2f}x; labels agree on {agree}/{len(ours['labels'])} reviews")
        ratios["labels_agree"] = f"{agree}/{len(ours['labels'])}"
    if args.json:
        result = {
            "date": date.today().isoformat(),
            "machine": machine(),
            "model_dir": args.model_dir,
            "reviews": described,
            "median_tokens": statistics.median(lengths),
            "max_length": args.max_length,
            "threads": args.threads,
            "latency_requests": args.latency_requests,
            "requests_per_level": args.requests,
            "servers": [{k: v for k, v in row.items() if k != "labels"} for row in rows],
            "ratios": ratios,
            "explain": explained,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
