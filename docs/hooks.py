"""MkDocs hooks: the pages made from the code at build time, so that they never go stale.

- reference/cli.md: its `<!-- cli-reference -->` marker becomes every command's usage and flags, read from
  `bertsent.cli.parser.build_parser` (the parser the `bertsent` command runs).
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

# The reference describes this checkout's parser, whatever bertsent the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CLI_MARKER = "<!-- cli-reference -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """Markdown for every subcommand: what it does, its usage line and each flag with its help."""
    if parser is None:
        from bertsent.cli.parser import build_parser

        parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help for choice in commands._choices_actions}
    parts = [f"Commands: {', '.join(f'[`{name}`](#bertsent-{name})' for name in commands.choices)}.", ""]
    for name, sub in commands.choices.items():
        summary = _text(summaries.get(name) or "")
        parts += [f"## `bertsent {name}` {{#bertsent-{name}}}", "", summary[:1].upper() + summary[1:] + ".", ""]
        if sub.description:
            parts += [_text(sub.description), ""]
        # argparse indents continued usage lines under "usage: "; without that prefix, so is the indent
        first, *rest = sub.format_usage().strip().splitlines()
        usage = [first.removeprefix("usage: ")] + [line.removeprefix(" " * len("usage: ")) for line in rest]
        parts += ["```text", *usage, "```", ""]
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            invocation = formatter._format_action_invocation(action)
            said = _text(formatter._expand_help(action)) if action.help else ""
            parts.append(f"- `{invocation}`" + (f": {said}" if said else ""))
        parts.append("")
    return "\n".join(parts)


def _text(value: str) -> str:
    """Help text as Markdown text: no HTML tags made of `<placeholders>`, no emphasis made of `*`."""
    return html.escape(" ".join(value.split()), quote=False).replace("*", r"\*")
