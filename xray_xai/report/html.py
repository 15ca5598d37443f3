"""One self-contained HTML report (and the same numbers as JSON) for evaluation, audit and clustering results.

The HTML embeds its images as base64 ``data:`` URIs and its CSS inline, so it can be mailed or archived as one
file and opened offline; every piece of text taken from results is escaped. Both files are written atomically.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["AUDIT_COLUMNS", "CONTROL_COLUMNS", "format_stat", "overlay_png", "render_html", "write_report"]

#: audit grid columns: (header, section, key); arrows say which way is better
AUDIT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("deletion AUC ↓", "faithfulness", "deletion_auc"),
    ("random deletion", "faithfulness", "random_deletion_auc"),
    ("insertion AUC ↑", "faithfulness", "insertion_auc"),
    ("random insertion", "faithfulness", "random_insertion_auc"),
    ("pointing ↑", "localisation", "pointing"),
    ("pointing ± tol ↑", "localisation", "pointing_tol"),
    ("IoU Otsu ↑", "localisation", "iou_otsu"),
    ("IoU tuned ↑", "localisation", "iou_tuned"),
    ("mass in mask ↑", "localisation", "mass_in_mask"),
    ("border share ↓", "shortcuts", "border_share"),
)
#: control table columns
CONTROL_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("deletion AUC", "faithfulness", "deletion_auc"),
    ("insertion AUC", "faithfulness", "insertion_auc"),
    *AUDIT_COLUMNS[4:],
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1400px;
color:#1d232a;padding:0 1em;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.86em}
th,td{border:1px solid #d0d7de;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.ci{color:#6a737d;font-size:.85em;display:block}.wide{overflow-x:auto}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.muted{color:#6a737d}.examples{display:flex;flex-wrap:wrap;gap:.8em}
figure{margin:0;border:1px solid #d0d7de;padding:.3em;background:#fafbfc}
figure img{width:200px;height:200px;display:block}.plots{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.plots>img{max-width:560px}
.plots figure img{width:auto;height:auto;max-width:420px}figcaption{font-size:.8em;max-width:200px;word-wrap:break-word}
"""


# -- formatting ----------------------------------------------------------------------------------------------------
def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}f}"
    return str(x)


def format_stat(stat: Any, digits: int = 3) -> str:
    """``"0.123 [0.100, 0.150]"`` for a ``{"mean", "ci"}`` summary, the number alone for a scalar, ``–`` if none."""
    if isinstance(stat, Mapping):
        mean = _num(stat.get("mean"), digits)
        ci = stat.get("ci")
        if mean != "–" and isinstance(ci, Sequence) and len(ci) == 2 and None not in ci:
            return f"{mean} [{_num(ci[0], digits)}, {_num(ci[1], digits)}]"
        return mean
    return _num(stat, digits)


def _cell(stat: Any) -> str:
    """A table cell: mean, then the interval smaller and grey."""
    text = format_stat(stat)
    if " [" in text:
        mean, ci = text.split(" [", 1)
        return f'<td class="num">{html.escape(mean)} <span class="ci">[{html.escape(ci)}</span></td>'
    return f'<td class="num">{html.escape(text)}</td>'


def _e(x: Any) -> str:
    return html.escape(str(x))


# -- images --------------------------------------------------------------------------------------------------------
def overlay_png(
    film: np.ndarray, heatmap: np.ndarray, *, mask: np.ndarray | None = None, alpha: float | None = None
) -> bytes:
    """PNG bytes of the film with the map blended on top by :func:`xray_xai.explain.overlays.blend` (the one rule
    that explain and the web page use too; ``alpha`` None is its default opacity) and the mask outline (if any) in
    green."""
    from xray_xai.explain.overlays import blend, to_png

    out = blend(film, heatmap) if alpha is None else blend(film, heatmap, alpha_max=alpha)
    if mask is not None and np.any(mask):
        from skimage.segmentation import find_boundaries

        edge = find_boundaries(np.asarray(mask, dtype=bool), mode="thick")
        out[edge] = (0.1, 1.0, 0.2)
    return to_png(out)


def _img_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# -- sections ------------------------------------------------------------------------------------------------------
def _generic(value: Any, depth: int = 0) -> str:
    """Any JSON-like value as nested tables (evaluation and clustering dicts whose exact shape we do not fix)."""
    if isinstance(value, Mapping):
        if not value:
            return '<span class="muted">(empty)</span>'
        if "mean" in value and "ci" in value:
            return _e(format_stat(value))
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_generic(v, depth + 1)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) for v in value):
            keys: list[str] = []
            for v in value:
                keys += [k for k in v if k not in keys]
            head = "".join(f"<th>{_e(k)}</th>" for k in keys)
            body = "".join(
                "<tr>" + "".join(f"<td>{_generic(v.get(k), depth + 1)}</td>" for k in keys) + "</tr>"
                for v in value[:200]
            )
            more = f'<p class="muted">{len(value) - 200} more rows in report.json</p>' if len(value) > 200 else ""
            return f"<table><tr>{head}</tr>{body}</table>{more}"
        if len(value) > 20 and all(isinstance(v, (int, float)) for v in value):
            return _e(", ".join(_num(v) for v in value[:20]) + f", … ({len(value)} values)")
        return _e(", ".join(_num(v) for v in value))
    return _e(_num(value))


_EVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("auroc", "AUROC"),
    ("kappa", "kappa"),
    ("accuracy", "accuracy"),
    ("sensitivity", "sensitivity"),
    ("specificity", "specificity"),
    ("f1", "F1"),
)


def _png_file(path: Any, alt: str) -> str:
    """An ``<img>`` embedding the PNG at ``path`` (absolute, as services return them); empty if it is not there."""
    if not path:
        return ""
    try:
        return _img_tag(Path(str(path)).read_bytes(), alt)
    except OSError:
        return ""


def _metric_cell(block: Mapping[str, Any], key: str) -> str:
    ci = (block.get("ci95") or {}).get(key)
    return _cell({"mean": block.get(key), "ci": ci} if ci else block.get(key))


def _evaluation_section(ev: Mapping[str, Any]) -> str:
    """Image- and study-level metrics with 95% intervals, overall and per region; ROC and confusion plots; on MURA
    layouts the per-region kappa beside the published radiologists."""
    parts = [
        "<h2>Model metrics</h2>",
        f"<p>Model <b>{_e(ev.get('model', ''))}</b> on {_e(ev.get('dataset', ''))}, split {_e(ev.get('split', ''))}: "
        f"{_e(ev.get('n_images', ''))} images, {_e(ev.get('n_studies', ''))} studies; threshold "
        f"{_e(_num(ev.get('threshold')))}; 95% bootstrap intervals in brackets ({_e(ev.get('bootstrap', ''))} "
        "resamples). A study's probability is the mean over its views.</p>",
    ]
    head = "".join(f"<th>{_e(label)}</th>" for _, label in _EVAL_COLUMNS)
    for level in ("image", "study"):
        block = ev.get(level)
        if not isinstance(block, Mapping):
            continue
        rows = []
        groups = [("all", block.get("overall") or {}), *sorted((block.get("per_region") or {}).items())]
        for name, metrics in groups:
            if not isinstance(metrics, Mapping):
                continue
            cells = "".join(_metric_cell(metrics, key) for key, _ in _EVAL_COLUMNS)
            n = f"{_num(metrics.get('n'))} ({_num(metrics.get('n_positive'))} abnormal)"
            rows.append(f"<tr><th>{_e(name)}</th><td class='num'>{_e(n)}</td>{cells}</tr>")
        parts.append(
            f"<h3>{_e(level.capitalize())} level</h3><table><tr><th>region</th><th>n</th>{head}</tr>"
            + "".join(rows)
            + "</table>"
        )
    kappa = ev.get("kappa_table")
    if kappa:
        kappa_rows = "".join(
            f"<tr><th>{_e(r.get('region'))}</th>{_cell(r.get('ours'))}{_cell(r.get('radiologist_1'))}"
            f"{_cell(r.get('radiologist_2'))}{_cell(r.get('radiologist_3'))}{_cell(r.get('model'))}</tr>"
            for r in kappa
        )
        parts.append(
            "<h3>Study-level kappa beside the published MURA readers</h3>"
            "<table><tr><th>region</th><th>this model</th><th>radiologist 1</th><th>radiologist 2</th>"
            f"<th>radiologist 3</th><th>DenseNet-169 (paper)</th></tr>{kappa_rows}</table>"
            f"<p class='muted'>{_e(ev.get('kappa_reference', ''))}</p>"
        )
    files = ev.get("files") or {}
    plots = _png_file(files.get("roc"), "ROC curves") + _png_file(files.get("confusion"), "confusion matrices")
    if plots:
        parts.append(f"<div class='plots'>{plots}</div>")
    return "".join(parts)


def _clustering_section(cl: Mapping[str, Any]) -> str:
    """What each cluster holds, in words and numbers: sizes, descriptions, NMI/ARI against every metadata column,
    the 2-D projection and one montage per cluster."""
    parts = [
        "<h2>Clusters</h2>",
        f"<p>{_e(cl.get('method', ''))} with k={_e(cl.get('k', ''))} on {_e(cl.get('on', 'features'))} of "
        f"{_e(cl.get('n_selected', cl.get('n', '')))} images predicted abnormal (threshold "
        f"{_e(_num(cl.get('threshold')))}), model {_e(cl.get('model', ''))}; silhouette "
        f"{_e(_num(cl.get('silhouette')))}.</p>",
    ]
    descriptions = cl.get("descriptions") or {}
    if descriptions:
        parts.append("<ul>" + "".join(f"<li>{_e(d)}</li>" for d in descriptions.values()) + "</ul>")
    agreement = cl.get("agreement") or {}
    if agreement:
        rows = "".join(
            f"<tr><th>{_e(col)}</th>{_cell(a.get('nmi'))}{_cell(a.get('ari'))}<td class='num'>{_e(a.get('n_used'))}"
            f"</td><td class='num'>{_e(a.get('n_values'))}</td></tr>"
            for col, a in sorted(agreement.items(), key=lambda kv: -(kv[1].get("nmi") or 0))
        )
        parts.append(
            "<h3>Do clusters follow the metadata? (1 = exactly, 0 = not at all)</h3>"
            f"<table><tr><th>column</th><th>NMI</th><th>ARI</th><th>images</th><th>values</th></tr>{rows}</table>"
        )
    files = cl.get("files") or {}
    figures = _png_file(files.get("projection"), "2-D projection by cluster and by region")
    for c, path in sorted((files.get("montages") or {}).items()):
        figures += f"<figure>{_png_file(path, f'cluster {c}')}<figcaption>cluster {_e(c)}</figcaption></figure>"
    if figures:
        parts.append(f"<div class='plots'>{figures}</div>")
    return "".join(parts)


def _get(pair: Mapping[str, Any], section: str, key: str) -> Any:
    block = pair.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def _audit_section(audit: Mapping[str, Any], base: Path) -> str:
    parts = ["<h2>Audit</h2>"]
    cfg = audit.get("config", {})
    data = audit.get("data", {})
    if data:
        parts.append(
            f"<p>Data: {_e(data.get('dataset', ''))}, split {_e(data.get('split', ''))}, "
            f"{_e(data.get('n_selected', ''))} images ({_e(data.get('selection', ''))}).</p>"
        )
    if cfg:
        parts.append(
            f"<p>Deletion/insertion: {_e(cfg.get('steps'))} steps, cells of {_e(cfg.get('grid'))} px, baseline "
            f"{_e(cfg.get('baseline'))}. Sanity: {_e(cfg.get('sanity_rule', ''))}. Intervals: bootstrap "
            f"{_e(int(100 * float(cfg.get('ci_level', 0.95))))}% ({_e(cfg.get('n_boot'))} resamples, seed "
            f"{_e(cfg.get('seed'))}). Tuned IoU threshold: {_e(cfg.get('threshold_tuning', ''))}.</p>"
        )
    models = audit.get("models", {})
    if models:
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td>{_e(m.get('fingerprint', ''))}</td>"
            f'<td class="num">{_e(m.get("n_images"))}</td><td class="num">{_e(m.get("n_localisation"))}</td>'
            f'<td class="num">{_e(_num(m.get("accuracy")))}</td></tr>'
            for name, m in models.items()
        )
        parts.append(
            "<h3>Models audited</h3><table><tr><th>model</th><th>fingerprint</th><th>images</th>"
            f"<th>with ground truth</th><th>accuracy on these images</th></tr>{rows}</table>"
        )
    # the grid
    head = "".join(f"<th>{_e(h)}</th>" for h, _, _ in AUDIT_COLUMNS)
    rows_html = []
    for pair in audit.get("pairs", []):
        name = f"<td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td>"
        if pair.get("status") != "ok":
            rows_html.append(
                f'<tr>{name}<td colspan="{len(AUDIT_COLUMNS) + 1}" class="muted">skipped: '
                f"{_e(pair.get('reason', ''))}</td></tr>"
            )
            continue
        san = pair.get("sanity", {})
        status = san.get("status", "")
        css = "pass" if status == "pass" else "fail" if status == "fail" else "muted"
        san_text = f"{status} (ρ={_num(san.get('spearman_full'))} vs {_num(san.get('threshold'))})"
        if status not in ("pass", "fail"):
            san_text = status
        cells = "".join(_cell(_get(pair, s, k)) for _, s, k in AUDIT_COLUMNS)
        rows_html.append(f'<tr>{name}{cells}<td class="{css}">{_e(san_text)}</td></tr>')
    parts.append(
        "<h3>Grid</h3><p class='muted'>Mean [95% CI]. Localisation on abnormal images with ground truth; random "
        "columns are the same curves in random order.</p>"
        f"<div class='wide'><table><tr><th>model</th><th>method</th>{head}<th>sanity</th></tr>{''.join(rows_html)}"
        "</table></div>"
    )
    # controls: the model-free ones once per model (shared by its methods), the randomised model per pair
    chead = "".join(f"<th>{_e(h)}</th>" for h, _, _ in CONTROL_COLUMNS)
    crow = []
    seen: set[tuple[str, str]] = set()
    for pair in audit.get("pairs", []):
        for cname, block in (pair.get("controls") or {}).items():
            shared = cname != "randomized-model"
            key = (str(pair.get("model")), cname)
            if shared and key in seen:
                continue
            seen.add(key)
            method = "(all methods)" if shared else pair.get("method")
            cells = "".join(_cell(_get(block, s, k)) for _, s, k in CONTROL_COLUMNS)
            crow.append(f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(method)}</td><td>{_e(cname)}</td>{cells}</tr>")
    if crow:
        parts.append(
            "<h3>Controls</h3><p class='muted'>Maps that know nothing of the model (brightness, edges, noise) and "
            "the method on the fully randomised model, scored the same way: a method should beat them.</p>"
            f"<div class='wide'><table><tr><th>model</th><th>method</th><th>control</th>{chead}</tr>{''.join(crow)}"
            "</table></div>"
        )
    # sanity stages and shortcuts
    srows = []
    for pair in audit.get("pairs", []):
        for st in (pair.get("sanity") or {}).get("stages", []):
            srows.append(
                f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td><td>{_e(st.get('layer'))}</td>"
                f"{_cell(st.get('spearman'))}{_cell(st.get('ssim'))}</tr>"
            )
    if srows:
        parts.append(
            "<h3>Sanity: cascading randomisation</h3><p class='muted'>Layers randomised from the output down; "
            "each row adds the layers up to the one named.</p><table><tr><th>model</th><th>method</th>"
            f"<th>randomised down to</th><th>Spearman</th><th>SSIM</th></tr>{''.join(srows)}</table>"
        )
    shrows = []
    for pair in audit.get("pairs", []):
        sc = pair.get("shortcuts") or {}
        if not sc:
            continue
        extra = "; ".join(
            f"{k.replace('_share', '')}: {format_stat(sc[k])} "
            f"(area {_num(sc.get(k.replace('share', 'area_fraction')))})"
            for k in ("marker_share", "collimation_share")
            if k in sc
        )
        shrows.append(
            f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td>{_cell(sc.get('border_share'))}"
            f'<td class="num">{_e(_num(sc.get("border_area_fraction")))}</td><td>{_e(extra or "–")}</td></tr>'
        )
    if shrows:
        parts.append(
            "<h3>Shortcuts</h3><p class='muted'>Share of relevance on the border band, burned-in markers and "
            "collimation, beside the share of the image they cover (what a uniform map would put there).</p>"
            "<table><tr><th>model</th><th>method</th><th>border share</th><th>border area</th>"
            f"<th>markers / collimation</th></tr>{''.join(shrows)}</table>"
        )
    erows = []
    for pair in audit.get("pairs", []):
        ce = (pair.get("faithfulness") or {}).get("curve_error")
        if isinstance(ce, Mapping):
            erows.append(
                f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td>"
                f'<td class="num">{_e(ce.get("n_images"))}</td>'
                + "".join(
                    f'<td class="num">{_e(_num((ce.get(kind) or {}).get(m)))}</td>'
                    for kind in ("deletion", "insertion")
                    for m in ("mean_abs", "max_abs", "auc_abs")
                )
                + "</tr>"
            )
    if erows:
        parts.append(
            "<h3>Curve error against fine curves</h3><p class='muted'>The audit's curves against 112 steps on the "
            "pixel grid, same images: mean and max absolute difference of the curves and of their AUCs.</p>"
            "<table><tr><th>model</th><th>method</th><th>images</th><th>deletion mean</th><th>deletion max</th>"
            "<th>deletion AUC</th><th>insertion mean</th><th>insertion max</th><th>insertion AUC</th></tr>"
            f"{''.join(erows)}</table>"
        )
    # breakdowns
    brows = []
    for pair in audit.get("pairs", []):
        for by, groups in (pair.get("breakdowns") or {}).items():
            for value, block in groups.items():
                brows.append(
                    f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td><td>{_e(by)}</td>"
                    f'<td>{_e(value)}</td><td class="num">{_e(block.get("n_images"))}</td>'
                    + "".join(
                        _cell(block.get(k))
                        for k in ("deletion_auc", "insertion_auc", "pointing", "iou_otsu", "mass_in_mask")
                    )
                    + "</tr>"
                )
    if brows:
        parts.append(
            "<h3>Breakdowns</h3><table><tr><th>model</th><th>method</th><th>by</th><th>group</th><th>images</th>"
            "<th>deletion AUC</th><th>insertion AUC</th><th>pointing</th><th>IoU Otsu</th><th>mass in mask</th></tr>"
            f"{''.join(brows)}</table>"
        )
    # examples
    ex_parts = []
    for pair in audit.get("pairs", []):
        ex = pair.get("examples") or {}
        figs = []
        for which in ("best", "worst"):
            for item in ex.get(which, []):
                rel = item.get("png")
                img = ""
                if rel:
                    path = (base / rel).resolve()
                    if path.is_file() and base.resolve() in path.parents:
                        img = _img_tag(path.read_bytes(), f"{which} {item.get('image_id')}")
                figs.append(
                    f"<figure>{img}<figcaption><b>{_e(which)}</b> {_e(item.get('image_id'))}<br>"
                    f"mass in mask {_e(_num(item.get('mass_in_mask')))}, p={_e(_num(item.get('probability')))}"
                    "</figcaption></figure>"
                )
        if figs:
            ex_parts.append(
                f"<h4>{_e(pair.get('model'))} × {_e(pair.get('method'))}</h4>"
                f'<div class="examples">{"".join(figs)}</div>'
            )
    if ex_parts:
        parts.append(
            "<h3>Best- and worst-localised examples</h3><p class='muted'>Ground truth outlined in green.</p>"
            + "".join(ex_parts)
        )
    if audit.get("problems"):
        parts.append("<h3>Skipped files</h3><ul>" + "".join(f"<li>{_e(p)}</li>" for p in audit["problems"]) + "</ul>")
    return "".join(parts)


def render_html(
    *,
    audit: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    title: str = "xray-xai report",
    base: str | Path = ".",
) -> str:
    """The report as one HTML string; ``base`` is where relative PNG paths in the results are resolved."""
    from xray_xai import __version__

    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(title)}</h1><p class='muted'>xray-xai {_e(__version__)}, {_e(created)}</p>"]
    if evaluation:
        body.append(_evaluation_section(evaluation))
    if audit:
        body.append(_audit_section(audit, Path(base)))
    if clustering:
        body.append(_clustering_section(clustering))
    if not (evaluation or audit or clustering):
        body.append("<p class='muted'>Nothing to report.</p>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _jsonable(obj: Any) -> Any:
    """Numpy values to Python, non-finite floats to None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if hasattr(obj, "__fspath__"):
        return str(obj)
    return obj


def write_report(
    out_dir: str | Path,
    *,
    audit: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    clustering: Mapping[str, Any] | None = None,
    title: str = "xray-xai report",
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/report.json`` (the same numbers); return the
    HTML path. Relative PNG paths in the results (audit examples) are read from ``out_dir`` and embedded."""
    from xray_xai._util.fsutil import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = _jsonable({"title": title, "evaluation": evaluation, "audit": audit, "clustering": clustering})
    atomic_write_text(out / "report.json", json.dumps(payload, indent=2, allow_nan=False) + "\n")
    page = render_html(audit=audit, evaluation=evaluation, clustering=clustering, title=title, base=out)
    return atomic_write_text(out / "report.html", page)
