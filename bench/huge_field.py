"""`bertsent data` and training's tokenization on a CSV with one huge field: wall time and peak memory.

    python bench/huge_field.py [--mb 50] [--model minilm]

Writes a CSV of a few ordinary reviews and one review of --mb megabytes, then runs, each in a process of its
own (peak RSS from getrusage of the finished child):
  data      `bertsent data FILE --model M` (token-length statistics)
  tokenize  what training does with the texts before the first step: `model.tokenize` of every text
Run it against another checkout with PYTHONPATH=/that/checkout/src to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOKENIZE = """
import sys
from bertsent.data.sources import read_data
from bertsent.modeling import hub
from bertsent.modeling.tokens import tokenize
tokenizer = hub.load_tokenizer(sys.argv[2])
texts = read_data(sys.argv[1]).texts
tokens = tokenize(tokenizer, texts)
print(max(len(ids) for ids, _ in tokens))
"""


def run(command: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one child process."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far: run small first
    return {
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak),
        "exit": result.returncode,
        "tail": (result.stdout + result.stderr).strip().splitlines()[-3:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--only", choices=["data", "tokenize"], help="one measurement (each needs its own process)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "huge.csv"
        words = ["the", "film", "was", "a", "wonderful", "surprise", "and", "the", "acting", "quite", "good"]
        field = " ".join(words[i % len(words)] for i in range(int(args.mb * 1e6 / 5.3)))
        rows = [f'"{field}",positive'] + [
            f"an ordinary review number {i},{'positive' if i % 2 else 'negative'}" for i in range(20)
        ]
        path.write_text("text,label\n" + "\n".join(rows) + "\n")
        size = path.stat().st_size / 1e6
        out = {"file_mb": round(size, 1), "python": sys.executable, "pythonpath": os.environ.get("PYTHONPATH", "")}
        if args.only in (None, "data"):
            out["data"] = run([sys.executable, "-m", "bertsent", "data", str(path), "--model", args.model])
        if args.only in (None, "tokenize"):
            out["tokenize"] = run([sys.executable, "-c", TOKENIZE, str(path), args.model])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
