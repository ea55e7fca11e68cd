"""The report: the machine, then one table per scenario, as plain text or Markdown.

Each cell shows the absolute figure and, in parentheses, its ratio to the ``websockets``
row of the same table (figure divided by the websockets figure), so that a reader on
another machine compares ratios rather than absolute numbers. Whether higher or lower is
better is written in the column heading.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata

BASELINE = "websockets"
PACKAGES = ("aiows", "websockets", "aiohttp", "picows", "tornado", "websocket-server", "uvloop")


@dataclass(frozen=True)
class Metric:
    """One column of a scenario's table."""

    name: str
    unit: str
    higher_is_better: bool
    digits: int = 0

    @property
    def heading(self) -> str:
        return f"{self.name} ({self.unit}, {'higher' if self.higher_is_better else 'lower'} better)"


@dataclass
class Row:
    """One server's figures in one scenario, or the reason it has none."""

    server: str
    values: dict[str, float] = field(default_factory=dict)
    loadgen_cpu_percent: float | None = None
    server_cpu_percent: float | None = None
    others_cpu_percent: float | None = None
    note: str = ""


@dataclass
class Table:
    """One scenario's results."""

    key: str
    title: str
    metrics: list[Metric]
    rows: list[Row] = field(default_factory=list)


def machine() -> dict[str, str]:
    """Describe the machine and the software versions the figures came from."""
    info = {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": platform.platform(terse=True),
    }
    for package in PACKAGES:
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    info["aiows checkout"] = checkout_revision()
    return info


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, or the platform's guess."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def checkout_revision() -> str:
    """Return the checkout's commit (read-only ``git`` call), marked when files changed."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "no commit yet"
    return commit + (" + local changes" if git("status", "--porcelain") else "")


def cell(table: Table, row: Row, metric: Metric) -> str:
    """Format one figure with its ratio to the baseline row."""
    value = row.values.get(metric.name)
    if value is None:
        return "-"
    text = f"{value:,.{metric.digits}f}"
    base = next((r for r in table.rows if r.server == BASELINE), None)
    base_value = base.values.get(metric.name) if base else None
    if base_value:
        text += f" ({value / base_value:.2f}x)"
    return text


def grid(table: Table) -> tuple[list[str], list[list[str]]]:
    """Return the headings and the cells of a table, shared by both output formats."""
    headings = ["server", *(m.heading for m in table.metrics)]
    headings += ["server CPU %", "loadgen CPU %", "others CPU %", "note"]
    lines = []
    for row in table.rows:
        cells = [cell(table, row, metric) for metric in table.metrics]
        usage = (row.server_cpu_percent, row.loadgen_cpu_percent, row.others_cpu_percent)
        cpu = [percent(value) for value in usage]
        lines.append([row.server, *cells, *cpu, row.note])
    return headings, lines


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def text_table(table: Table) -> str:
    """Render a table as aligned plain text."""
    headings, lines = grid(table)
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headings)]
    out = [f"{table.key} — {table.title}"]
    out.append("  ".join(h.ljust(w) for h, w in zip(headings, widths, strict=True)).rstrip())
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(out)


def markdown_table(table: Table) -> str:
    """Render a table as GitHub Markdown."""
    headings, lines = grid(table)
    out = [f"### {table.key} — {table.title}", ""]
    out.append("| " + " | ".join(headings) + " |")
    out.append("|" + "|".join("---" for _ in headings) + "|")
    out.extend("| " + " | ".join(line) + " |" for line in lines)
    return "\n".join(out)


def machine_text(info: dict[str, str]) -> str:
    """Render the machine description as ``key: value`` lines."""
    return "\n".join(f"{key}: {value}" for key, value in info.items())


def markdown(info: dict[str, str], tables: list[Table], command: str) -> str:
    """Render the whole report as a Markdown document."""
    out = ["# aiows benchmark results", "", f"Command: `{command}`", ""]
    out.extend(f"- **{key}**: {value}" for key, value in info.items())
    out += ["", "Each cell: absolute figure (ratio to `websockets`). See `benchmarks/README.md`."]
    for table in tables:
        out += ["", markdown_table(table)]
    return "\n".join(out) + "\n"


def print_table(table: Table) -> None:
    """Print a table to stdout, with a blank line after it."""
    sys.stdout.write(text_table(table) + "\n\n")
    sys.stdout.flush()
