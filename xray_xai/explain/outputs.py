"""The files ``xray-xai explain`` writes: per image, model and method an overlay PNG, the raw map (``.npy``) and
JSON metadata under ``out/<model>/<method>/<stem>.*``; the comparison and study figures (:mod:`.figures`); the
contact sheet ``index.html``, ``summary.json`` and ``skipped.csv``. Every file is written atomically.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xray_xai._util.fsutil import atomic_write_bytes, atomic_write_json, write_skipped_csv
from xray_xai._util.slugs import output_stem
from xray_xai.explain import figures

if TYPE_CHECKING:  # pragma: no cover
    from xray_xai.explain.engine import ModelFilms
    from xray_xai.explain.service import ExplainResult
    from xray_xai.sdk.interfaces import Explanation, Record

__all__ = ["FORMATS", "Outputs", "save_npy"]

FORMATS: tuple[str, ...] = ("png", "npy", "json")


def save_npy(path: Path, array: np.ndarray) -> None:
    """``array`` as float32 ``.npy``, written atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Outputs:
    """Where and what one ``explain`` run writes under ``out`` (``formats``: some of :data:`FORMATS`)."""

    out: Path
    labels: list[str]
    methods: list[str]
    formats: list[str]
    per_member: bool = False
    target: str = "abnormal"
    sheet: list[dict[str, Any]] = field(default_factory=list)  # the contact sheet's entries, in record order

    @property
    def compare(self) -> bool:
        """Several models or methods: one comparison figure per image."""
        return len(self.labels) > 1 or len(self.methods) > 1

    @property
    def figures(self) -> bool:
        return "png" in self.formats

    def paths(self, stem: str, label: str, method: str) -> dict[str, Path]:
        """The files of one image, model and method, by format."""
        folder = self.out / label / output_stem(method)
        return {f: folder / f"{stem}.{f}" for f in self.formats}

    def done(self, stem: str) -> bool:
        """Whether every file of one image exists already (``resume``)."""
        wanted = [p for lab in self.labels for m in self.methods for p in self.paths(stem, lab, m).values()]
        if self.compare and self.figures:
            wanted.append(self.out / "compare" / f"{stem}.png")
        return all(p.exists() for p in wanted)

    def write_item(
        self,
        stem: str,
        label: str,
        method: str,
        film: np.ndarray,
        exp: Explanation,
        j: int,
        item: dict[str, Any],
        footer: str = "",
        model: str = "",
    ) -> dict[str, str]:
        """The overlay, raw map, member maps and metadata of image ``j`` of the batch; the files by kind. ``footer``:
        the model's provenance, under each figure; ``model``: its name in the figures' titles (the provenance's)."""
        paths = self.paths(stem, label, method)
        files: dict[str, str] = {}
        if "png" in paths:
            files["png"] = str(figures.write_overlay(paths["png"], film, exp, j, footer, model))
        if "npy" in paths:
            save_npy(paths["npy"], exp.raw[j])
            files["npy"] = str(paths["npy"])
        if self.per_member and "member_maps" in exp.extras:
            files.update(self._write_members(paths, film, exp, j, footer, model))
        if "json" in paths:
            atomic_write_json(paths["json"], {**item, "files": files})
            files["json"] = str(paths["json"])
        return files

    def _write_members(
        self, paths: dict[str, Path], film: np.ndarray, exp: Explanation, j: int, footer: str = "", model: str = ""
    ) -> dict[str, str]:
        """One map per ensemble member and the disagreement map (std across members), beside the fused one."""
        any_path = next(iter(paths.values()))
        stem = any_path.name.rsplit(".", 1)[0]
        folder = any_path.parent
        files: dict[str, str] = {}
        if "npy" in paths:
            names = list(exp.extras.get("member_names", []))
            for name, m in zip(names, exp.extras["member_maps"][:, j], strict=True):
                p = folder / f"{stem}.member-{output_stem(name)}.npy"
                save_npy(p, m)
                files[f"member:{name}"] = str(p)
            p = folder / f"{stem}.disagreement.npy"
            save_npy(p, exp.extras["disagreement"][j])
            files["disagreement"] = str(p)
        if "png" in paths:
            png = folder / f"{stem}.members.png"
            files["members_png"] = str(figures.write_members(png, film, exp, j, footer, model))
        return files

    def write_image_figures(self, rec: Record, stem: str, runs: Sequence[ModelFilms], j: int) -> list[str]:
        """The comparison figure of image ``j`` (several models or methods) and its contact-sheet entry."""
        written = []
        if self.compare and self.figures:
            path = self.out / "compare" / f"{stem}.png"
            written.append(str(figures.write_comparison(path, rec, runs, self.methods, j, self.target)))
        self.add_to_sheet(rec, stem, runs, j)
        return written

    def write_studies(self, recs: Sequence[Record], indices: Sequence[int], runs: Sequence[ModelFilms]) -> list[str]:
        """One figure per study with several views in the batch (``indices``: the batch's records), per model and
        method."""
        if not self.figures:
            return []
        by_study: dict[str, list[int]] = {}
        for j, i in enumerate(indices):
            study = recs[i].study
            if study:
                by_study.setdefault(study, []).append(j)
        written = []
        for study, js in by_study.items():
            if len(js) < 2:
                continue
            views = [recs[indices[j]].view or recs[indices[j]].path.name for j in js]
            for run in runs:
                for method in self.methods:
                    path = self.out / "studies" / run.label / output_stem(method) / f"{output_stem(study)}.png"
                    figures.write_study(path, run, method, js, views, f"{study} - {method} - {run.label}")
                    written.append(str(path))
        return written

    def add_to_sheet(self, rec: Record, stem: str, runs: Sequence[ModelFilms] | None, j: int = 0) -> None:
        """The contact-sheet entry of one image (``runs`` None: resumed, the numbers are not known)."""
        if not self.figures:
            return
        labels, methods, out = self.labels, self.methods, self.out
        probs = {r.label: float(r.explanation(methods[0]).probabilities[j]) for r in runs} if runs else {}
        caption = rec.image_id + "".join(f"  {lab}: p={p:.3f}" for lab, p in probs.items()) if len(labels) > 1 else ""
        if self.compare:
            links = {f"{lab}/{m}": out / lab / output_stem(m) / f"{stem}.png" for lab in labels for m in methods}
            entry: dict[str, Any] = {"png": out / "compare" / f"{stem}.png", "caption": caption or rec.image_id}
            entry["links"] = links
            if len(labels) == 1 and probs:
                entry["probability"] = probs[labels[0]]
        else:
            png = out / labels[0] / output_stem(methods[0]) / f"{stem}.png"
            links = {"json": png.with_suffix(".json")} if "json" in self.formats else {}
            if "npy" in self.formats:
                links["npy"] = png.with_suffix(".npy")
            entry = {"png": png, "caption": rec.image_id, "links": links}
            if probs:
                entry["probability"] = probs[labels[0]]
        self.sheet.append(entry)

    def write_reports(self, result: ExplainResult) -> None:
        """``skipped.csv``, the contact sheet ``index.html`` (when figures were drawn) and ``summary.json``."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_skipped_csv(self.out / "skipped.csv", result.skipped, warnings=result.warnings)
        if self.sheet:
            from xray_xai.explain.overlays import contact_sheet

            result.index = contact_sheet(
                self.sheet,
                self.out / "index.html",
                title="xray-xai explanations",
                subtitle=(
                    f"models: {', '.join(result.models)} | methods: {', '.join(result.methods)} | "
                    f"target: {self.target} | {len(self.sheet)} images"
                ),
                skipped=[(p.path, p.problem) for p in result.skipped],
            )
        summary = result.to_dict()
        summary.pop("items")
        atomic_write_json(self.out / "summary.json", summary)
