"""A self-contained HTML drift report: one file, inline SVG and CSS, no scripts, no external assets.

Per feature: the reference and current distributions over the profile's bins
side by side (numeric bins are the reference quantile bins, so the reference
is flat by construction and drift shows as the current bars leaving it), plus
every score and the decision. Opens anywhere, attaches to a ticket, prints.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable

from .drift import DriftReport, FeatureDrift
from .profile import FeatureProfile, ReferenceProfile

__all__ = ["render_report", "histogram_svg"]

REF_COLOR = "#4C78A8"
CUR_COLOR = "#F58518"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px} .meta{color:#555;margin-bottom:16px}
table{border-collapse:collapse;margin:12px 0 24px;font-size:13px}
th,td{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right} th:first-child,td:first-child{text-align:left}
tr.drift td{background:#fde8e8} .badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px}
.badge.ok{background:#e3f4e6;color:#1b5e20} .badge.bad{background:#d32f2f;color:#fff}
.grid{display:flex;flex-wrap:wrap;gap:16px} .card{border:1px solid #ddd;border-radius:6px;padding:8px 10px;width:540px}
.card.drift{border:2px solid #d32f2f} .card h3{font-size:15px;margin:2px 0 6px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px -2px 10px}
"""


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.4g}" if abs(x) < 1e5 else f"{x:.3g}"
    return str(x)


def _labels(fp: FeatureProfile) -> list[str]:
    if fp.kind == "categorical":
        return list(fp.categories)
    edges = [_fmt(e) for e in fp.edges]
    lo = _fmt(fp.min) if fp.min is not None else "-inf"
    hi = _fmt(fp.max) if fp.max is not None else "+inf"
    bounds = [lo, *edges, hi]
    return [f"[{bounds[i]}, {bounds[i + 1]})" for i in range(len(bounds) - 1)]


def histogram_svg(fp: FeatureProfile, current: Iterable[int], *, width: int = 520, height: int = 210) -> str:
    """Grouped bars (reference, current) of bin proportions as an inline SVG element."""
    ref = [float(c) for c in fp.counts]
    cur = [float(c) for c in current] or [0.0] * len(ref)
    rt, ct = sum(ref) or 1.0, sum(cur) or 1.0
    rp, cp = [r / rt for r in ref], [c / ct for c in cur]
    n = max(len(rp), 1)
    top = max(rp + cp + [1e-9]) * 1.1
    left, bottom, plot_w, plot_h = 44, 42, width - 54, height - 58
    slot = plot_w / n
    bar = max(1.0, slot * 0.4)
    labels = _labels(fp)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="histogram of {html.escape(fp.name)}">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']
    for frac in (0.0, 0.5, 1.0):
        y = 10 + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" fill="#666">'
                     f'{top * frac:.0%}</text>')
    for i in range(n):
        x0 = left + i * slot + (slot - 2 * bar) / 2
        for j, (p, color) in enumerate(((rp[i] if i < len(rp) else 0.0, REF_COLOR),
                                        (cp[i] if i < len(cp) else 0.0, CUR_COLOR))):
            h = plot_h * p / top
            tip = html.escape(f"{'reference' if j == 0 else 'current'} {labels[i] if i < len(labels) else ''}: {p:.1%}")
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{10 + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{color}"><title>{tip}</title></rect>')
    # numeric ticks name a bin's lower edge (the full interval is in each bar's tooltip)
    ticks = [lab.split(",")[0].lstrip("[") if fp.kind == "numeric" else lab for lab in labels]
    step = max(1, math.ceil(n / (5 if fp.kind == "numeric" else 8)))
    for i in range(0, n, step):
        x = left + (i + (0 if fp.kind == "numeric" else 0.5)) * slot
        text = ticks[i] if i < len(ticks) else ""
        text = text if len(text) <= 14 else text[:13] + "…"
        parts.append(f'<text x="{x:.1f}" y="{height - 26}" font-size="9" text-anchor="middle" fill="#444">'
                     f'{html.escape(text)}</text>')
    parts.append(f'<line x1="{left}" y1="{10 + plot_h}" x2="{left + plot_w}" y2="{10 + plot_h}" stroke="#888"/>')
    axis = "reference quantile bins" if fp.kind == "numeric" else "categories"
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" font-size="10" text-anchor="middle" '
                 f'fill="#666">{axis}</text></svg>')
    return "".join(parts)


def _scores_row(f: FeatureDrift) -> str:
    s = f.scores
    badge = ('<span class="badge bad">drift</span>' if f.drifted else
             f'<span class="badge ok">{html.escape(f.status)}</span>')
    cells = [html.escape(f.name), f.kind, f.method, _fmt(f.score), _fmt(f.threshold), badge,
             _fmt(f.p_value), f"{html.escape(f.effect_name)} {_fmt(f.effect)}",
             _fmt(s.get("psi")), _fmt(s.get("ks")), _fmt(s.get("js")), str(f.rows), str(f.missing)]
    return f'<tr class="{"drift" if f.drifted else ""}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_report(profile: ReferenceProfile, report: DriftReport, *, title: str | None = None) -> str:
    """The whole HTML document for one version's report."""
    title = title or f"Drift report: models:/{report.model}/{report.version}"
    drifted = report.drifted
    summary = (f'<span class="badge bad">{len(drifted)} drifted</span> {html.escape(", ".join(drifted))}'
               if drifted else '<span class="badge ok">no drift</span>')
    head = ("<tr><th>feature</th><th>kind</th><th>method</th><th>score</th><th>threshold</th><th>status</th>"
            "<th>p-value</th><th>effect</th><th>PSI</th><th>KS D</th><th>JS</th><th>rows</th><th>missing</th></tr>")
    rows = "".join(_scores_row(f) for f in sorted(report.features, key=lambda f: (not f.drifted, f.name)))
    cards = []
    for f in sorted(report.features, key=lambda f: (not f.drifted, f.name)):
        fp = profile.features.get(f.name)
        if fp is None:
            continue
        cards.append(f'<div class="card{" drift" if f.drifted else ""}"><h3>{html.escape(f.name)} '
                     f'<small>({f.kind}, p = {_fmt(f.p_value)}, {f.effect_name} = {_fmt(f.effect)})</small></h3>'
                     f'{histogram_svg(fp, f.counts)}</div>')
    legend = (f'<div class="legend"><span style="background:{REF_COLOR}"></span>reference '
              f'({profile.rows} rows) <span style="background:{CUR_COLOR}"></span>current ({report.rows} rows)</div>')
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<div class="meta">source: {html.escape(report.source)} · scored {html.escape(report.created_at)} · '
            f"profile captured {html.escape(profile.created_at)} {html.escape(profile.source)}</div>"
            f"<p>{summary}</p><table>{head}{rows}</table>{legend}<div class=\"grid\">{''.join(cards)}</div>"
            f"</body></html>")
