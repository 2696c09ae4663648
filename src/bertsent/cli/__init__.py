"""`bertsent` on the command line: a thin layer over the Python API that holds all text formatting.

Exit codes: 0 done, 2 a user error (one line on stderr says what to do), 1 an internal error.
Under torchrun or accelerate launch every process runs the command; only the main one prints.

parser      the flags of every command (one add_*_command per command; training flags made from TrainConfig)
commands    one cmd_* per command: calls the Python API, imports heavy libraries only when it runs
tables      all text the commands print: tables, summaries, warnings
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import warnings

from bertsent.cli.commands import COMMANDS
from bertsent.cli.parser import build_parser
from bertsent.environment import process_rank
from bertsent.errors import BertsentError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def disable_telemetry() -> None:
    """No usage reports from the libraries the command runs (unless the user turned them on by name)."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    hub = sys.modules.get("huggingface_hub.constants")  # read its settings on import: if already in, set them
    if hub is not None and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1":
        hub.__dict__["HF_HUB_DISABLE_TELEMETRY"] = True  # a module's attribute: what `hub.X = True` sets


disable_telemetry()


def main(argv: list[str] | None = None) -> int:
    quiet_library_warnings()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse ends a positional list at the first option: `predict DIR --neutral-band 0.2 "text"` leaves the
    # texts over. Texts after options are still texts; anything else unknown is an error, as before.
    if extra and hasattr(args, "texts") and not any(a.startswith("-") and a != "-" for a in extra):
        args.texts = [*args.texts, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    rank = process_rank()
    try:
        with (
            open(os.devnull, "w") if rank else contextlib.nullcontext(sys.stdout) as stdout,
            contextlib.redirect_stdout(stdout),
        ):
            return COMMANDS[args.command](args)
    except BertsentError as exc:
        if rank == 0:  # every process meets the same input; one line is enough
            print(f"bertsent {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        if rank == 0:
            said = interrupted(exc, sys.argv[1:] if argv is None else argv)
            print(f"bertsent {args.command}: {said}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug of ours: say so briefly, full traceback on request
        if os.environ.get("BERTSENT_DEBUG"):
            raise
        where = f" (process {rank})" if rank else ""
        print(
            f"bertsent {args.command}: internal error{where}: {type(exc).__name__}: {exc} "
            f"(set BERTSENT_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def interrupted(exc: KeyboardInterrupt, argv: list[str]) -> str:
    """What an interruption leaves: for training, the command that continues it (this one with --resume and
    the folder it wrote into), or that no checkpoint can."""
    from bertsent.training.run_folder import TrainingInterrupted

    audit = sys.modules.get("bertsent.workflows.audit")  # loaded when an audit was what ran
    if audit is not None and isinstance(exc, audit.AuditInterrupted):
        return audit_interrupted(exc, argv)
    if not isinstance(exc, TrainingInterrupted):
        return "interrupted"
    where = f"interrupted at step {exc.step}" if exc.step is not None else "interrupted"
    if exc.checkpoint_step is None:
        return (
            f"{where}; no checkpoint was saved, so it cannot be continued. Train again (with --overwrite if "
            f"needed), adding --checkpoint-every N to be able to continue an interrupted run."
        )
    if any(arg == "--seeds" or arg.startswith("--seeds=") for arg in argv):  # see experiments.train_seeds
        return (
            f"{where} of {exc.out}; --seeds runs cannot be continued (each seed's data split is the first seed's). "
            f"Run the command again with --overwrite."
        )
    args = _without_option(argv, "--out") + ["--out", str(exc.out)]
    if "--resume" not in args and "--resume-with-checkpoint-settings" not in args:
        args.append("--resume")
    since = f" (the last checkpoint is step {exc.checkpoint_step})" if exc.checkpoint_step != exc.step else ""
    return f"{where}{since}; continue with: {shlex.join(['bertsent', *args])}"


def audit_interrupted(exc, argv: list[str]) -> str:
    """An audit's interruption: the folds it keeps, and the command (this one, with its --out) that goes on."""
    where = f"interrupted in fold {exc.fold} of {exc.folds}"
    if exc.out is None:
        return where
    kept = f"{exc.kept()} in {exc.out}" if exc.done else "no fold was finished"
    args = _without_option(argv, "--out") + ["--out", str(exc.out)]
    return f"{where}; {kept}. Continue with: {shlex.join(['bertsent', *args])}"


def _without_option(argv: list[str], flag: str) -> list[str]:
    """`argv` without `flag VALUE` and `flag=VALUE`."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


def quiet_library_warnings() -> None:
    """Notices about the libraries' own future changes: nothing a user of this command can act on."""
    for library in ("transformers", "accelerate", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=library)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=library)


if __name__ == "__main__":
    sys.exit(main())
