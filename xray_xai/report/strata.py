"""The report's section for ``xray-xai strata``: the forest plot, the subgroup table (flagged rows marked), the
shortcut checks with their concept tests, and the cluster strata with the montages of flagged clusters."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from xray_xai.report.sections import _num, _png_file, format_stat

__all__ = ["strata_section"]


def _e(x: Any) -> str:
    return html.escape(str(x))


def _stat(row: Mapping[str, Any], metric: str) -> str:
    text = format_stat({"mean": row.get(metric), "ci": row.get(f"{metric}_ci95")})
    if " [" in text:
        mean, ci = text.split(" [", 1)
        return f'<td class="num">{_e(mean)} <span class="ci">[{_e(ci)}</span></td>'
    return f'<td class="num">{_e(text)}</td>'


def _p(row: Mapping[str, Any], metric: str) -> str:
    test = (row.get("tests") or {}).get(metric)
    if not test:
        return "<td class='num muted'>–</td>"
    cls = "num fail" if test.get("flagged") else "num"
    return f"<td class='{cls}'>{_e(_pval(test.get('p_adjusted')))}</td>"


def _pval(p: Any) -> str:
    """Two significant digits, so that 3e-05 is not shown as 0.0000."""
    return "–" if p is None else f"{float(p):.2g}"


def _rows_table(rows: Sequence[Mapping[str, Any]], first: str = "subgroup") -> str:
    body = []
    for r in rows:
        flag = ", ".join(r.get("flagged") or [])
        mark = f"<td class='fail'>below on {_e(flag)}</td>" if flag else "<td class='muted'>–</td>"
        body.append(
            f"<tr><th>{_e(r.get('column'))}={_e(r.get('level'))}</th><td class='num'>{_e(r.get('n'))}</td>"
            f"<td class='num'>{_e(r.get('n_positive'))}</td>{_stat(r, 'auroc')}{_stat(r, 'sensitivity')}"
            f"{_stat(r, 'specificity')}{_p(r, 'auroc')}{_p(r, 'sensitivity')}{_p(r, 'specificity')}{mark}</tr>"
        )
    head = (
        f"<tr><th>{_e(first)}</th><th>n</th><th>abnormal</th><th>AUROC</th><th>sensitivity</th><th>specificity</th>"
        "<th>p AUROC</th><th>p sens.</th><th>p spec.</th><th>flag</th></tr>"
    )
    return f"<div class='wide'><table>{head}{''.join(body)}</table></div>"


def _shortcut_block(sc: Mapping[str, Any]) -> str:
    parts = [f"<h3>Shortcut check: {_e(sc.get('column'))}={_e(sc.get('present'))}</h3>"]
    dep = []
    for key, label in (("dependence_abnormal", "abnormal films"), ("dependence_normal", "normal films")):
        d = sc.get(key) or {}
        dep.append(
            f"<li>{_e(label)}: mean p(abnormal) with {_e(_num(d.get('mean_with')))} (n={_e(d.get('n_with'))}), "
            f"without {_e(_num(d.get('mean_without')))} (n={_e(d.get('n_without'))}); difference "
            f"{_e(format_stat({'mean': d.get('difference'), 'ci': d.get('ci95')}))}, Mann-Whitney p "
            f"{_e(_pval(d.get('p')))}</li>"
        )
    parts.append("<ul>" + "".join(dep) + "</ul>")
    ct = sc.get("concept_test")
    if ct and "skipped" not in ct:
        verdict = "significant" if ct.get("significant") else "not significant"
        parts.append(
            f"<p>TCAV on layer <code>{_e(ct.get('layer'))}</code>, {_e(ct.get('n_runs'))} runs, "
            f"{_e(ct.get('n_concept'))} films per concept, {_e(ct.get('n_inputs'))} abnormal input films: score "
            f"{_e(_num(ct.get('score')))} ± {_e(_num(ct.get('score_sd')))} against random concepts "
            f"{_e(_num(ct.get('random_score')))} ± {_e(_num(ct.get('random_score_sd')))}; t-test p "
            f"{_e(_pval(ct.get('p')))}: <b class='{'fail' if ct.get('significant') else 'pass'}'>"
            f"{_e(verdict)}</b> (the concept {_e(ct.get('direction'))} the abnormal logit).</p>"
        )
    elif ct:
        parts.append(f"<p class='muted'>Concept test skipped: {_e(ct.get('skipped'))}</p>")
    return "".join(parts)


def _clusters_block(cl: Mapping[str, Any]) -> str:
    if "skipped" in cl:
        return f"<h3>Cluster strata</h3><p class='muted'>{_e(cl['skipped'])}</p>"
    parts = [
        "<h3>Cluster strata</h3>",
        f"<p>{_e(cl.get('method'))}, k={_e(cl.get('k'))}, on {_e(cl.get('on'))} of every film; "
        f"{_e(cl.get('n_tests'))} tests, {_e(cl.get('correction'))} correction.</p>",
        _rows_table(cl.get("rows") or [], "cluster"),
    ]
    figures = ""
    for row in cl.get("rows") or []:
        if not row.get("flagged"):
            continue
        dominant = "; ".join(f"{k} {v.get('value')} ({_num(v.get('share'), 2)})"
                             for k, v in (row.get("dominant") or {}).items())  # fmt: skip
        figures += (
            f"<figure>{_png_file(row.get('montage'), row.get('level', ''))}<figcaption>{_e(row.get('level'))}: "
            f"{_e(row.get('description') or '')} {_e(dominant)}</figcaption></figure>"
        )
    if figures:
        parts.append(f"<div class='plots'>{figures}</div>")
    return "".join(parts)


def strata_section(st: Mapping[str, Any]) -> str:
    """The whole strata section of the report."""
    sub = st.get("subgroups") or {}
    flagged = st.get("flagged") or []
    summary = (
        "; ".join(f"{f['column']}={f['level']} ({', '.join(f['metrics'])})" for f in flagged) if flagged else "none"
    )
    parts = [
        "<h2>Subgroups and shortcuts</h2>",
        f"<p>Model <b>{_e(st.get('model'))}</b> on {_e(st.get('dataset'))}, split {_e(st.get('split'))}: "
        f"{_e(st.get('n_films'))} films, threshold {_e(_num(sub.get('threshold')))}, "
        f"{_e(sub.get('n_boot'))} bootstrap resamples (seed {_e(sub.get('seed'))}). Each subgroup is compared "
        "with the rest of the films (DeLong for AUROC, Fisher's exact test for sensitivity and specificity); "
        f"{_e(sub.get('n_tests'))} tests, {_e(sub.get('correction'))} correction, flagged when the adjusted p is "
        f"below {_e(sub.get('alpha'))} and the subgroup is below the rest. Flagged: <b>{_e(summary)}</b>.</p>",
        f"<div class='plots'>{_png_file((st.get('files') or {}).get('forest'), 'forest plot of subgroup AUROCs')}"
        "</div>",
        _rows_table(sub.get("rows") or []),
    ]
    for sc in st.get("shortcuts") or []:
        parts.append(_shortcut_block(sc))
    if st.get("clusters"):
        parts.append(_clusters_block(st["clusters"]))
    return "".join(parts)
