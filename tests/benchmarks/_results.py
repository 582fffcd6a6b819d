"""What every benchmark script shares: alternating rounds, CPU accounting, medians, spreads and JSON.

A benchmark measures pds and an **anchor** (rclone, nginx, pgstac, the bare interpreter) on the same
data in the same invocation, in `--rounds` alternating rounds (odd rounds: anchor first, even: pds
first). Each *row* of its results is one comparison: a case (e.g. "sftp small files"), the anchor's
exact command line or configuration, whether that anchor does the same work as pds (`fair`), and per
round the wall seconds and CPU seconds of both sides. From those it prints and writes the median
ratio pds/anchor of the seconds (or anchor/pds, which is pds's speed over the anchor's, as the row
says), its spread (min–max over rounds), and CPU seconds per unit of work (a file, a GiB, a
request). Where the work is a fixed time rather than a fixed amount (wrk runs for N seconds), a row
holds seconds per unit (1 / throughput) and CPU seconds per unit, with `units` 1, as its `timing`
says.

`--json PATH` writes the results in this schema (version 1), which `docs/generate.py` renders from
`docs/benchmarks/*.json`:

    {"schema": 1, "benchmark": "dissemination", "recorded": "2026-12-07",
     "command": "tests/benchmarks/dissemination.py --files 500", "rounds": 3,
     "load": [1-minute load average at the start, ..., at the end], "cpus": 2,
     "rows": [{"case": "sftp small files", "anchor": "rclone copy --sftp-disable-hashcheck",
               "fair": true, "why": "...", "unit": "file", "units": 500,
               "ratio": "pds/anchor", "cpu": "how CPU was measured",
               "timing": "what the *_seconds lists hold (default: wall seconds of the whole work)",
               "pds_seconds": [...], "anchor_seconds": [...],
               "pds_cpu_seconds": [...], "anchor_cpu_seconds": [...],
               "summary": {"ratio": {"median": m, "min": a, "max": b},
                           "pds_seconds": {...}, "anchor_seconds": {...},
                           "pds_cpu_per_unit": {...}, "anchor_cpu_per_unit": {...}}}],
     "extra": {figures that are no ratio, e.g. "push_to_transferring_seconds": {"p50": ...}}}

Seconds and CPU seconds are floats, CPU per unit in seconds. A list holds one value per round the
side ran; an anchor that is not fair may run in fewer rounds
than pds (it is there to show what its defaults cost), and its ratio is then taken against pds's
median.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = 1


def add_arguments(parser: argparse.ArgumentParser, *, rounds: int = 3) -> None:
    parser.add_argument(
        "--rounds", type=int, default=rounds, help=f"alternating rounds, anchor first in odd ones (default {rounds})"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (and theirs): a subprocess's, as a delta
    around `subprocess.run`. Long-lived servers started by the script count only once reaped."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def own_cpu() -> float:
    """CPU seconds of this process, all its threads."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def tree_cpu(pid: int) -> float:
    """CPU seconds of a running process and its living descendants (psutil), e.g. a server's."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass
class Row:
    case: str
    anchor: str
    fair: bool
    unit: str
    units: float
    cpu: str
    why: str = ""
    ratio: str = "pds/anchor"
    timing: str = "wall seconds of the whole work"
    pds_seconds: list[float] = field(default_factory=list)
    anchor_seconds: list[float] = field(default_factory=list)
    pds_cpu_seconds: list[float] = field(default_factory=list)
    anchor_cpu_seconds: list[float] = field(default_factory=list)

    def ratios(self) -> list[float]:
        """One ratio per round both sides ran; against pds's median for an anchor run less often."""
        pds, anchor = self.pds_seconds, self.anchor_seconds
        if len(anchor) != len(pds):
            pds = [statistics.median(pds)] * len(anchor)
        if self.ratio == "anchor/pds":
            return [a / p for p, a in zip(pds, anchor, strict=True)]
        return [p / a for p, a in zip(pds, anchor, strict=True)]

    def summary(self) -> dict[str, dict[str, float]]:
        out = {"ratio": spread(self.ratios())}
        out["pds_seconds"] = spread(self.pds_seconds)
        out["anchor_seconds"] = spread(self.anchor_seconds)
        if self.pds_cpu_seconds:
            out["pds_cpu_per_unit"] = spread([c / self.units for c in self.pds_cpu_seconds])
        if self.anchor_cpu_seconds:
            out["anchor_cpu_per_unit"] = spread([c / self.units for c in self.anchor_cpu_seconds])
        return out


class Results:
    """The rows of one benchmark run, the load average sampled as it goes, printed and written."""

    def __init__(self, benchmark: str, args: argparse.Namespace) -> None:
        self.benchmark = benchmark
        self.rounds = args.rounds
        self.json_path: Path | None = args.json
        self.rows: dict[str, Row] = {}
        self.load: list[float] = []
        self.extra: dict[str, Any] = {}
        """Figures that are no ratio (e.g. push latency percentiles), written under "extra"."""
        self.sample_load()

    def sample_load(self) -> None:
        self.load.append(round(os.getloadavg()[0], 2))

    def row(self, case: str, **kwargs: Any) -> Row:
        """The row for `case`, made with `kwargs` the first time it is asked for."""
        if case not in self.rows:
            self.rows[case] = Row(case=case, **kwargs)
        return self.rows[case]

    def print(self) -> None:
        self.sample_load()
        print(f"\nmedians over {self.rounds} alternating round(s); load average {_load_range(self.load)}")
        for row in self.rows.values():
            s = row.summary()
            ratio = s["ratio"]
            fairness = "fair" if row.fair else "NOT FAIR"
            print(f"{row.case}: anchor `{row.anchor}` ({fairness}{': ' + row.why if row.why else ''})")
            print(
                f"    {row.ratio} median {ratio['median']:.2f} (spread {ratio['min']:.2f}–{ratio['max']:.2f},"
                f" {len(row.ratios())} round(s)); pds {s['pds_seconds']['median']:.3g} s,"
                f" anchor {s['anchor_seconds']['median']:.3g} s"
                + ("" if row.timing == Row.timing else f" ({row.timing})")
            )
            if "pds_cpu_per_unit" in s and "anchor_cpu_per_unit" in s:
                pds_cpu, anchor_cpu = s["pds_cpu_per_unit"]["median"], s["anchor_cpu_per_unit"]["median"]
                print(f"    CPU per {row.unit}: pds {cpu_text(pds_cpu)}, anchor {cpu_text(anchor_cpu)} ({row.cpu})")

    def save(self) -> None:
        """Write the JSON if `--json` asked for it."""
        if self.json_path:
            self.write(self.json_path)
            print(f"results written to {self.json_path}")

    def as_dict(self) -> dict[str, Any]:
        script = Path(sys.argv[0])
        command = " ".join([f"tests/benchmarks/{script.name}", *(shlex.quote(a) for a in _without_json(sys.argv[1:]))])
        return {
            "schema": SCHEMA,
            "benchmark": self.benchmark,
            "recorded": datetime.now(UTC).date().isoformat(),
            "command": command,
            "rounds": self.rounds,
            "load": self.load,
            "cpus": os.cpu_count(),
            "rows": [{**vars(row), "summary": row.summary()} for row in self.rows.values()],
            "extra": self.extra,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def anchor_first(round_number: int) -> bool:
    """Odd rounds (1, 3, …) run the anchor first, even ones pds."""
    return round_number % 2 == 1


def cpu_text(seconds: float) -> str:
    """CPU seconds in s, ms or µs, whichever reads best."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.3g} ms" if seconds >= 1e-4 else f"{seconds * 1e6:.3g} µs"


def _load_range(load: list[float]) -> str:
    return f"{min(load):.2f}–{max(load):.2f}" if len(load) > 1 else f"{load[0]:.2f}"


def _without_json(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            out.append(arg)
    return out
