"""Start-up and install: `import bertsent` and the parser import nothing heavy; each command names the extra
it misses. The heavy imports are checked in a fresh interpreter, where nothing is imported yet."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

import bertsent
from bertsent.cli import main
from bertsent.cli.parser import build_parser

# The model libraries (seconds to import), the extras' packages (`bertsent --help` must work without them),
# asyncio (the server's; a tenth of a second, for `bertsent serve --help` too) and numpy (a twentieth of one).
HEAVY = (
    "asyncio",
    "numpy",
    "torch",
    "transformers",
    "accelerate",
    "sklearn",
    "pandas",
    "pyarrow",
    "matplotlib",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "optuna",
    "cleanlab",
    "captum",
    "ray",
)
COMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)


def _fresh(code: str) -> dict:
    """Run `code` in a new interpreter (this checkout's source first on its path); it prints one JSON line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(bertsent.__path__[0]), *sys.path])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_help_and_version_import_no_heavy_library():
    """Each step's new heavy modules, in one interpreter: import, --version, --help, then each command's --help."""
    argvs = [["--version"], ["--help"], []] + [[command, "--help"] for command in COMMANDS]
    found = _fresh(
        f"""
        import contextlib, io, json, sys
        heavy = {HEAVY!r}
        def loaded():
            return sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))
        import bertsent
        seen = {{"import bertsent": loaded()}}
        from bertsent.cli import main
        for argv in {argvs!r}:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    main(argv)
                except SystemExit:
                    pass
            seen[" ".join(["bertsent", *argv])] = loaded()
        print(json.dumps(seen))
        """
    )
    assert len(found) == len(argvs) + 1
    assert {step: modules for step, modules in found.items() if modules} == {}


def test_version_is_read_when_asked_and_printed_on_stdout(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"bertsent {bertsent.__version__}\n"


def test_public_names_load_on_first_use():
    found = _fresh(
        """
        import json, sys
        import bertsent
        from bertsent import TrainConfig, __version__
        print(json.dumps({"not in dir": sorted(set(bertsent.__all__) - set(dir(bertsent))), "version": __version__,
                          "torch": "torch" in sys.modules, "TrainConfig": TrainConfig.__module__}))
        """
    )
    assert found == {
        "not in dir": [],
        "version": bertsent.__version__,
        "torch": False,
        "TrainConfig": "bertsent.training.config",
    }
    from bertsent import SentimentClassifier, evaluate, load, predict_file, train  # each imported now

    assert (load.__module__, train.__module__, evaluate.__module__) == (
        "bertsent.prediction.predictor",
        "bertsent.workflows.run",
        "bertsent.workflows.run",
    )
    assert (
        SentimentClassifier.__name__ == "SentimentClassifier" and predict_file.__module__ == "bertsent.prediction.files"
    )
    assert all(getattr(bertsent, name) is not None for name in bertsent.__all__)
    importlib.import_module("bertsent.workflows.audit")  # the submodules: the package's names stay the functions
    importlib.import_module("bertsent.training.fit")
    for package, name in ((bertsent, "audit"), (bertsent.training, "fit")):
        function = getattr(package, name)
        assert callable(function) and function.__name__ == name


def test_a_function_keeps_its_name_when_its_submodule_is_imported_first(tmp_path):
    """The lazy package on a package of its own: `pkg.f` is the function whichever is imported first."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(
        'from bertsent.lazy import make_lazy\nmake_lazy(__name__, {"f": "pkg.f"})\n'
    )
    (tmp_path / "pkg" / "f.py").write_text("def f():\n    return 1\n")
    found = _fresh(
        f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        from pkg.f import f as direct
        import pkg
        print(json.dumps([pkg.f is direct, "f" in dir(pkg), pkg.f()]))
        """
    )
    assert found == [True, True, 1]


@pytest.mark.parametrize(
    "argv, missing, extra",
    [
        (["serve", "no-such-model"], ["fastapi"], "serve"),
        (["export", "no-such-model"], ["onnx"], "onnx"),
        (["predict", "no-such-model", "--backend", "onnx", "good"], ["onnxruntime"], "onnx"),
        (["evaluate", "no-such-model", "--data", "x.csv", "--backend", "onnx-int8"], ["onnxruntime"], "onnx"),
        (["tune", "--data", "no-such.csv"], ["optuna"], "tune"),
        (["audit", "--data", "no-such.csv"], ["cleanlab"], "audit"),
        (["explain", "no-such-model", "good"], ["captum", "captum.attr"], "explain"),
    ],
    ids=["serve", "export", "predict-onnx", "evaluate-onnx-int8", "tune", "audit", "explain"],
)
def test_a_missing_extra_is_one_line_naming_it(argv, missing, extra, monkeypatch, capsys):
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # import fails, as if not installed
    assert main(argv) == 2
    err = capsys.readouterr().err
    first = argv[0] if argv[0] not in ("predict", "evaluate") else f"--backend {argv[argv.index('--backend') + 1]}"
    assert err == (
        f"bertsent {argv[0]}: error: {first} needs the {extra} extra ({missing[-1]} is missing): "
        f"pip install 'bertsent[{extra}]'\n"
    )
