"""Shortcut checks for a binary column (hardware, a burned-in marker): does the model lean on it?

For a column and the value meaning "has it" (``hardware`` -> ``1``/``true``; ``COLUMN=VALUE`` names another):

* **with / without** - the subgroup metrics of the films with and without the attribute, and their tests
  (from :func:`.subgroups.subgroup_table`);
* **dependence** - among the abnormal films, the mean p(abnormal) of those with the attribute minus those without,
  with a seeded bootstrap 95% interval and a Mann-Whitney p-value (and the same among normal films, where a shortcut
  shows as false alarms): a model that reads the attribute scores the films that carry it higher whatever their
  label;
* **concept test** - TCAV of the abnormal logit for the concept "films with the attribute" (:mod:`.tcav`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xray_xai.audit.strata.stats import mean_difference
from xray_xai.audit.strata.tcav import TcavOptions, concept_test
from xray_xai.sdk.interfaces import Record

__all__ = ["DEFAULT_SHORTCUT_COLUMNS", "PRESENT_VALUES", "parse_shortcut", "shortcut_check"]

#: columns checked when none are named, where the films have them (FracAtlas hardware, a planted phantom marker)
DEFAULT_SHORTCUT_COLUMNS: tuple[str, ...] = ("hardware", "shortcut_marker")
#: the values of a binary column that mean "has the attribute"
PRESENT_VALUES: tuple[str, ...] = ("1", "true", "yes", "present")


def parse_shortcut(spec: str, levels: Sequence[str | None]) -> tuple[str, str]:
    """``"hardware"`` or ``"hardware=1"`` -> ``(column, value meaning present)``; the value is guessed from
    :data:`PRESENT_VALUES` when not given. ValueError with a sentence when it cannot be."""
    column, _, value = spec.partition("=")
    column, value = column.strip(), value.strip()
    distinct = sorted({lv for lv in levels if lv is not None})
    if value:
        if value not in distinct:
            raise ValueError(f"shortcut column {column!r} has no value {value!r} (values: {', '.join(distinct)})")
        return column, value
    present = [v for v in distinct if v.lower() in PRESENT_VALUES]
    if len(distinct) != 2 or len(present) != 1:
        raise ValueError(
            f"shortcut column {column!r} is not a yes/no column (values: {', '.join(distinct[:8])}); "
            f"name the value meaning present, e.g. {column}={distinct[0] if distinct else 'VALUE'}"
        )
    return column, present[0]


def shortcut_check(
    column: str,
    present: str,
    levels: Sequence[str | None],
    y: Any,
    p: Any,
    subgroup_rows: Sequence[Mapping[str, Any]],
    *,
    model: Any = None,
    records: Sequence[Record] = (),
    concept_pool: Sequence[tuple[Record, str | None]] = (),
    tcav: TcavOptions | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The checks of the module docstring for ``column`` (``present`` = the value meaning "has it").

    ``levels``, ``y``, ``p`` and ``records`` are aligned (the films analysed); ``subgroup_rows`` are the rows of
    :func:`.subgroups.subgroup_table`; ``concept_pool`` pairs the films concepts may be drawn from with their level
    of ``column``. With ``model`` and ``tcav`` the concept test runs, on the abnormal films of ``records``."""
    ya = np.asarray(y, dtype=np.int64).ravel()
    pa = np.asarray(p, dtype=np.float64).ravel()
    names = np.array([lv if lv is not None else "" for lv in levels], dtype=object)
    has, known = names == present, names != ""
    rows = {r["level"]: r for r in subgroup_rows if r["column"] == column}
    out: dict[str, Any] = {
        "column": column,
        "present": present,
        "n_with": int(has.sum()),
        "n_without": int((known & ~has).sum()),
        "with": _metrics(rows.get(present)),
        "without": _metrics(next((r for lv, r in rows.items() if lv != present), None)),
        "dependence_abnormal": mean_difference(
            pa[has & (ya == 1)], pa[known & ~has & (ya == 1)], n_boot=n_boot, seed=seed
        ),
        "dependence_normal": mean_difference(
            pa[has & (ya == 0)], pa[known & ~has & (ya == 0)], n_boot=n_boot, seed=seed
        ),
    }
    if model is not None and tcav is not None:
        with_attr = [r for r, lv in concept_pool if lv == present]
        without = [r for r, lv in concept_pool if lv is not None and lv != present]
        inputs = [r for r, yy in zip(records, ya.tolist(), strict=True) if yy == 1]
        out["concept_test"] = concept_test(model, with_attr, without, inputs, tcav)
    return out


def _metrics(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keep = ("n", "n_positive", "auroc", "auroc_ci95", "sensitivity", "sensitivity_ci95", "specificity",
            "specificity_ci95", "tests", "flagged")  # fmt: skip
    return {k: row.get(k) for k in keep}
