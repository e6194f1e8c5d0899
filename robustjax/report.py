"""Tables, JSON and a markdown report: the end of the data flow (nothing here computes results)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np


def machine() -> str:
    """'<cores>-core <CPU model>, <jax platform>, jax <version>': what every benchmark states beside its times."""
    import jax
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()}-core {cpu}, {jax.devices()[0].platform}, jax {jax.__version__}"


def load1() -> float:
    """The 1-minute load average (/proc/loadavg), nan where unreadable."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def to_jsonable(obj: Any) -> Any:
    """numpy/jax scalars and arrays, tuples, NamedTuples and dataclasses as plain JSON values;
    inf and nan become the strings "inf", "-inf", "nan"."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "_asdict"):
        return to_jsonable(obj._asdict())
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "__array__") and not isinstance(obj, (str, bytes)):
        arr = np.asarray(obj)
        return to_jsonable(arr.item()) if arr.ndim == 0 else to_jsonable(arr.tolist())
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def from_jsonable(obj: Any) -> Any:
    """The inverse of `to_jsonable` on numbers: the strings "inf", "-inf", "nan" become floats again
    (anywhere in nested lists and dicts); everything else is returned as it is."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str):
        return _NON_FINITE.get(obj, obj)
    return obj


def read_json(path: str | Path) -> Any:
    """A file written by `write_json`, with inf and nan restored as floats (`from_jsonable`)."""
    return from_jsonable(json.loads(Path(path).read_text()))


def write_json(path: str | Path, obj: Any) -> Path:
    """obj as JSON (`to_jsonable`) at path, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(obj), indent=1))
    return path


def fmt(v: Any, digits: int = 4) -> str:
    """One table cell: "-" for None, yes/no for booleans, thousands separators for integers, `digits`
    significant digits for floats (scientific below 10^-digits and from 10^5 on), inf and nan spelled out."""
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        if f != 0 and (abs(f) >= 1e5 or abs(f) < 10 ** -digits):
            return f"{f:.{max(digits - 1, 1)}e}"
        return f"{f:.{digits}g}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, *, digits: int = 4,
                   headers: dict[str, str] | None = None) -> str:
    """A markdown table of `rows` (dicts); columns default to the keys of the first row."""
    if not rows:
        return "(no rows)\n"
    columns = list(columns or rows[0].keys())
    headers = headers or {}
    out = ["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
           "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        out.append("| " + " | ".join(fmt(r.get(c), digits).replace("|", "\\|") for c in columns) + " |")
    return "\n".join(out) + "\n"


@dataclasses.dataclass
class Section:
    """One part of a report: a title, free text (markdown), tables (markdown strings) and figures
    (paths relative to the report folder)."""
    title: str
    text: str = ""
    tables: list[str] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        for name in ("tables", "figures"):
            if isinstance(getattr(self, name), str):
                raise ValueError(f"Section.{name} must be a list of strings, got the string {getattr(self, name)!r}")


def render(title: str, sections: Iterable[Section], *, preamble: str = "") -> str:
    """The markdown report: `# title`, the preamble, then per section `## title`, text, tables, figures."""
    parts = [f"# {title}", ""]
    if preamble:
        parts += [preamble, ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        if s.text:
            parts += [s.text.strip(), ""]
        for t in s.tables:
            parts += [t.rstrip(), ""]
        for f in s.figures:
            parts += [f"![{Path(f).stem}]({f})", ""]
    return "\n".join(parts)
