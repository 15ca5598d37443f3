"""The table of docs/localisation.md "Box-guided training": one row per (model, explainer) from the outputs of
``xray-xai evaluate --json`` and ``xray-xai leaderboard`` run on each model (see that section for the commands).

Usage: python benchmarks/guided_table.py LABEL=FOLDER [LABEL=FOLDER ...], each FOLDER holding ``evaluate.json``
and ``board/leaderboard.json``. With ``--compact`` one row per model instead: the default ``layercam`` of
``board/`` in full, pointing only for ``gradcam`` and for the six-view ``layercam`` of ``six/board/`` (where scored).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _ci(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "n/a"
    lo, hi = stat.get("ci") or (None, None)
    mean = f"{stat['mean']:.{digits}f}"
    return mean if lo is None else f"{mean} [{lo:.{digits}f}, {hi:.{digits}f}]"


def rows(label: str, folder: Path) -> list[str]:
    ev = json.loads((folder / "evaluate.json").read_text())
    overall = ev["image"]["overall"]
    lo, hi = overall["ci95"]["auroc"]
    auroc = f"{overall['auroc']:.3f} [{lo:.3f}, {hi:.3f}]"
    board = json.loads((folder / "board" / "leaderboard.json").read_text())
    out = []
    for r in board["rows"]:
        loc, faith, san = r["localisation"], r["faithfulness"], r["sanity"]
        out.append(
            f"| {label} | {auroc} | `{r['method']}` | {_ci(loc['pointing'])} | {_ci(loc['pointing_tol'])} | "
            f"{_ci(loc['mass_in_mask'])} | {_ci(loc['iou_otsu'])} | {_ci(faith['deletion_auc'])} | "
            f"{_ci(faith['insertion_auc'])} | {_ci(san['spearman'], 2)} ({san['status']}) |"
        )
    return out


def compact_row(label: str, folder: Path) -> str:
    """One model: AUROC, the default explainer's localisation, deletion (beside its model's random order) and
    sanity, then the pointing of the six-view ``layercam`` and of ``gradcam``."""
    ev = json.loads((folder / "evaluate.json").read_text())["image"]["overall"]
    board = json.loads((folder / "board" / "leaderboard.json").read_text())
    by = {r["method"]: r for r in board["rows"]}
    six_path = folder / "six" / "board" / "leaderboard.json"
    six = json.loads(six_path.read_text())["rows"][0] if six_path.exists() else None
    lc, gc = by["layercam"], by.get("gradcam")
    loc, san = lc["localisation"], lc["sanity"]
    random_del = board["controls"]["random"]["faithfulness"]["deletion_auc"]["mean"]

    def pointing(r: dict[str, Any] | None) -> str:
        if r is None:
            return "n/a"
        return f"{_ci(r['localisation']['pointing'])} / {_ci(r['localisation']['pointing_tol'])}"

    lo, hi = ev["ci95"]["auroc"]
    return (
        f"| {label} | {ev['auroc']:.3f} [{lo:.3f}, {hi:.3f}] | {_ci(loc['pointing'])} | {_ci(loc['pointing_tol'])} | "
        f"{_ci(loc['mass_in_mask'])} | {_ci(loc['iou_otsu'])} | "
        f"{lc['faithfulness']['deletion_auc']['mean']:.3f} ({random_del:.3f}) | "
        f"{_ci(san['spearman'], 2)} ({san['status']}) | {pointing(six)} | {pointing(gc)} |"
    )


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--compact":
        print("| model | test AUROC | `layercam` pointing | pointing 3.5% | mass in box | IoU (Otsu) | "
              "deletion AUC (random order) | sanity Spearman | six-view `layercam`: pointing / 3.5% | "
              "`gradcam`: pointing / 3.5% |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        for arg in argv[1:]:
            label, folder = arg.rsplit("=", 1)
            print(compact_row(label, Path(folder)))
        return 0
    print("| model | test AUROC | map | pointing | pointing 3.5% | mass in box | IoU (Otsu) | deletion AUC | "
          "insertion AUC | sanity Spearman |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arg in argv:
        label, folder = arg.rsplit("=", 1)
        for line in rows(label, Path(folder)):
            print(line)
        # the controls' deletion and insertion depend on the model (its probabilities): one set per model
        controls = json.loads((Path(folder) / "board" / "leaderboard.json").read_text())["controls"]
        for name, c in controls.items():
            loc, faith = c["localisation"], c["faithfulness"]
            print(f"| {label} | | control: {name} | {_ci(loc.get('pointing'))} | {_ci(loc.get('pointing_tol'))} | "
                  f"{_ci(loc.get('mass_in_mask'))} | {_ci(loc.get('iou_otsu'))} | {_ci(faith.get('deletion_auc'))} | "
                  f"{_ci(faith.get('insertion_auc'))} | |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
