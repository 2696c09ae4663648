"""`read_data` on a table file in each format: CPU seconds in this checkout and in a peer checkout, and the ratio.

    python bench/read_speed.py [--rows 100000] [--peer /other/checkout/src] [--repeat 5]

Writes a table of --rows reviews (text, label, id) as CSV, JSON Lines, Parquet and gzipped CSV, then reads each
whole with `read_data`, in a process of its own per checkout (this one, then the peer when given: e.g. the commit
before the one chunked reader), best of --repeat. CPU time, not wall time: a shared machine's load moves the wall
clock far more than the work.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

FORMATS = ("d.csv", "d.jsonl", "d.parquet", "d.csv.gz")
TIMED = """
import sys, time
from bertsent.data.sources import read_data
seconds = []
for _ in range(int(sys.argv[2])):
    started = time.process_time()
    read_data(sys.argv[1])
    seconds.append(time.process_time() - started)
print(min(seconds))
"""


def write_tables(folder: Path, rows: int) -> None:
    import pandas as pd

    random.seed(0)
    words = ["the", "a", "film", "plot", "acting", "great", "awful", "dull,", '"quoted"', "café"]
    records = [
        {"text": " ".join(random.choices(words, k=40)), "label": random.choice(["positive", "negative"]), "id": i}
        for i in range(rows)
    ]
    frame = pd.DataFrame(records)
    frame.to_csv(folder / "d.csv", index=False)
    (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    frame.to_parquet(folder / "d.parquet")
    (folder / "d.csv.gz").write_bytes(gzip.compress((folder / "d.csv").read_bytes()))


def cpu_seconds(source: Path, path: Path, repeat: int) -> float:
    """The best of `repeat` reads of `path` by the checkout whose src is `source`, in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(source))
    result = subprocess.run(
        [sys.executable, "-c", TIMED, str(path), str(repeat)], env=env, capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--peer", type=Path, help="another checkout's src folder, read the same way")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rows:,} rows; CPU seconds, best of {args.repeat}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tables(folder, args.rows)
        print("| file | this checkout | peer | this / peer |\n|---|---:|---:|---:|")
        for name in FORMATS:
            mine = cpu_seconds(here, folder / name, args.repeat)
            peer = cpu_seconds(args.peer, folder / name, args.repeat) if args.peer else None
            shown = f"{peer:.2f} | {mine / peer:.2f}" if peer else "- | -"
            print(f"| {name} | {mine:.2f} | {shown} |")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
