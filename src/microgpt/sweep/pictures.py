"""The sweep's pictures as SVG (no plotting library), and one self-contained HTML report.

- `loss_curves`: every trial's training loss (the mean of the last 5% of its steps), coloured
  by its config's rank, with its validation losses as dots.
- `val_loss_against`: for one swept key, the validation loss at each of its values: a dot
  per trial, and the mean over seeds with an error bar of one standard deviation; one line
  per combination of the other swept keys (up to 6; beyond, all of them together).

The report inlines the pictures, the ranked table and the best command; it loads nothing
(no script, no font, no stylesheet from anywhere), so it opens offline. Standard library only.
"""

from __future__ import annotations

import html
import math

from .space import show_value
from .summary import Row, plus_minus

W, H = 760, 400  # picture size (px)
LEFT, RIGHT, TOP, BOTTOM = 64, 240, 40, 48  # margins; the legend sits on the right
LABEL = 38  # characters of a legend label
# Colours: best to worst rank (a blue-to-orange ramp that stays readable on white).
RAMP = ["#1f4e9c", "#2f74c0", "#3a9ad0", "#46b3a8", "#7cc36b", "#c3c94a", "#e7a93b", "#e4772f",
        "#d4482b", "#a8322d"]  # fmt: skip
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
MAX_SERIES = 6


def colour(rank: int, count: int) -> str:
    return RAMP[0 if count <= 1 else round((rank - 1) * (len(RAMP) - 1) / (count - 1))]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = min((m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)),
               key=lambda s: abs(s - raw))  # fmt: skip
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


class Axis:
    """Maps data values to pixels: linear, logarithmic, or evenly spaced categories."""

    def __init__(self, values: list, lo_px: float, hi_px: float, log: bool = False,
                 categories: list | None = None, pad: float = 0.0):  # fmt: skip
        self.categories, self.log = categories, log
        self.lo_px, self.hi_px = lo_px, hi_px
        if categories is None:
            t = [math.log10(v) for v in values] if log else list(values)
            lo, hi = min(t), max(t)
            span = hi - lo or abs(hi) or 1.0
            self.lo, self.hi = lo - pad * span, hi + pad * span

    def __call__(self, v) -> float:
        if self.categories is not None:
            n = len(self.categories)
            return self.lo_px + (self.hi_px - self.lo_px) * (self.categories.index(v) + 0.5) / n
        t = math.log10(v) if self.log else v
        return self.lo_px + (self.hi_px - self.lo_px) * (t - self.lo) / (self.hi - self.lo)


def text(x: float, y: float, s: str, anchor: str = "middle", size: int = 12, **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"'
            f'{extra}>{html.escape(s)}</text>')  # fmt: skip


def frame(name: str, title: str, xlabel: str, ylabel: str, x: Axis, y: Axis, xticks: list,
          yticks: list, body: list[str], legend: list[tuple[str, str]]) -> str:  # fmt: skip
    """A whole picture: title, axes with ticks and labels, the body, a legend. `name` keeps
    its ids apart from another picture's on the same page."""
    x0, x1, y0, y1 = LEFT, W - RIGHT, H - BOTTOM, TOP
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           text(W / 2, 22, title, size=14, font_weight="bold"),
           f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" '
           'stroke="#999"/>']  # fmt: skip
    for v in xticks:
        px = x(v)
        out.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 5}" stroke="#999"/>')
        out.append(text(px, y0 + 18, tick_label(v), size=11))
    for v in yticks:
        py = y(v)
        out.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(text(x0 - 6, py + 4, tick_label(v), anchor="end", size=11))
    out.append(text((x0 + x1) / 2, H - 10, xlabel))
    out.append(text(16, (y0 + y1) / 2, ylabel, transform=f"rotate(-90 16 {(y0 + y1) / 2:.1f})"))
    out.append(f'<clipPath id="{name}-plot"><rect x="{x0}" y="{y1}" width="{x1 - x0}" '
               f'height="{y0 - y1}"/></clipPath><g clip-path="url(#{name}-plot)">')  # fmt: skip
    out += body
    out.append("</g>")
    for i, (label, fill) in enumerate(legend):
        ly = y1 + 8 + 16 * i
        out.append(f'<rect x="{x1 + 12}" y="{ly}" width="10" height="10" fill="{fill}"/>')
        out.append(text(x1 + 28, ly + 9, label, anchor="start", size=11))
    out.append("</svg>")
    return "\n".join(out)


def tick_label(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return show_value(v)


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def label(config: dict) -> str:
    return " ".join(f"{k}={show_value(v)}" for k, v in config.items()) or "every trial"


def loss_curves(rows: list[Row]) -> str:
    """Every trial's loss curve, coloured by its config's rank (best: dark blue)."""
    trials = [(row, t) for row in rows for t in row.trials if t["loss_curve"]]
    points = [p[1] for _, t in trials for p in t["loss_curve"] + t["val_curve"] if finite(p[1])]
    if not points:
        points = [0.0, 1.0]
    points.sort()
    lo, hi = points[0], points[min(len(points) - 1, int(0.98 * len(points)))]  # spikes clip
    steps = max(p[0] for _, t in trials for p in t["loss_curve"]) if trials else 1
    x = Axis([0, steps], LEFT, W - RIGHT)
    y = Axis([lo, hi], H - BOTTOM, TOP, pad=0.05)
    body = []
    for row, t in reversed(trials):  # the best drawn last, on top
        c = colour(row.rank, len(rows))
        line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in t["loss_curve"] if finite(v))
        body.append(f'<polyline class="trial" points="{line}" fill="none" stroke="{c}" '
                    f'stroke-width="1" stroke-opacity="0.55"><title>{html.escape(t["trial"])}'
                    '</title></polyline>')  # fmt: skip
        for s, v in t["val_curve"]:
            if finite(v):
                body.append(f'<circle cx="{x(s):.1f}" cy="{y(v):.1f}" r="2.5" fill="{c}" '
                            'stroke="white" stroke-width="0.5"/>')  # fmt: skip
    legend = [(f"{r.rank}. {label(r.config)}"[:LABEL], colour(r.rank, len(rows)))
              for r in rows[:12]]  # fmt: skip
    if len(rows) > 12:
        legend.append((f"... {len(rows) - 12} more", RAMP[-1]))
    title = f"Training loss of {len(trials)} trials (dots: validation loss)"
    return frame("loss_curves", title, "step", "loss (mean of the last 5% of steps)", x, y,
                 nice_ticks(0, steps),
                 nice_ticks(y.lo, y.hi), body, legend)  # fmt: skip


def val_loss_against(rows: list[Row], key: str, keys: list[str], connect: bool) -> str:
    """Validation loss against the values of `key`: a dot per trial, the mean over seeds with
    a one-standard-deviation bar, one line per combination of the other keys."""
    others = [k for k in keys if k != key]
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(row.config.get(k) for k in others), []).append(row)
    if len(groups) > MAX_SERIES:  # too many lines to tell apart: every config together
        groups, others = {(): rows}, []
    values = sorted({row.config[key] for row in rows}, key=lambda v: (str(type(v)), v))
    numeric = all(isinstance(v, (int, float)) for v in values)
    log = numeric and min(values) > 0 and max(values) / min(values) >= 8  # e.g. 0.01 .. 0.1
    x = (Axis(values, LEFT, W - RIGHT, log=log, pad=0.06) if numeric and len(values) > 1
         else Axis([], LEFT, W - RIGHT, categories=values))  # fmt: skip
    losses = [t["val_loss"] for row in rows for t in row.trials if finite(t.get("val_loss"))]
    y = Axis(losses or [0.0, 1.0], H - BOTTOM, TOP, pad=0.08)
    body, legend = [], []
    for i, (combo, members) in enumerate(groups.items()):
        c = SERIES[i % len(SERIES)]
        means = []
        for v in values:
            trials = [t for row in members if row.config[key] == v for t in row.trials
                      if finite(t.get("val_loss"))]
            if not trials:
                continue
            losses = [t["val_loss"] for t in trials]
            mean = math.fsum(losses) / len(losses)
            sd = (math.fsum((u - mean) ** 2 for u in losses) / (len(losses) - 1)) ** 0.5 \
                if len(losses) > 1 else 0.0  # fmt: skip
            px = x(v)
            for t in trials:
                body.append(f'<circle class="seed" cx="{px:.1f}" cy="{y(t["val_loss"]):.1f}" '
                            f'r="2" fill="{c}" fill-opacity="0.35"><title>'
                            f'{html.escape(t["trial"])}</title></circle>')  # fmt: skip
            body.append(f'<line class="errorbar" x1="{px:.1f}" y1="{y(mean - sd):.1f}" '
                        f'x2="{px:.1f}" y2="{y(mean + sd):.1f}" stroke="{c}" stroke-width="1.5"/>')
            for yy in (mean - sd, mean + sd):
                body.append(f'<line x1="{px - 4:.1f}" y1="{y(yy):.1f}" x2="{px + 4:.1f}" '
                            f'y2="{y(yy):.1f}" stroke="{c}" stroke-width="1.5"/>')  # fmt: skip
            body.append(f'<circle class="mean" cx="{px:.1f}" cy="{y(mean):.1f}" r="4" '
                        f'fill="{c}"/>')  # fmt: skip
            means.append(f"{px:.1f},{y(mean):.1f}")
        if connect and len(means) > 1:
            body.append(f'<polyline points="{" ".join(means)}" fill="none" stroke="{c}" '
                        'stroke-width="1.5"/>')  # fmt: skip
        if others:
            legend.append((label(dict(zip(others, combo)))[:LABEL], c))
    seeds = max(len(r.trials) for r in rows)
    xticks = values if x.categories is not None or len(values) <= 12 else \
        nice_ticks(x.lo, x.hi) if not log else [10.0 ** e for e in range(math.ceil(x.lo),
                                                                         math.floor(x.hi) + 1)]
    title = f"Validation loss against {key} (mean ± std over {seeds} seeds)"
    return frame(f"val_loss_{key}", title, key + (" (log scale)" if log else ""),
                 "validation loss", x, y, xticks,
                 nice_ticks(y.lo, y.hi), body, legend)  # fmt: skip


def report(title: str, command: str, rows: list[Row], keys: list[str], best: str,
           pictures: dict[str, str]) -> str:  # fmt: skip
    """One HTML page: the pictures inline, the ranked table, the best command."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in
                   ["rank", *keys, "seeds", "val loss", "val bits/char", "train loss",
                    "s/trial", "trials"])  # fmt: skip
    lines = []
    for r in rows:
        links = " ".join(f'<a href="{html.escape(t["dir"])}/">{t["seed"]}</a>' for t in r.trials)
        cells = [str(r.rank), *(show_value(r.config.get(k, "")) for k in keys),
                 str(len(r.trials)) + (f" ({r.diverged} diverged)" if r.diverged else ""),
                 plus_minus(r, "val_loss"), plus_minus(r, "val_bpc"),
                 plus_minus(r, "train_loss"), f"{r.mean('seconds') or 0:.2f}"]  # fmt: skip
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) +
                     f"<td>{links}</td></tr>")  # fmt: skip
    figures = "\n".join(f'<figure id="{html.escape(name)}">{svg}</figure>'
                        for name, svg in pictures.items())  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
code {{ background: #f4f4f4; padding: 0.2em 0.4em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; }}
figure {{ margin: 1em 0; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Every trial: <code>{html.escape(command)}</code> and its swept values and seed</p>
<p>Best config, as a single run: <code id="best">{html.escape(best)}</code></p>
{figures}
<table id="summary"><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(lines)}
</tbody></table>
</body></html>
"""
