"""The leaderboard: every explanation method scored on one model's fractured films (``xray-xai leaderboard``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xray_xai._util.params import split_names

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.sdk.interfaces import Model

    ModelSpec = str | Path | Model


def leaderboard(
    model: ModelSpec,
    data_root: str | Path,
    methods: str | Sequence[str] | None = None,
    *,
    checkpoint: str | Path | None = None,
    dataset: str | None = None,
    split: str = "test",
    films: int | None = None,
    probe: int = 3,
    budget_minutes: float | None = None,
    films_per_method: Mapping[str, int] | None = None,
    faithfulness_films: int = 8,
    sanity_films: int = 4,
    steps: int = 8,
    grid: int = 8,
    baseline: str = "blur",
    batch_size: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    out_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    """Score explanation ``methods`` (names or comma-separated lists; None: every registered method) on ``model``
    over the fractured films with ground truth of ``split`` (``films``: the first N); see
    :mod:`xray_xai.audit.leaderboard` for the scores, the controls and the time budget. With ``out_dir`` writes
    ``leaderboard.json``, ``leaderboard.md`` and a sortable ``leaderboard.html`` there (paths in ``"outputs"``).
    """
    from xray_xai.audit.leaderboard import leaderboard as _leaderboard
    from xray_xai.audit.leaderboard import write_outputs

    def save(partial: dict[str, Any]) -> None:
        if out_dir is not None:
            write_outputs(partial | {"data": data, "partial": True}, out_dir)

    from xray_xai.audit.service import split_records
    from xray_xai.models.resolve import resolve_model
    from xray_xai.sdk.registry import explainers

    chosen = split_names(methods) or explainers.names()
    loaded = resolve_model(model, checkpoint)
    ds, records = split_records(data_root, dataset, split)
    data = {"dataset": ds.name, "root": str(ds.root), "split": split}
    result = _leaderboard(
        loaded, chosen, records, films=films, probe=probe, budget_minutes=budget_minutes,
        films_per_method=films_per_method, faithfulness_films=faithfulness_films, sanity_films=sanity_films,
        steps=steps, grid=grid, baseline=baseline, batch_size=batch_size, n_boot=n_boot, seed=seed,
        explainer_options=params, log=log, on_row=save, strict=strict,
    )  # fmt: skip
    result["data"] = data
    if out_dir is not None:
        result["outputs"] = write_outputs(result, out_dir)
    return result
