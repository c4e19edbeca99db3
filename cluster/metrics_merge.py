"""``/metrics`` of the front: the workers' Prometheus texts as one valid exposition.

Concatenating the workers' texts would repeat each metric family (``# HELP``/``# TYPE``
and its samples), which Prometheus refuses. Instead each family appears once, with the
samples of every worker, each labelled ``worker="wN"``; nothing is summed (a scrape
sums with ``sum without (worker)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def label_sample(line: str, worker: str) -> str:
    """``name{a="b"} 1`` → ``name{worker="w0",a="b"} 1`` (``name 1`` → ``name{worker="w0"} 1``)."""
    label = f'worker="{worker}"'
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        rest = line[brace + 1 :]
        return f"{line[:brace]}{{{label}{'' if rest.startswith('}') else ','}{rest}"
    if space == -1:
        return line
    return f"{line[:space]}{{{label}}}{line[space:]}"


def _families(text: str) -> list[tuple[str, list[str], list[str]]]:
    """(family name, its HELP/TYPE lines, its sample lines), in order."""
    families: list[tuple[str, list[str], list[str]]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(maxsplit=3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                if not families or families[-1][0] != parts[2]:
                    families.append((parts[2], [], []))
                families[-1][1].append(line)
            continue
        if not families:
            families.append(("", [], []))
        families[-1][2].append(line)
    return families


def merge_metrics(
    workers: Sequence[tuple[str, str]],
    own: Sequence[tuple[str, str, str, Mapping[str, int | float]]] = (),
) -> str:
    """One exposition from ``(worker id, its /metrics text)`` pairs, plus the front's
    own per-worker families ``(name, type, help, {worker: value})``."""
    order: list[str] = []
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for worker, text in workers:
        for name, head, lines in _families(text):
            if name not in headers:
                order.append(name)
                headers[name] = head
                samples[name] = []
            samples[name].extend(label_sample(line, worker) for line in lines)
    out: list[str] = []
    for name in order:
        out.extend(headers[name])
        out.extend(samples[name])
    for name, kind, text, values in own:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f'{name}{{worker="{w}"}} {v}' for w, v in values.items())
    return "\n".join(out) + "\n"
