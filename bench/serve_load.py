"""The server under load on loopback: `bertsent serve` with --clients concurrent clients for --seconds,
mixing good requests with malformed JSON, wrong shapes, oversized bodies, too many texts and too long texts.

Checks, each a line of the summary (exit 1 when one fails):
- no 5xx, and every request gets the status its kind calls for (200, 413 or 422; a 429 is a failure too);
- no lost answers: every request sent is answered (no connection error, no timeout);
- no crossed answers: every text of a good request gets its own scores, the ones the server gave it when it
  was sent alone before the load (one request at a time: nothing to cross with), to within --tolerance;
- memory flat: the server's resident memory (VmRSS) and its peak (VmHWM), from /proc/PID/status, once the
  load has run a tenth of its time (warmed: every batch shape seen) and at the end; the end over the start
  at most --max-growth. Also shown: the memory once the model was loaded, before any request.

Then the same load again beside --attackers hostile connections (default 300; 0: no second run): slow ones
that send nothing, half their headers, 17 bytes of a 1,000-byte body, or a byte every 2 s (each must be cut off
with a 408 by the server's header and body timeouts, then reconnects), and a stream of malformed requests (a lone
surrogate: 422, 100,000 nested brackets: 422, text/plain: 415, clients hanging up mid-body). Also checked: no 5xx
in the server's own /metrics, and the normal clients' p50/p99 against the run without attackers (target: p99
within 2x). The attackers connect from 127.0.0.2-5, so that the server's per-address connection cap applies to
them and not to the normal clients.

The good requests draw 1-4 texts from a pool of --texts unique synthetic reviews of 4-300 words, as one
string or a list, to /predict or / (the Inference API's shape). The oversized bodies come with their
Content-Length, or without (chunked, in 64 KB pieces).

    python bench/serve_load.py --model tiny --clients 16 --seconds 5 --attackers 40  # a tiny model, trained here
    python bench/serve_load.py --model runs/latest --json bench/results/cpu-serve-load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from common import wait_healthy

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
KINDS = {  # kind: (share of requests, the status it must get)
    "good": (0.58, 200),
    "malformed": (0.1, 422),
    "shape": (0.1, 422),
    "too_many": (0.07, 413),
    "too_long": (0.07, 413),
    "oversized": (0.04, 413),  # over the byte limit, with a Content-Length
    "chunked": (0.04, 413),  # the same without one, sent in pieces
}
WRONG_SHAPES = [
    {"inputs": 5},
    {"inputs": [1, 2]},
    {"inputs": []},
    {"inputs": None},
    {"inputs": {"text": "a film"}},
    {"text": "a film"},
    ["a film"],
    "a film",
    {"inputs": "a film", "parameters": {"top_k": 0}},
    {"inputs": "a film", "parameters": {"neutral_band": 2}},
    {"inputs": "a film", "parameters": {"unknown": 1}},
    {"inputs": "a film", "parameters": "top_k"},
    {"inputs": "a film", "extra": 1},
]
POSITIVE = "great wonderful excellent loved brilliant superb delightful moving charming gripping".split()  # noqa: SIM905
NEGATIVE = "awful terrible boring hated dreadful dull weak painful tedious clumsy".split()  # noqa: SIM905
NEUTRAL = "average okay ordinary fine mixed plain middling uneven modest familiar".split()  # noqa: SIM905
FILLER = (  # noqa: SIM905 - word lists read best as one string
    "the movie film plot acting was really story and ending cast quite a of in it its director script "
    "scene music camera some but very too lead role performance pace dialogue"
).split()


# -- the texts and the requests ------------------------------------------------------------------


def make_texts(n: int, seed: int = 0, max_chars: int | None = None) -> list[str]:
    """n distinct synthetic reviews of 4-300 words (most under 40; none over max_chars characters), sentiment
    words spread through them."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen = set()
    while len(texts) < n:
        size = rng.randint(4, 40) if rng.random() < 0.85 else rng.randint(40, 300)
        words = [rng.choice(FILLER) for _ in range(size)]
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(rng.choice((POSITIVE, NEGATIVE, NEUTRAL))))
        text = " ".join(words).capitalize() + "."
        if text not in seen and (max_chars is None or len(text) <= max_chars):
            seen.add(text)
            texts.append(text)
    return texts


@dataclass
class Request:
    kind: str
    path: str
    body: bytes
    texts: list[str] | None = None  # a good request's texts
    single: bool = False  # a good request's inputs: one string
    chunked: bool = False  # sent without a Content-Length, in pieces


def make_request(kind: str, rng: random.Random, pool: list[str], max_texts: int, max_chars: int) -> Request:
    """One request of a kind, to /predict (or, for good requests, sometimes to /)."""
    if kind == "good":
        texts = rng.sample(pool, rng.randint(1, 4))
        single = len(texts) == 1 and rng.random() < 0.5
        path = "/" if rng.random() < 0.25 else "/predict"
        return Request(kind, path, _dump({"inputs": texts[0] if single else texts}), texts, single)
    if kind == "malformed":
        valid = _dump({"inputs": rng.sample(pool, 2)})
        body = rng.choice(
            [
                valid[: rng.randint(1, len(valid) - 1)],  # cut short: never valid JSON
                b"",
                b"{inputs: 'a film'}",
                b'{"inputs": "a" "b"}',
                b"\xff\xfe\x00garbage",
                b'{"inputs": "a film",}',
            ]
        )
        return Request(kind, "/predict", body)
    if kind == "shape":
        return Request(kind, "/predict", _dump(rng.choice(WRONG_SHAPES)))
    if kind == "too_many":
        texts = [rng.choice(pool)[:50] for _ in range(max_texts + rng.randint(1, 5))]
        return Request(kind, "/predict", _dump({"inputs": texts}))
    if kind == "too_long":
        long_text = ("a long review " * (max_chars // 14 + 2))[: max_chars + rng.randint(1, 100)]
        return Request(kind, "/predict", _dump({"inputs": [rng.choice(pool), long_text]}))
    if kind in ("oversized", "chunked"):  # refused by its Content-Length, or once too much of it is read
        size = body_limit(max_texts, max_chars) + rng.randint(1, 100_000)
        body = b'{"inputs": ["' + b"x" * (size - 16) + b'"]}'
        return Request(kind, "/predict", body, chunked=kind == "chunked")
    raise ValueError(kind)


def body_limit(max_texts: int, max_chars: int) -> int:
    """The largest body the server reads (bertsent.serving.requests.read_body)."""
    return max_texts * (max_chars * 12 + 16) + 65_536


def _dump(payload) -> bytes:
    return json.dumps(payload).encode("utf-8")


# -- the tally and the checks --------------------------------------------------------------------


@dataclass
class Tally:
    sent: Counter = field(default_factory=Counter)  # by kind
    statuses: Counter = field(default_factory=Counter)  # (kind, status)
    lost: list = field(default_factory=list)  # (kind, error)
    wrong_status: list = field(default_factory=list)  # (kind, status, body)
    crossed: list = field(default_factory=list)  # (texts, answer)
    good_latency: list = field(default_factory=list)
    good_texts: int = 0
    deviation: float = 0.0  # largest |score - expected| among the good answers
    attacks: Counter = field(default_factory=Counter)  # hostile clients: (kind, status or outcome)
    attack_wrong: list = field(default_factory=list)  # (kind, status, body): an answer other than expected
    attack_held_s: float = 0.0  # the longest a slow connection was held open by the server

    def summary(self) -> dict:
        return {
            "sent": dict(self.sent),
            "statuses": {f"{k} {s}": n for (k, s), n in sorted(self.statuses.items())},
            "lost": len(self.lost),
            "wrong_status": len(self.wrong_status),
            "crossed": len(self.crossed),
            "server_errors": sum(n for (_, s), n in self.statuses.items() if s >= 500),
            "good_texts": self.good_texts,
            "max_score_deviation": self.deviation,
            "attacks": {f"{k} {s}": n for (k, s), n in sorted(self.attacks.items(), key=str)},
            "attack_wrong": len(self.attack_wrong),
            "attack_held_s": round(self.attack_held_s, 1),
            "examples": {
                "lost": self.lost[:5],
                "wrong_status": self.wrong_status[:5],
                "crossed": self.crossed[:3],
                "attack_wrong": self.attack_wrong[:5],
            },
        }


def check_answer(request: Request, answer, expected: dict, tolerance: float, tally: Tally) -> None:
    """A good request's answer: one list per text (a single text to /predict: the list itself), each text's
    scores its own, most probable first."""
    rows = [answer] if request.single and request.path == "/predict" else answer
    if not isinstance(rows, list) or len(rows) != len(request.texts):
        tally.crossed.append((request.texts, answer))
        return
    for text, row in zip(request.texts, rows):
        scores = {item["label"]: item["score"] for item in row}
        want = expected[text]
        if set(scores) != set(want) or [item["score"] for item in row] != sorted(scores.values(), reverse=True):
            tally.crossed.append((text, row))
            return
        worst = max(abs(scores[label] - want[label]) for label in want)
        tally.deviation = max(tally.deviation, worst)
        if worst > tolerance:
            tally.crossed.append((text, row))
            return
    tally.good_texts += len(request.texts)


def distinguishable(expected: dict, tolerance: float) -> float:
    """The share of pool texts whose scores differ from every other text's by more than the tolerance: how
    surely a crossed answer is caught (a text answered with another's scores within it would pass)."""
    if len(expected) < 2:
        return 1.0
    labels = sorted(next(iter(expected.values())))
    points = sorted(expected[t][labels[0]] for t in expected)
    apart = 0
    for i, value in enumerate(points):
        low = i == 0 or value - points[i - 1] > tolerance
        high = i == len(points) - 1 or points[i + 1] - value > tolerance
        apart += low and high
    return apart / len(points)


# -- memory ---------------------------------------------------------------------------------------


def memory_mb(pid: int) -> dict:
    """VmRSS and VmHWM (peak resident memory) of a process, in MB, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


class MemorySampler:
    """The server's memory every `every` seconds, in a thread, while the load runs."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append((time.monotonic() - self.started, memory_mb(self.pid)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self.started, memory_mb(self.pid)))
            self._stop.wait(self.every)

    def at(self, seconds: float) -> dict:
        """The first sample taken at or after `seconds` into the load (the last one if none)."""
        for t, sample in self.samples:
            if t >= seconds:
                return sample
        return self.samples[-1][1]


# -- the load -------------------------------------------------------------------------------------


async def expected_answers(url: str, pool: list[str]) -> dict:
    """Each pool text's scores, asked alone, one request at a time."""
    import httpx

    out = {}
    async with httpx.AsyncClient(timeout=120) as client:
        for text in pool:
            response = await client.post(f"{url}/predict", json={"inputs": text})
            response.raise_for_status()
            out[text] = {item["label"]: item["score"] for item in response.json()}
    return out


def schedule(count: int, seed: int) -> list[str]:
    """`count` request kinds in a random order: each kind at least once, the rest drawn by their shares. A fixed
    count, not a fixed time: a slow machine sends as many requests of each kind as a fast one."""
    rng = random.Random(seed)
    kinds, weights = list(KINDS), [share for share, _ in KINDS.values()]
    out = kinds + rng.choices(kinds, weights, k=max(0, count - len(kinds)))
    rng.shuffle(out)
    return out


async def load(
    url: str,
    pool,
    expected,
    clients: int,
    seconds: float | None,
    limits: tuple[int, int],
    seed: int,
    tolerance: float,
    count: int | None = None,
    attackers: int = 0,
) -> Tally:
    """`clients` concurrent clients sending requests for `seconds` (then each finishes the one it sent), or
    until `count` requests are sent; `attackers` hostile connections beside them meanwhile (see `attack`)."""
    import httpx

    tally = Tally()
    kinds, weights = list(KINDS), [share for share, _ in KINDS.values()]
    todo = schedule(count, seed) if count is not None else None
    connections = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    deadline = time.monotonic() + (seconds if seconds is not None else 1e9)
    done = asyncio.Event()
    hostile = asyncio.gather(*attack(url, attackers, pool, limits, tally, done, seed)) if attackers else None
    async with httpx.AsyncClient(timeout=60, limits=connections) as client:

        async def one_client(rng: random.Random):
            while time.monotonic() < deadline and (todo is None or todo):
                kind = todo.pop() if todo is not None else rng.choices(kinds, weights)[0]
                await send(client, url, make_request(kind, rng, pool, *limits), expected, tolerance, tally)

        try:
            await asyncio.gather(*(one_client(random.Random(seed * 1000 + i)) for i in range(clients)))
        finally:
            done.set()
            if hostile is not None:
                await hostile
    return tally


async def send(client, url: str, request: Request, expected: dict, tolerance: float, tally: Tally) -> None:
    import httpx

    tally.sent[request.kind] += 1
    started = time.perf_counter()
    try:
        content = _pieces(request.body) if request.chunked else request.body
        response = await client.post(url + request.path, content=content, headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:  # no answer: lost
        waited = time.perf_counter() - started
        tally.lost.append((request.kind, f"{type(exc).__name__}: {exc}", f"after {waited:.3f} s"))
        return
    status = response.status_code
    tally.statuses[(request.kind, status)] += 1
    if status != KINDS[request.kind][1]:
        tally.wrong_status.append((request.kind, status, response.text[:300]))
        return
    if request.kind == "good":
        tally.good_latency.append(time.perf_counter() - started)
        check_answer(request, response.json(), expected, tolerance, tally)
    elif set(response.json()) != {"error", "error_type"}:
        tally.wrong_status.append((request.kind, status, response.text[:300]))


# -- hostile clients ----------------------------------------------------------------------------

SLOW = ("idle", "half_headers", "half_body", "drip")  # connections that hold the server: each must end in 408
MALFORMED = {  # requests the batcher must never see: kind, the status it must get (None: no answer, it hangs up)
    "surrogate": 422,  # valid JSON, a lone surrogate: the tokenizer's TypeError once killed the batcher
    "nested": 422,  # 100,000 nested [: a RecursionError (500) once
    "plain_text": 415,  # what a web page can make a browser post without a CORS preflight
    "hangup": None,  # half a body, then the client closes: once a 500 in /metrics and a traceback
}
# Attackers connect from other loopback addresses (Linux routes all of 127/8 to lo): the server caps connections
# per address, and the normal clients (127.0.0.1) must not share the attackers' cap.
ATTACK_SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
MALFORMED_SOURCE = "127.0.0.5"


def _head(length: int, content_type: str = "application/json") -> bytes:
    head = f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    return head.encode()


def attack(url: str, attackers: int, pool, limits, tally: Tally, done: asyncio.Event, seed: int) -> list:
    """The hostile clients' coroutines: `attackers` slow connections (the kinds of SLOW in turn, each reconnecting
    once the server cuts it off) and a stream of malformed requests (one client per 50 attackers, at least 2)."""
    host, port = url.removeprefix("http://").split(":")
    slow = [
        slow_client(host, int(port), SLOW[i % len(SLOW)], ATTACK_SOURCES[i % len(ATTACK_SOURCES)], tally, done)
        for i in range(attackers)
    ]
    streams = max(2, attackers // 50)
    return slow + [malformed_client(url, tally, done, random.Random(seed + i)) for i in range(streams)]


async def slow_client(host: str, port: int, kind: str, source: str, tally: Tally, done: asyncio.Event) -> None:
    """One slow connection after another until `done`: each must be answered 408 (or closed) by the server. The
    first is always held to its end, however soon the load ends, so that every kind is seen whatever the speed
    of the machine (the server's timeouts bound it)."""
    first = True
    while first or not done.is_set():
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        except OSError as exc:
            tally.attack_wrong.append((kind, "connect", str(exc)))
            first = False  # a connection refused is already a failed check: no waiting for it
            await asyncio.sleep(1)
            continue
        try:
            if kind == "half_headers":
                writer.write(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
            elif kind == "half_body":
                writer.write(_head(1000) + b'{"inputs": "a fi')  # 17 of 1,000 bytes
            elif kind == "drip":
                writer.write(_head(100))
            reply = await _held(reader, writer, drip=kind == "drip", done=asyncio.Event() if first else done)
        except OSError:
            reply = b""
        finally:
            writer.close()
        if reply is None:  # the load ended first
            return
        first = False
        status = int(reply[9:12]) if reply.startswith(b"HTTP/1.1 ") else "closed"
        tally.attacks[(kind, status)] += 1
        tally.attack_held_s = max(tally.attack_held_s, time.monotonic() - started)
        if status not in (408, "closed"):
            tally.attack_wrong.append((kind, status, reply[:200].decode(errors="replace")))


async def _held(reader, writer, drip: bool, done: asyncio.Event, pace: float = 2.0) -> bytes | None:
    """What the server sends until it closes the connection (None if `done` came first); a drip writes a byte
    of its body every `pace` seconds meanwhile."""
    reply = b""
    while True:
        if done.is_set():
            return None
        try:
            chunk = await asyncio.wait_for(reader.read(65536), pace if drip else 0.5)
        except TimeoutError:
            if drip:
                writer.write(b" ")
            continue
        if not chunk:
            return reply
        reply += chunk


async def malformed_client(url: str, tally: Tally, done: asyncio.Event, rng: random.Random) -> None:
    """Malformed requests back to back until `done`, each checked for its status."""
    import httpx

    bodies = {
        "surrogate": (b'{"inputs": ["bad \\ud800 film"]}', "application/json"),
        "nested": (b"[" * 100_000, "application/json"),
        "plain_text": (b'{"inputs": "a film"}', "text/plain"),
    }
    transport = httpx.AsyncHTTPTransport(local_address=MALFORMED_SOURCE)
    async with httpx.AsyncClient(timeout=60, transport=transport) as client:
        host, port = url.removeprefix("http://").split(":")
        while not done.is_set():
            kind = rng.choice(list(MALFORMED))
            if kind == "hangup":
                _, writer = await asyncio.open_connection(host, int(port), local_addr=(MALFORMED_SOURCE, 0))
                writer.write(_head(100) + b'{"inputs": ')
                await writer.drain()
                writer.close()
                tally.attacks[(kind, "hung up")] += 1
                await asyncio.sleep(0.05)
                continue
            body, media = bodies[kind]
            try:
                response = await client.post(f"{url}/predict", content=body, headers={"content-type": media})
            except httpx.HTTPError as exc:
                tally.attack_wrong.append((kind, "lost", f"{type(exc).__name__}: {exc}"))
                continue
            tally.attacks[(kind, response.status_code)] += 1
            if response.status_code != MALFORMED[kind]:
                tally.attack_wrong.append((kind, response.status_code, response.text[:200]))


def server_errors_counted(url: str) -> float:
    """5xx answers the server itself counted (/metrics), hostile clients' included."""
    import httpx

    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("bertsent_requests_total{") and 'status="5' in line:
            total += float(line.split()[-1])
    return total


async def _pieces(body: bytes, size: int = 65_536):
    for start in range(0, len(body), size):
        yield body[start : start + size]


def run_load(
    url: str,
    pid: int,
    *,
    clients: int,
    seconds: float | None = None,
    count: int | None = None,
    attackers: int = 0,
    texts: int = 512,
    max_texts: int = 16,
    max_chars: int = 4000,
    seed: int = 0,
    tolerance: float = 1e-6,
    max_growth: float = 1.10,
    log=None,
) -> dict:
    """The load against a running server (process `pid`, serving at `url` with these limits), for `seconds` or
    `count` requests, with `attackers` hostile connections beside it: the result, its checks and whether all
    passed."""
    import httpx

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    info = httpx.get(f"{url}/info").json()
    pool = make_texts(texts, seed, max_chars)
    loaded = memory_mb(pid)
    started = time.perf_counter()
    expected = asyncio.run(expected_answers(url, pool))
    log(f"{len(pool)} texts asked alone, one at a time, in {time.perf_counter() - started:.1f} s; now the load")
    counted_before = server_errors_counted(url)
    with MemorySampler(pid) as memory:
        began = time.perf_counter()
        tally = asyncio.run(
            load(url, pool, expected, clients, seconds, (max_texts, max_chars), seed, tolerance, count, attackers)
        )
        elapsed = time.perf_counter() - began
    start, end = memory.at(elapsed / 10), memory.samples[-1][1]
    peak = max(sample["VmRSS"] for _, sample in memory.samples)
    counts = tally.summary()
    answered = sum(tally.statuses.values())
    growth = {name: round(end[name] / start[name], 3) for name in ("VmRSS", "VmHWM")}
    checks = {
        "no 5xx": counts["server_errors"] == 0,
        "every request answered": counts["lost"] == 0 and answered == sum(tally.sent.values()),
        "every status as expected": counts["wrong_status"] == 0,
        "no crossed answers": counts["crossed"] == 0 and tally.good_texts > 0,
        "memory flat": max(growth.values()) <= max_growth,
        "no 5xx counted by the server": server_errors_counted(url) == counted_before,
    }
    if attackers:
        timeouts = info["limits"]["header_timeout_s"] + info["limits"]["body_timeout_s"]
        checks["hostile clients answered as expected"] = counts["attack_wrong"] == 0 and bool(tally.attacks)
        checks["slow connections cut off in time"] = tally.attack_held_s <= timeouts + 10
    latency = sorted(tally.good_latency)
    return {
        "backend": info["backend"],
        "batch_size": info["batch_size"],
        "clients": clients,
        "attackers": attackers,
        "seconds": round(elapsed, 1),
        "pool_texts": texts,
        "limits": {"max_texts": max_texts, "max_chars": max_chars, "body_bytes": body_limit(max_texts, max_chars)},
        "tolerance": tolerance,
        "distinguishable": round(distinguishable(expected, tolerance), 3),
        "requests": sum(tally.sent.values()),
        "requests_per_s": round(sum(tally.sent.values()) / elapsed, 1),
        "good_texts_per_s": round(tally.good_texts / elapsed, 1),
        "good_p50_ms": round(1000 * statistics.median(latency), 1) if latency else None,
        "good_p99_ms": round(1000 * latency[min(len(latency) - 1, round(0.99 * (len(latency) - 1)))], 1)
        if latency
        else None,
        **counts,
        "memory_mb": {"loaded": loaded, "start": start, "end": end, "rss_peak_sampled": peak, "growth": growth},
        "memory_samples": [(round(t, 1), s["VmRSS"]) for t, s in memory.samples[:: max(1, len(memory.samples) // 60)]],
        "checks": checks,
        "passed": all(checks.values()),
    }


def summary_line(result: dict) -> str:
    m = result["memory_mb"]
    attackers = f" beside {result['attackers']} hostile connections" if result.get("attackers") else ""
    lines = [
        f"{result['clients']} clients{attackers} for {result['seconds']:.0f} s ({result.get('backend', '?')}): "
        f"{result['requests']} requests ({result['requests_per_s']}/s; {result['sent'].get('good', 0)} good, "
        f"{result['good_texts_per_s']} texts/s, p50 {result['good_p50_ms']} ms, p99 {result['good_p99_ms']} ms)",
        f"  5xx {result['server_errors']}, lost {result['lost']}, wrong status {result['wrong_status']}, "
        f"crossed {result['crossed']} (scores within {result['tolerance']:g} of the text's own, largest "
        f"deviation {result['max_score_deviation']:.1e}; {100 * result['distinguishable']:.0f}% of texts "
        "distinguishable)",
        f"  memory: loaded {m['loaded']['VmRSS']} MB; RSS {m['start']['VmRSS']} -> {m['end']['VmRSS']} MB "
        f"({m['growth']['VmRSS']:.3f}x), peak (VmHWM) {m['start']['VmHWM']} -> {m['end']['VmHWM']} MB "
        f"({m['growth']['VmHWM']:.3f}x)",
        *([_hostile_line(result)] if result.get("attackers") else []),
        "  " + ", ".join(f"{name}: {'ok' if ok else 'FAILED'}" for name, ok in result["checks"].items()),
        "PASS" if result["passed"] else "FAIL",
    ]
    return "\n".join(lines)


def _hostile_line(result: dict) -> str:
    kinds = ", ".join(f"{k}: {n}" for k, n in result["attacks"].items())
    return (
        f"  hostile: {sum(result['attacks'].values())} answered ({kinds}); unexpected {result['attack_wrong']}, "
        f"longest held {result['attack_held_s']} s"
    )


# -- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: str, port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "bertsent", "serve", model_dir, "--port", str(port), "--log-level", "warning"]
    command += ["--backend", args.backend, "--max-texts", str(args.max_texts), "--max-chars", str(args.max_chars)]
    command += ["--threads", str(args.threads)] if args.threads else []
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed with the process; a pipe could fill and block
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    process.log = log
    return process


def stop_server(process: subprocess.Popen) -> str:
    """Stop it (SIGTERM, as Ctrl-C would) and return its log."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    process.log.seek(0)
    text = process.log.read()
    process.log.close()
    return text


def tiny_model(folder: Path) -> str:
    """A 2-layer, 32-wide random BERT (the packaged MiniLM's vocab) fine-tuned for a moment on reviews whose
    label one word gives away. It is sure of everything; its temperature is set to the spread of its margins
    over the pool's texts so that their scores spread (0.2-0.8) and a text answered with another's shows."""
    import bertsent
    from bertsent.data.sources import TextDataset
    from bertsent.modeling.tiny import tiny_bert

    base = tiny_bert(folder / "tiny-base")
    out = folder / "tiny"
    bertsent.train(
        TextDataset(*toy_reviews(120, seed=1), name="toy"),
        TextDataset(*toy_reviews(40, seed=2), name="toy validation"),
        out=out,
        model=str(base),
        epochs=5,
        batch_size=16,
        lr=5e-3,
        progress=False,
        log=lambda *_: None,
        report=False,
    )
    logits = bertsent.load(out).decision_function(make_texts(512))
    metadata = json.loads((out / "bertsent.json").read_text())
    metadata["temperature"] = float((logits[:, 1] - logits[:, 0]).std())
    (out / "bertsent.json").write_text(json.dumps(metadata, indent=2))
    return str(out)


def toy_reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Short reviews whose label one sentiment word gives away (tests/conftest.py's make_reviews)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = ("negative", "positive")[i % 2]
        words = rng.sample(FILLER[:12], rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(NEGATIVE[:8] if label == "negative" else POSITIVE[:8]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


# -- the command ----------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="a trained model folder, or 'tiny' (trained here, in moments)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument(
        "--attackers",
        type=int,
        default=300,
        help="hostile connections beside the clients, in a second run compared with the first (0: one run, none)",
    )
    p.add_argument("--texts", type=int, default=512, help="unique texts the good requests draw from")
    p.add_argument("--backend", default="auto", help="the server's (auto: ONNX int8 when exported)")
    p.add_argument("--threads", type=int, help="the server's CPU threads (default: all cores)")
    p.add_argument("--max-texts", type=int, default=16, help="the server's limit (its default is 64)")
    p.add_argument("--max-chars", type=int, default=4000, help="the server's limit (its default is 20000)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="a score this far from the text's own is crossed")
    p.add_argument("--max-growth", type=float, default=1.10, help="memory end / start, at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="default: bench/results/cpu-serve-load-MODEL.json ('' for none)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import from_args, machine

    with tempfile.TemporaryDirectory(prefix="bertsent-load-") as work:
        model_dir = tiny_model(Path(work)) if args.model == "tiny" else args.model
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(model_dir, port, args)
        try:
            wait_healthy(url, server)
            runs = [
                run_load(
                    url,
                    server.pid,
                    attackers=attackers,
                    **from_args(args, "clients", "seconds", "texts", "max_texts", "max_chars", "seed", "tolerance"),
                    max_growth=args.max_growth,
                )
                for attackers in sorted({0, args.attackers})
            ]
        finally:
            log = stop_server(server)
    result = runs[-1]
    if len(runs) == 2:  # the normal clients' latency beside the attackers, against the run without them
        calm = runs[0]
        print(summary_line(calm))
        result["without_attackers"] = calm
        result["p50_ratio"] = round(result["good_p50_ms"] / calm["good_p50_ms"], 2)
        result["p99_ratio"] = round(result["good_p99_ms"] / calm["good_p99_ms"], 2)
        result["passed"] = result["passed"] and calm["passed"]
    result = {
        "date": date.today().isoformat(),
        "machine": machine(),
        "model": args.model,
        "server_threads": args.threads,
        "load_average_at_end": [round(x, 1) for x in os.getloadavg()],  # 1, 5, 15 min: how busy the machine was
        **result,
        "server_log_tail": log[-2000:],
    }
    print(summary_line(result))
    if "p99_ratio" in result:
        met = "met" if result["p99_ratio"] <= 2 else "NOT met"
        print(
            f"beside the attackers, the normal clients' p50 x{result['p50_ratio']}, p99 x{result['p99_ratio']} "
            f"of the run without them (target: p99 within 2x, {met})"
        )
    target = args.json
    if target is None:
        name = "tiny" if args.model == "tiny" else Path(args.model).name
        target = RESULTS / f"{'gpu' if 'GPU' in result['machine'] else 'cpu'}-serve-load-{name}.json"
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(result, indent=2, default=str))
        print(f"written to {target}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
