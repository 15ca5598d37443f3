"""The sections of the HTML report (evaluation, audit, clustering) and the number formatting they share.

Each section turns one service's JSON-ready result into HTML; every piece of text taken from results is escaped.
The page around them is assembled by :mod:`xray_xai.report.html`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AUDIT_COLUMNS",
    "CONTROL_COLUMNS",
    "audit_section",
    "clustering_section",
    "evaluation_section",
    "format_stat",
]

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


def _img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a base64 ``data:`` URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


# -- evaluation and clustering ----------------------------------------------------------------------------------
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


def evaluation_section(ev: Mapping[str, Any]) -> str:
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
    parts.append(_calibration_table(ev))
    files = ev.get("files") or {}
    plots = _png_file(files.get("roc"), "ROC curves") + _png_file(files.get("confusion"), "confusion matrices")
    plots += _png_file(files.get("reliability"), "reliability diagram") + _png_file(files.get("pr"), "PR curves")
    if plots:
        parts.append(f"<div class='plots'>{plots}</div>")
    return "".join(parts)


_CAL_COLUMNS = (("brier", "Brier"), ("ece", "ECE"), ("mce", "MCE"), ("slope", "slope"), ("intercept", "intercept"))


def _calibration_table(ev: Mapping[str, Any]) -> str:
    """Calibration of the probabilities (image level, before and after the sidecar's calibration) and the metrics at
    each operating point; empty for an evaluation without them."""
    cal = (ev.get("calibration") or {}).get("image")
    if not isinstance(cal, Mapping):
        return ""
    head = "".join(f"<th>{_e(label)}</th>" for _, label in _CAL_COLUMNS)
    blocks = [(f"{ev.get('probability', '')} probability", cal.get("overall") or {})]
    before = (ev.get("calibration_uncalibrated") or {}).get("image")
    if isinstance(before, Mapping):
        blocks.append(("uncalibrated", before.get("overall") or {}))
    rows = "".join(
        f"<tr><th>{_e(name)}</th>{_cell(m.get('mean_probability'))}{_cell(m.get('prevalence'))}"
        + "".join(_metric_cell(m, key) for key, _ in _CAL_COLUMNS)
        + "</tr>"
        for name, m in blocks
    )
    points = "".join(
        f"<tr><th>{_e(p.get('name'))}{' (in use)' if p.get('in_use') else ''}</th>{_cell(p.get('threshold'))}"
        f"{_cell(p['image'].get('sensitivity'))}{_cell(p['image'].get('specificity'))}"
        f"{_cell(p['image'].get('share_positive'))}</tr>"
        for p in ev.get("operating_points") or []
    )
    return (
        "<h3>Calibration (image level)</h3><table><tr><th>probability</th><th>mean p</th><th>prevalence</th>"
        f"{head}</tr>{rows}</table><h3>Operating points (thresholds fixed before this split)</h3><table><tr>"
        "<th>point</th><th>threshold</th><th>sensitivity</th><th>specificity</th><th>called abnormal</th></tr>"
        f"{points}</table>"
    )


def clustering_section(cl: Mapping[str, Any]) -> str:
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


# -- audit -----------------------------------------------------------------------------------------------------------
def _get(pair: Mapping[str, Any], section: str, key: str) -> Any:
    block = pair.get(section)
    return block.get(key) if isinstance(block, Mapping) else None


def audit_section(audit: Mapping[str, Any], base: Path) -> str:
    """The audit: what was audited and how, the grid of (model, method) scores, then one table each for the
    controls, the sanity stages, the shortcuts, the curve check and the breakdowns, the example overlays (PNG paths
    relative to ``base``) and the skipped files."""
    pairs = audit.get("pairs", [])
    parts = [
        "<h2>Audit</h2>",
        _audit_intro(audit.get("data", {}), audit.get("config", {})),
        _models_table(audit.get("models", {})),
        _grid_table(pairs),
        _controls_table(pairs),
        _sanity_table(pairs),
        _shortcuts_table(pairs),
        _curve_error_table(pairs),
        _breakdowns_table(pairs),
        _examples_block(pairs, base),
    ]
    if audit.get("problems"):
        parts.append("<h3>Skipped files</h3><ul>" + "".join(f"<li>{_e(p)}</li>" for p in audit["problems"]) + "</ul>")
    return "".join(parts)


def _audit_intro(data: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    parts = []
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
    return "".join(parts)


def _models_table(models: Mapping[str, Any]) -> str:
    if not models:
        return ""
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(m.get('fingerprint', ''))}</td>"
        f'<td class="num">{_e(m.get("n_images"))}</td><td class="num">{_e(m.get("n_localisation"))}</td>'
        f'<td class="num">{_e(_num(m.get("accuracy")))}</td></tr>'
        for name, m in models.items()
    )
    return (
        "<h3>Models audited</h3><table><tr><th>model</th><th>fingerprint</th><th>images</th>"
        f"<th>with ground truth</th><th>accuracy on these images</th></tr>{rows}</table>"
    )


def _grid_row(pair: Mapping[str, Any]) -> str:
    """One (model, method) row of the grid: its scores and the sanity verdict, or why it was skipped."""
    name = f"<td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td>"
    if pair.get("status") != "ok":
        return (
            f'<tr>{name}<td colspan="{len(AUDIT_COLUMNS) + 1}" class="muted">skipped: '
            f"{_e(pair.get('reason', ''))}</td></tr>"
        )
    san = pair.get("sanity", {})
    status = san.get("status", "")
    css = "pass" if status == "pass" else "fail" if status == "fail" else "muted"
    san_text = f"{status} (ρ={_num(san.get('spearman_full'))} vs {_num(san.get('threshold'))})"
    if status not in ("pass", "fail"):
        san_text = status
    cells = "".join(_cell(_get(pair, s, k)) for _, s, k in AUDIT_COLUMNS)
    return f'<tr>{name}{cells}<td class="{css}">{_e(san_text)}</td></tr>'


def _grid_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h, _, _ in AUDIT_COLUMNS)
    rows_html = [_grid_row(pair) for pair in pairs]
    return (
        "<h3>Grid</h3><p class='muted'>Mean [95% CI]. Localisation on abnormal images with ground truth; random "
        "columns are the same curves in random order.</p>"
        f"<div class='wide'><table><tr><th>model</th><th>method</th>{head}<th>sanity</th></tr>{''.join(rows_html)}"
        "</table></div>"
    )


def _controls_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    """The model-free controls once per model (shared by its methods), the randomised model per pair."""
    chead = "".join(f"<th>{_e(h)}</th>" for h, _, _ in CONTROL_COLUMNS)
    crow = []
    seen: set[tuple[str, str]] = set()
    for pair in pairs:
        for cname, block in (pair.get("controls") or {}).items():
            shared = cname != "randomized-model"
            key = (str(pair.get("model")), cname)
            if shared and key in seen:
                continue
            seen.add(key)
            method = "(all methods)" if shared else pair.get("method")
            cells = "".join(_cell(_get(block, s, k)) for _, s, k in CONTROL_COLUMNS)
            crow.append(f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(method)}</td><td>{_e(cname)}</td>{cells}</tr>")
    if not crow:
        return ""
    return (
        "<h3>Controls</h3><p class='muted'>Maps that know nothing of the model (brightness, edges, noise) and "
        "the method on the fully randomised model, scored the same way: a method should beat them.</p>"
        f"<div class='wide'><table><tr><th>model</th><th>method</th><th>control</th>{chead}</tr>{''.join(crow)}"
        "</table></div>"
    )


def _optional_table(title: str, intro: str | None, headers: Sequence[str], rows: Sequence[str]) -> str:
    """A titled table of already rendered ``<tr>`` rows (with a muted intro line), or nothing when there is no row."""
    if not rows:
        return ""
    lead = f"<p class='muted'>{intro}</p>" if intro else ""
    head = "".join(f"<th>{h}</th>" for h in headers)
    return f"<h3>{title}</h3>{lead}<table><tr>{head}</tr>{''.join(rows)}</table>"


def _sanity_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    srows = []
    for pair in pairs:
        for st in (pair.get("sanity") or {}).get("stages", []):
            srows.append(
                f"<tr><td>{_e(pair.get('model'))}</td><td>{_e(pair.get('method'))}</td><td>{_e(st.get('layer'))}</td>"
                f"{_cell(st.get('spearman'))}{_cell(st.get('ssim'))}</tr>"
            )
    return _optional_table(
        "Sanity: cascading randomisation",
        "Layers randomised from the output down; each row adds the layers up to the one named.",
        ("model", "method", "randomised down to", "Spearman", "SSIM"),
        srows,
    )


def _shortcuts_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    shrows = []
    for pair in pairs:
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
    return _optional_table(
        "Shortcuts",
        "Share of relevance on the border band, burned-in markers and collimation, beside the share of the image "
        "they cover (what a uniform map would put there).",
        ("model", "method", "border share", "border area", "markers / collimation"),
        shrows,
    )


def _curve_error_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    erows = []
    for pair in pairs:
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
    return _optional_table(
        "Curve error against fine curves",
        "The audit's curves against 112 steps on the pixel grid, same images: mean and max absolute difference of "
        "the curves and of their AUCs.",
        ("model", "method", "images", "deletion mean", "deletion max", "deletion AUC", "insertion mean",
         "insertion max", "insertion AUC"),
        erows,
    )  # fmt: skip


def _breakdowns_table(pairs: Sequence[Mapping[str, Any]]) -> str:
    brows = []
    for pair in pairs:
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
    return _optional_table(
        "Breakdowns",
        None,
        ("model", "method", "by", "group", "images", "deletion AUC", "insertion AUC", "pointing", "IoU Otsu",
         "mass in mask"),
        brows,
    )  # fmt: skip


def _example_figure(item: Mapping[str, Any], which: str, base: Path) -> str:
    """One example overlay with its caption; the PNG is embedded only when it lies under ``base``."""
    rel = item.get("png")
    img = ""
    if rel:
        path = (base / rel).resolve()
        if path.is_file() and base.resolve() in path.parents:
            img = _img_tag(path.read_bytes(), f"{which} {item.get('image_id')}")
    return (
        f"<figure>{img}<figcaption><b>{_e(which)}</b> {_e(item.get('image_id'))}<br>"
        f"mass in mask {_e(_num(item.get('mass_in_mask')))}, p={_e(_num(item.get('probability')))}"
        "</figcaption></figure>"
    )


def _examples_block(pairs: Sequence[Mapping[str, Any]], base: Path) -> str:
    ex_parts = []
    for pair in pairs:
        ex = pair.get("examples") or {}
        figs = [_example_figure(item, which, base) for which in ("best", "worst") for item in ex.get(which, [])]
        if figs:
            ex_parts.append(
                f"<h4>{_e(pair.get('model'))} × {_e(pair.get('method'))}</h4>"
                f'<div class="examples">{"".join(figs)}</div>'
            )
    if not ex_parts:
        return ""
    return "<h3>Best- and worst-localised examples</h3><p class='muted'>Ground truth outlined in green.</p>" + "".join(
        ex_parts
    )
