"""Label maps: turn the labels a data source has into the classes wanted, e.g. 1-5 stars into sentiment.

A map is written `"1,2=negative;3=neutral;4,5=positive"`: entries separated by `;`, each the values it
covers (comma-separated) `=` (or `:`) the class they become, or `drop` to leave those rows out. A bare entry
(`"neutral=drop;negative,positive"`) keeps its values as they are. From Python, a dict works too:
`{1: "negative", "3": "drop", ("4", "5"): "positive"}` (None also drops).

Every label in the data must be covered: a value the map does not mention is an error, not a silent
drop, so a typo cannot quietly lose a class; nor can a misspelt class (`postive` beside `positive`) quietly
become a class of its own. Numbers match by value (`4`, `4.0` and `"4"` alike), as
the readers already turn 4.0 read from a table into "4".
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import overload

from bertsent.data.dataset import TextDataset, ordered_label_names
from bertsent.errors import DataError

DROP = "drop"
SHOWN = 5  # unknown values named in the error


@dataclass(frozen=True)
class LabelMap:
    """Source value -> class (None: drop the row); `text` is the map as the user gave it, for messages."""

    targets: dict[str, str | None]
    text: str

    def apply(self, dataset: TextDataset) -> TextDataset:
        """`dataset` with its labels mapped and the dropped rows left out; meta["label_map"] records the
        counts before, the rows dropped and the map."""
        if dataset.labels is None:
            return dataset
        mapped = [self.targets.get(label_key(label), _UNKNOWN) for label in dataset.labels]
        unknown = Counter(label for label, target in zip(dataset.labels, mapped) if target is _UNKNOWN)
        if unknown:
            names = ordered_label_names(unknown)
            shown = ", ".join(repr(n) for n in names[:SHOWN])
            shown += f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            raise DataError(
                f"{dataset.name}: --label-map does not cover the label(s) {shown} "
                f"({sum(unknown.values())} row(s)). Add them to the map, or '=drop' them "
                f'(e.g. "{names[0]}={DROP}").'
            )
        keep = [i for i, target in enumerate(mapped) if target is not None]
        if not keep:
            raise DataError(f"{dataset.name}: --label-map {self.text!r} drops every row. Map some labels to classes.")
        result = dataset.subset(keep, dataset.name)
        result.labels = [str(mapped[i]) for i in keep]  # a class name each: no row left is unknown or dropped
        result.dropped = dataset.dropped  # rows the reader skipped; the map's drops are counted apart
        result.meta["label_map"] = {
            "map": self.text,
            "before": dataset.label_counts(),
            "dropped_rows": len(dataset) - len(keep),
        }
        return result


_UNKNOWN = object()


def label_key(value) -> str:
    """The form a label is matched by: numbers by value ("4.0", 4.0 and 4 are "4"), text as it is, trimmed."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        value = str(value).strip()
        try:
            number = float(value)
        except ValueError:
            return value
    if not math.isfinite(number):
        return str(value).strip()
    return str(int(number)) if number.is_integer() else repr(number)


def parse_label_map(spec) -> LabelMap | None:
    """A LabelMap from the command line's text or a dict (None: no map). Malformed maps are DataErrors."""
    if spec is None or isinstance(spec, LabelMap):
        return spec
    if isinstance(spec, dict):
        pairs = [(source, target) for key, target in spec.items() for source in _sources(key)]
        text = "; ".join(f"{key}={target}" for key, target in spec.items())
    elif isinstance(spec, str):
        pairs = [pair for part in spec.split(";") if part.strip() for pair in _entry(part, spec)]
        text = spec
    else:
        raise DataError(f'--label-map {spec!r}: give text like "1,2=negative;3=neutral;4,5=positive" or a dict.')
    if not pairs:
        raise DataError('--label-map is empty: give entries like "1,2=negative;3=neutral;4,5=positive".')
    targets: dict[str, str | None] = {}
    for source, target in pairs:
        key, target = label_key(source), _target(target, text)
        if not key:
            raise DataError(f"--label-map {text!r}: an empty value before '='. Write values like 1,2=negative.")
        if key in targets and targets[key] != target:
            raise DataError(
                f"--label-map {text!r}: {source!r} is mapped twice ({targets[key] or DROP} and {target or DROP}). "
                f"Map each value once."
            )
        targets[key] = target
    check_distinct_classes(targets.values(), text)
    return LabelMap(targets, text)


def check_distinct_classes(names, text: str) -> None:
    """Refuse two classes of a map one typing slip apart (`postive` beside `positive`, `Positive` beside
    `positive`): silently they would become two classes."""
    classes = sorted({n for n in names if n is not None})
    for i, a in enumerate(classes):
        for b in classes[i + 1 :]:
            if _one_slip_apart(a, b):
                raise DataError(
                    f"--label-map {text!r}: classes {a!r} and {b!r} differ by one letter or in case only: a typo "
                    f"would make them two classes. Write one name for both, or names that differ more."
                )


def _one_slip_apart(a: str, b: str) -> bool:
    """One letter left out, added, replaced or two swapped, or case alone. Digits are not slips (label_0 and
    label_1, 4star and 5star are different classes), nor are names under 4 characters (pos, neg)."""
    a, b = sorted((a.casefold(), b.casefold()), key=len)
    if a == b:
        return True
    if len(a) < 4 or len(b) - len(a) > 1:
        return False
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), len(a))  # the first difference
    if len(a) < len(b):  # one character added
        return a[i:] == b[i + 1 :] and not b[i].isdigit()
    if a[i].isdigit() or b[i].isdigit():
        return False
    replaced = a[i + 1 :] == b[i + 1 :]
    swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
    return replaced or swapped


def _entry(part: str, spec: str) -> list[tuple[str, str]]:
    """One `a,b=class` entry as (value, class) pairs; a bare `a,b` keeps its values as they are."""
    if "=" not in part and ":" in part:  # "1,2:negative", as dicts and YAML write it
        if part.count(":") > 1:
            raise DataError(
                f"--label-map {spec!r}: {part.strip()!r} has more than one ':'. Write entries like 1,2=negative "
                f"(or 1,2:negative), separated by ';'."
            )
        part = part.replace(":", "=")
    if part.count("=") > 1:
        raise DataError(f"--label-map {spec!r}: {part.strip()!r} has more than one '='. Separate entries with ';'.")
    sources, equals, target = part.partition("=")
    values = [v.strip() for v in sources.split(",")]
    if any(not v for v in values):
        raise DataError(f"--label-map {spec!r}: an empty value in {part.strip()!r}. Write values like 1,2=negative.")
    if equals and not target.strip():
        raise DataError(f"--label-map {spec!r}: {part.strip()!r} names no class after '='. Write e.g. 1,2=negative.")
    return [(v, target.strip() if equals else label_key(v)) for v in values]


def _sources(key) -> list:
    return list(key) if isinstance(key, (tuple, list, set, frozenset)) else [key]


def _target(target, text: str) -> str | None:
    if target is None or (isinstance(target, str) and target.strip().lower() == DROP):
        return None
    if not isinstance(target, (str, int)) or isinstance(target, bool) or not str(target).strip():
        raise DataError(f"--label-map {text!r}: {target!r} is not a class name. Give text, or '{DROP}'.")
    return label_key(target) if isinstance(target, int) else str(target).strip()


@overload
def relabel(dataset: TextDataset, spec) -> TextDataset: ...
@overload
def relabel(dataset: None, spec) -> None: ...
def relabel(dataset: TextDataset | None, spec) -> TextDataset | None:
    """`dataset` with the label map `spec` (text, dict or LabelMap) applied; unchanged when spec is None."""
    label_map = parse_label_map(spec)
    if dataset is None or label_map is None:
        return dataset
    return label_map.apply(dataset)


def describe_map(dataset: TextDataset) -> str | None:
    """One line on what a map did to `dataset`, for the run's output; None when no map was applied."""
    info = dataset.meta.get("label_map")
    if not info:
        return None
    before = ", ".join(f"{k} {v}" for k, v in info["before"].items())
    after = ", ".join(f"{k} {v}" for k, v in dataset.label_counts().items())
    dropped = f"; {info['dropped_rows']} row(s) dropped" if info["dropped_rows"] else ""
    return f"{dataset.name}: label map {info['map']!r}: {before} -> {after}{dropped}"
