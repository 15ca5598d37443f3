"""The leaderboard's tables: Markdown (docs) and a self-contained sortable HTML page (a click on a header sorts)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

__all__ = ["COLUMNS", "html_table", "markdown_table", "table_rows"]

#: (header, section, key, digits, better): the scored columns, with the direction that is better
COLUMNS: tuple[tuple[str, str, str, int, str], ...] = (
    ("pointing", "localisation", "pointing", 3, "higher"),
    ("pointing 3.5%", "localisation", "pointing_tol", 3, "higher"),
    ("mass in box", "localisation", "mass_in_mask", 3, "higher"),
    ("IoU (Otsu)", "localisation", "iou_otsu", 3, "higher"),
    ("deletion AUC", "faithfulness", "deletion_auc", 3, "lower"),
    ("insertion AUC", "faithfulness", "insertion_auc", 3, "higher"),
    ("sanity Spearman", "sanity", "spearman", 2, "lower"),
    ("s/film", "cost", "seconds_per_film", 2, "lower"),
    ("forward/film", "cost", "forward_per_film", 0, "lower"),
    ("backward/film", "cost", "backward_per_film", 0, "lower"),
)


def _cell(stat: Any, digits: int) -> tuple[str, float | None]:
    """``"0.123 [0.100, 0.150]"`` and the mean (None when undefined)."""
    if not isinstance(stat, Mapping) or stat.get("mean") is None:
        return "n/a", None
    lo, hi = (stat.get("ci") or [None, None])[:2]
    mean = float(stat["mean"])
    text = f"{mean:.{digits}f}"
    if lo is not None and hi is not None:
        text += f" [{float(lo):.{digits}f}, {float(hi):.{digits}f}]"
    return text, mean


def table_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One dict per method and control: ``name``, ``kind``, ``films`` and per column ``(text, mean)``."""
    rows = []
    for row in result.get("rows", []):
        cells = {h: _cell(row.get(sec, {}).get(key), d) for h, sec, key, d, _ in COLUMNS}
        films = f"{row['n_films']} / {row['n_faithfulness']} / {row['n_sanity']}"
        rows.append({"name": row["method"], "kind": "method", "films": films, "cells": cells,
                     "sanity": (row.get("sanity") or {}).get("status")})  # fmt: skip
    for name, block in result.get("controls", {}).items():
        cells = {h: _cell(block.get(sec, {}).get(key), d) for h, sec, key, d, _ in COLUMNS}
        rows.append({"name": f"control: {name}", "kind": "control", "films": "", "cells": cells, "sanity": None})
    return rows


def _sort_key(row: Mapping[str, Any]) -> tuple[int, float]:
    mean = row["cells"]["pointing 3.5%"][1]
    return (row["kind"] != "method", -(mean if mean is not None else -1.0))


def markdown_table(result: Mapping[str, Any]) -> str:
    """The leaderboard as a Markdown table (methods by pointing within the tolerance, then the controls)."""
    model = result.get("model", {})
    chance = result.get("chance", {})
    lines = [
        f"Model `{model.get('name')}` ({model.get('fingerprint')}), {result.get('n_films')} fractured films at "
        f"{model.get('input_size')} px. Mean [95% bootstrap interval] over films; films = localisation / "
        "faithfulness / sanity films per method.",
        "",
    ]
    if chance:
        lines += [f"Chance: pointing {chance['pointing']:.3f}, pointing 3.5% {chance['pointing_tol']:.3f}.", ""]
    headers = ["method", "films", *(c[0] for c in COLUMNS)]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in sorted(table_rows(result), key=_sort_key):
        name = row["name"] if row["kind"] == "control" else f"`{row['name']}`"
        cells = [row["cells"][c[0]][0] for c in COLUMNS]
        lines.append("| " + " | ".join([name, row["films"], *cells]) + " |")
    skipped = result.get("skipped", [])
    if skipped:
        lines += ["", "Skipped:", ""]
        lines += [f"- `{s['method']}`: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"


_SCRIPT = """
document.querySelectorAll('th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.dir !== 'asc';
    th.dataset.dir = asc ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      if (isNaN(nx) || isNaN(ny)) { return asc ? String(x).localeCompare(y) : String(y).localeCompare(x); }
      return asc ? nx - ny : ny - nx;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def html_table(result: Mapping[str, Any]) -> str:
    """A self-contained HTML page with the leaderboard; clicking a column header sorts by it (plain JS)."""
    esc = html.escape
    head = "".join(
        f'<th title="{esc(better)} is better">{esc(h)}</th>' for h, _s, _k, _d, better in COLUMNS
    )  # fmt: skip
    body = []
    for row in sorted(table_rows(result), key=_sort_key):
        cells = [f'<td data-v="{esc(row["name"])}">{esc(row["name"])}</td>',
                 f'<td data-v="{esc(row["films"])}">{esc(row["films"])}</td>']  # fmt: skip
        for h, *_ in COLUMNS:
            text, mean = row["cells"][h]
            cells.append(f'<td data-v="{"" if mean is None else mean}">{esc(text)}</td>')
        body.append(f'<tr class="{row["kind"]}">' + "".join(cells) + "</tr>")
    skipped = "".join(
        f"<li><code>{esc(s['method'])}</code>: {esc(s['reason'])}</li>" for s in result.get("skipped", [])
    )
    model = result.get("model", {})
    title = f"xray-xai leaderboard: {model.get('name')} ({model.get('fingerprint')})"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}th{cursor:pointer;background:#eee}"
        "tr.control{color:#666;font-style:italic}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{result.get('n_films')} fractured films at {model.get('input_size')} px; mean "
        "[95% bootstrap interval] over films; films = localisation / faithfulness / sanity films. Click a header "
        "to sort.</p><table><thead><tr><th>method</th><th>films</th>"
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"{'<h2>Skipped</h2><ul>' + skipped + '</ul>' if skipped else ''}"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
