"""What a model is, in one line: its name, the data set it was trained on, its validation (or model card) AUROC.

The one place that formats a model's provenance: the command line's summary lines, every figure's title, the HTML
report and the web page all call :func:`provenance` and show :attr:`Provenance.short`. Everything is read from the
model's JSON sidecar (``model.sidecar`` after loading, or the dict itself), so nothing here loads weights.

It also says when a model trained on synthetic phantoms is applied to films that are not phantoms
(:func:`phantom_warning`): such a model has only seen drawings of bones, and its outputs on real films mean nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Provenance", "films_are_phantoms", "is_synthetic_dataset", "phantom_warning", "provenance"]


def is_synthetic_dataset(name: str | None) -> bool:
    """Whether the data set plugin ``name`` writes synthetic data (tagged ``generator``, e.g. ``synthetic``)."""
    if not name:
        return False
    if name == "synthetic":
        return True
    from xray_xai.errors import UnknownPluginError
    from xray_xai.sdk import registry

    try:
        return bool(registry.datasets.get(name).tags.generator)
    except (UnknownPluginError, AttributeError):
        return False


@dataclass(frozen=True)
class Provenance:
    """A model's name, fingerprint, training data and quality, as its sidecar records them."""

    name: str  #: the name a user types: the shipped name (``fracatlas-lite0``) or the model plugin's name
    fingerprint: str  #: the first 8 hex digits of the weights fingerprint ("" when unknown)
    dataset: str | None  #: the data set plugin it was trained on (None: not recorded, e.g. an untrained model)
    synthetic: bool  #: trained on synthetic phantoms
    auroc: float | None  #: the model card's test AUROC (shipped models), else the validation AUROC of the kept epoch
    auroc_kind: str  #: "test (model card)", "val" or "" when no AUROC is recorded
    shipped: bool  #: ships with xray-xai

    @property
    def data_text(self) -> str:
        if self.dataset is None:
            return "training data unknown"
        return f"trained on {self.dataset} ({'synthetic phantoms' if self.synthetic else 'real films'})"

    @property
    def auroc_text(self) -> str:
        return f"{self.auroc_kind} AUROC {self.auroc:.3f}" if self.auroc is not None else "no AUROC recorded"

    @property
    def short(self) -> str:
        """``fracatlas-lite0 [af59cc7c]: trained on fracatlas (real films), test (model card) AUROC 0.881``"""
        tag = f" [{self.fingerprint}]" if self.fingerprint else ""
        return f"{self.name}{tag}: {self.data_text}, {self.auroc_text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "fingerprint": self.fingerprint, "dataset": self.dataset, "synthetic": self.synthetic,
            "auroc": self.auroc, "auroc_kind": self.auroc_kind, "shipped": self.shipped, "short": self.short,
        }  # fmt: skip


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN: not recorded


def provenance(model_or_sidecar: Any) -> Provenance:
    """The provenance of a loaded model (its ``sidecar``), a sidecar dict, or a model object with no sidecar (then
    only its name is known)."""
    if isinstance(model_or_sidecar, Mapping):
        side: Mapping[str, Any] = model_or_sidecar
        fallback = str(side.get("name") or "model")
    else:
        side = getattr(model_or_sidecar, "sidecar", None) or {}
        fallback = str(getattr(model_or_sidecar, "name", "") or type(model_or_sidecar).__name__)
    shipped = side.get("shipped") if isinstance(side.get("shipped"), Mapping) else None
    card_auroc = _float(((shipped or {}).get("test") or {}).get("auroc"))
    val_auroc = _float((side.get("metrics") or {}).get("val_auroc"))
    if card_auroc is not None:
        auroc, kind = card_auroc, "test (model card)"
    elif val_auroc is not None:
        auroc, kind = val_auroc, "val"
    else:
        auroc, kind = None, ""
    dataset = side.get("dataset")
    return Provenance(
        name=str((shipped or {}).get("name") or side.get("name") or fallback),
        fingerprint=str(side.get("fingerprint") or "")[:8],
        dataset=str(dataset) if dataset else None,
        synthetic=is_synthetic_dataset(str(dataset) if dataset else None),
        auroc=auroc,
        auroc_kind=kind,
        shipped=shipped is not None,
    )


def films_are_phantoms(
    *, dataset: str | None = None, data_root: str | Path | None = None, inputs: Iterable[str | Path] = ()
) -> bool:
    """Whether the films a command reads are synthetic phantoms: the data set plugin named or detected for
    ``data_root`` is a generator, or every input file lies inside a synthetic data set (looked for in its parent
    folders). Uploaded files and anything undetectable count as real films."""
    if dataset:
        return is_synthetic_dataset(dataset)
    if data_root is not None:
        from xray_xai.data.datasets import detect_dataset
        from xray_xai.errors import DataError

        try:
            return is_synthetic_dataset(detect_dataset(data_root))
        except DataError:
            return False
    paths = [Path(p).expanduser().resolve() for p in inputs]
    return bool(paths) and all(_inside_phantoms(p) for p in paths)


def _inside_phantoms(path: Path) -> bool:
    from xray_xai.sdk import registry

    generators = []
    for name in registry.datasets.names():
        try:
            cls = registry.datasets.get(name)
        except Exception:  # a broken third-party plugin is reported by `xray-xai plugins`, not here
            continue
        if getattr(cls.tags, "generator", False):
            generators.append(cls)
    for folder in [path, *path.parents][:8]:  # a MURA-layout film sits 6 folders below the data set root
        for cls in generators:
            try:
                if folder.is_dir() and cls.detect(folder):
                    return True
            except Exception:  # a broken third-party detect() must not decide anything
                continue
    return False


def phantom_warning(prov: Provenance, films_synthetic: bool, films: str = "these films") -> str | None:
    """The loud warning when a phantom-trained model meets films that are not phantoms, else None."""
    if not prov.synthetic or films_synthetic:
        return None
    return (
        f"model {prov.name} was trained on synthetic phantoms ({prov.auroc_text}) and is applied to {films}, which "
        "are not phantoms: its outputs and heatmaps say nothing about real radiographs. Use a model trained on real "
        "films, e.g. --model fracatlas-lite0 (ships with xray-xai)"
    )
