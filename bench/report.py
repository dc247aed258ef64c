"""Figures of several runs -> rows (median, spread, ratio, verdict) -> console table, Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import Figure, Goal, Stats


@dataclass
class Row:
    """One figure over every run: the value, the floor measured in the same run, the ratio."""

    key: str
    scenario: str
    metric: str
    unit: str
    floor_name: str
    goal: Goal | None
    detail: bool
    values: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)

    @property
    def value(self) -> Stats:
        return Stats.of(self.values)

    @property
    def floor(self) -> Stats | None:
        return Stats.of(self.floors) if self.floors else None

    @property
    def ratio(self) -> Stats | None:
        return Stats.of(self.ratios) if self.ratios else None

    def judged(self) -> float | None:
        """The median the goal is judged on (the figure's, or its ratio's)."""
        if self.goal is None:
            return None
        if self.goal.on == "ratio":
            return self.ratio.median if self.ratio else None
        return self.value.median

    @property
    def met(self) -> bool | None:
        judged = self.judged()
        return None if judged is None or self.goal is None else self.goal.met(judged)

    def verdict(self) -> str:
        """"met (37% headroom)", "NOT MET: 2.3x the goal (+130%)", or "" without a goal."""
        judged, goal = self.judged(), self.goal
        if judged is None or goal is None:
            return ""
        unit = "x" if goal.on == "ratio" else f" {self.unit}"
        if goal.limit == 0:
            return "met" if self.met else f"NOT MET: {fmt(judged, self.unit)}{unit} instead of 0"
        off = (judged - goal.limit) / goal.limit * 100
        if self.met and off == 0:
            return "met"
        if self.met:
            return f"met ({abs(off):.0f}% headroom)"
        shown = f"{judged:.2f}x" if goal.on == "ratio" else fmt(judged, self.unit) + unit
        return f"NOT MET: {shown} vs {goal.text} ({off:+.0f}%)"


def aggregate(runs: list[list[Figure]]) -> list[Row]:
    rows: dict[str, Row] = {}
    for figures in runs:
        for fig in figures:
            row = rows.setdefault(fig.key, Row(fig.key, fig.scenario, fig.metric, fig.unit,
                                               fig.floor_name, fig.goal, fig.detail))
            row.values.append(fig.value)
            if fig.floor is not None:
                row.floors.append(fig.floor)
            if fig.ratio is not None:
                row.ratios.append(fig.ratio)
    return list(rows.values())


def fmt(value: float, unit: str) -> str:
    if unit in ("bars/s",) or abs(value) >= 10_000:
        return f"{value:,.0f}"
    if unit in ("µs", "ms", "bars") or abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def spread(stats: Stats, unit: str) -> str:
    if stats.n < 2:
        return "(1 run)"
    return f"{fmt(stats.lo, unit)}-{fmt(stats.hi, unit)}"


def _ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "-"
    return f"{r.median:.2f}x" + (f" ({r.lo:.2f}-{r.hi:.2f})" if r.n > 1 else "")


def cells(row: Row) -> list[str]:
    floor = row.floor
    return [
        row.scenario, row.metric, f"{fmt(row.value.median, row.unit)} {row.unit}",
        spread(row.value, row.unit),
        f"{fmt(floor.median, row.unit)} {row.unit} ({row.floor_name})" if floor else "-",
        _ratio(row), row.goal.text if row.goal else "-", row.verdict() or "-",
    ]


HEADER = ["scenario", "figure", "median", "spread (min-max)", "floor / peer (same run)",
          "ratio", "goal", "verdict"]


def console_table(rows: list[Row]) -> str:
    table = [HEADER] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = []
    for n, line in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        line = cells(row)
        if row.met is False:
            line[-1] = f"**{line[-1]}**"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |")
    return "\n".join(lines)
