"""The ``explain`` service behind ``xray-xai explain`` and ``xray_xai.api.explain``: models x methods x images.

For every selected image, model and method it writes (``formats``) an overlay PNG (the film as the model saw it,
the heatmap and its colour bar, method, model and probability in the title), the raw map (``.npy``) and JSON
metadata, under ``out/<model>/<method>/<stem>.*`` where ``stem`` is the record's ``image_id`` with ``/`` replaced
by ``__`` (stable and unique). Several models or methods also give one comparison figure per image
(``out/compare/<stem>.png``: rows = models, columns = film + methods); the views of a study are drawn together
(``out/studies/...``); ensembles explained ``per_member`` also get one map per member and the disagreement map.
``index.html`` is a self-contained contact sheet; unreadable images are skipped and listed in ``skipped.csv``.
Every file is written atomically; with ``resume`` outputs that already exist are not recomputed.
"""

from __future__ import annotations

import inspect
import io
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from xray_xai._util.fsutil import atomic_write_json, write_skipped_csv
from xray_xai.errors import DataError, PluginError, XrayXaiError
from xray_xai.sdk.interfaces import Explainer, Explanation, Model, Problem, Record

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["FORMATS", "ExplainResult", "explain", "make_explainer", "output_stem", "records_from_inputs"]

FORMATS: tuple[str, ...] = ("png", "npy", "json")
Only = Literal["all", "predicted-abnormal"]


@dataclass
class ExplainResult:
    """What :func:`explain` did. ``items`` has one dict per (image, model, method) explained; with ``out=None``
    each item also carries its :class:`Explanation` under ``"explanation"`` and the film under ``"film"``."""

    out: Path | None
    models: list[str]
    methods: list[str]
    items: list[dict[str, Any]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)  #: data set warnings (images still explained)
    resumed: int = 0
    index: Path | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        items = [{k: v for k, v in it.items() if k not in ("explanation", "film")} for it in self.items]
        return {
            "out": str(self.out) if self.out else None,
            "models": self.models,
            "methods": self.methods,
            "n_explained": len(self.items),
            "n_resumed": self.resumed,
            "n_skipped": len(self.skipped),
            "items": items,
            "figures": self.figures,
            "skipped": [{"path": p.path, "problem": p.problem} for p in self.skipped],
            "warnings": [{"path": p.path, "problem": p.problem} for p in self.warnings],
            "index": str(self.index) if self.index else None,
            "seconds": round(self.seconds, 3),
        }


# -- naming ------------------------------------------------------------------------------------------------------
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")
_SUFFIX = re.compile(r"\.(png|jpe?g|dcm|dicom|tiff?|bmp|gif|webp)$", re.IGNORECASE)


def output_stem(image_id: str) -> str:
    """A file-name stem from an image id: the image suffix dropped, ``/`` becomes ``__``, other unsafe characters
    ``_`` (stable, readable; ``patient1/study1/view1.png`` -> ``patient1__study1__view1``)."""
    parts = [p for p in str(image_id).replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if parts:
        parts[-1] = _SUFFIX.sub("", parts[-1]) or parts[-1]
    parts = [_UNSAFE.sub("_", p) for p in parts]
    stem = "__".join(parts) or "image"
    return stem[:200]


def _unique_stems(records: Sequence[Record]) -> list[str]:
    """Stems for the records; a repeated image id gets a numbered suffix in record order (still deterministic)."""
    seen: dict[str, int] = {}
    out = []
    for rec in records:
        stem = output_stem(rec.image_id)
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}--{n + 1}")
    return out


# -- inputs ------------------------------------------------------------------------------------------------------
def records_from_inputs(inputs: Iterable[str | Path]) -> tuple[list[Record], list[Problem]]:
    """Records for image files and folders: :func:`xray_xai.data.records.records_from_paths` (one study rule with
    ``predict``)."""
    from xray_xai.data.records import records_from_paths

    return records_from_paths(inputs)


def make_explainer(method: str, *, seed: int | None = 0, params: dict[str, Any] | None = None) -> Explainer:
    """Instantiate the explainer plugin ``method`` with ``params`` (and ``seed`` where it takes one)."""
    from xray_xai.sdk.registry import explainers

    cls = explainers.get(method)
    options = dict(params or {})
    sig = inspect.signature(cls.__init__)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    if seed is not None and ("seed" in sig.parameters or takes_any):
        options.setdefault("seed", seed)
    try:
        return cls(**options)
    except TypeError as exc:
        raise PluginError(f"explainer {method!r}: {exc}") from None


def _load_models(models: Sequence[str | Path | Model], checkpoint: str | Path | None) -> list[Model]:
    """Models from names (newest in the store), checkpoint paths or instances. ``checkpoint`` supplies the weights
    of a first model given by the same name, or is explained in addition to models given by path or instance."""
    from xray_xai.models.store import load_model

    def load(specs: Sequence[str | Path | Model]) -> list[Model]:
        return [m if isinstance(m, Model) else load_model(m) for m in specs]

    specs = list(models)
    if checkpoint is None:
        if not specs:
            raise PluginError("no model given: pass a model name, a checkpoint path or a Model")
        return load(specs)
    ckpt = load_model(checkpoint)
    first = specs[0] if specs else None
    if isinstance(first, str) and not Path(first).exists():
        if first != ckpt.name:
            raise PluginError(f"checkpoint {checkpoint} holds model {ckpt.name!r}, not {first!r}")
        return [ckpt, *load(specs[1:])]
    return [ckpt, *load(specs)]


def _model_label(model: Model, index: int, labels: list[str]) -> str:
    label = output_stem(model.name or type(model).__name__)
    return label if label not in labels else f"{label}-{index + 1}"


def _device(model: Model) -> Any:
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    first = next(iter(params()), None)
    return None if first is None else first.device


@dataclass
class _Prepared:
    index: int  # position in the records list
    films: dict[str, np.ndarray]  # model label -> geometry film (S, S)
    tensors: dict[str, torch.Tensor]  # model label -> (C, S, S)


# -- the service -------------------------------------------------------------------------------------------------
def explain(
    models: str | Path | Model | Sequence[str | Path | Model] = (),
    methods: str | Sequence[str] = "gradcam",
    *,
    inputs: Sequence[str | Path] = (),
    data: str | Path | None = None,
    split: str | None = None,
    dataset: str | None = None,
    records: Sequence[Record] | None = None,
    checkpoint: str | Path | None = None,
    only: Only = "all",
    threshold: float = 0.5,
    out: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    per_member: bool = False,
    batch_size: int = 8,
    target: str = "abnormal",
    seed: int | None = 0,
    resume: bool = False,
    params: dict[str, dict[str, Any]] | None = None,
    limit: int | None = None,
    show_progress: bool = True,
    strict: bool = False,
) -> ExplainResult:
    """Explain images with every model and method; write figures, maps and metadata under ``out``.

    Images come from ``records``, or ``inputs`` (files/folders), or the data set at ``data`` (``split``,
    ``dataset`` plugin name; auto-detected by default). ``only="predicted-abnormal"`` keeps the images that at
    least one model predicts abnormal (probability >= ``threshold``). ``params`` maps a method name to its
    options. With ``out=None`` nothing is written and the explanations are returned in memory. Films whose stream
    ends early are explained with a warning (``warnings``, ``warnings.csv``) when little is missing, skipped when
    ``strict`` (:func:`xray_xai.data.images.read_film`).
    """
    from xray_xai._util.progress import progress
    from xray_xai.sdk.explainer import score_sign

    start = time.perf_counter()
    score_sign(target)  # validates the target before anything heavy happens
    given = [methods] if isinstance(methods, str) else list(methods)
    method_list = [name.strip() for spec in given for name in spec.split(",") if name.strip()]
    if not method_list:
        raise PluginError("no explanation method given")
    fmt = [f.strip().lower() for f in formats if f.strip()]
    bad = [f for f in fmt if f not in FORMATS]
    if bad:
        raise PluginError(f"unknown output format(s) {', '.join(bad)}; expected some of {', '.join(FORMATS)}")
    if only not in ("all", "predicted-abnormal"):
        raise PluginError(f"unknown selection {only!r}; expected 'all' or 'predicted-abnormal'")
    if batch_size < 1:
        raise PluginError(f"batch size must be positive, got {batch_size}")

    model_specs = [models] if isinstance(models, str | Path | Model) else list(models)
    loaded = _load_models(model_specs, checkpoint)
    labels: list[str] = []
    for i, m in enumerate(loaded):
        labels.append(_model_label(m, i, labels))
    explainers = {m: make_explainer(m, seed=seed, params=(params or {}).get(m)) for m in method_list}
    for model in loaded:  # refuse incompatible pairs before reading a single image
        for explainer_obj in explainers.values():
            for part in getattr(model, "members", None) or [model]:
                explainer_obj.check_model(part)

    skipped: list[Problem] = []
    warnings: list[Problem] = []
    if records is None:
        if inputs:
            recs, problems = records_from_inputs(inputs)
            skipped.extend(problems)
        elif data is not None:
            from xray_xai.data.datasets import open_dataset

            ds = open_dataset(data, dataset)
            recs = ds.records(split)
            skipped.extend(p for p in ds.problems if p.severity == "error")
            warnings.extend(p for p in ds.problems if p.severity != "error")
        else:
            raise DataError(None, "nothing to explain: give input images (--input) or a data set (--data)")
    else:
        recs = list(records)
    if limit is not None:
        recs = recs[: max(0, int(limit))]

    out_dir = Path(out) if out is not None else None
    result = ExplainResult(out=out_dir, models=labels, methods=method_list, skipped=skipped, warnings=warnings)
    stems = _unique_stems(recs)
    compare = len(loaded) > 1 or len(method_list) > 1
    sheet: list[dict[str, Any]] = []

    def paths_for(stem: str, label: str, method: str) -> dict[str, Path]:
        assert out_dir is not None
        folder = out_dir / label / output_stem(method)
        return {f: folder / f"{stem}.{f}" for f in fmt}

    def done(i: int) -> bool:
        if out_dir is None or not resume:
            return False
        wanted = [p for lab in labels for m in method_list for p in paths_for(stems[i], lab, m).values()]
        if compare and "png" in fmt:
            wanted.append(out_dir / "compare" / f"{stems[i]}.png")
        return all(p.exists() for p in wanted)

    todo = []
    for i in range(len(recs)):
        if done(i):
            result.resumed += 1
            _sheet_entry(sheet, out_dir, recs[i], stems[i], labels, method_list, fmt, compare, None)
        else:
            todo.append(i)

    unreadable: list[Problem] = []
    for batch in progress(list(_batches(recs, todo, batch_size)), "explaining", enabled=show_progress):
        prepared = _prepare(recs, batch, loaded, labels, unreadable, strict=strict, warned=result.warnings)
        if not prepared:
            continue
        if only == "predicted-abnormal":
            prepared = _select_abnormal(recs, prepared, loaded, labels, threshold)
            if not prepared:
                continue
        # (model label, method) -> Explanation for the prepared images, in order
        batch_exps: dict[tuple[str, str], Explanation] = {}
        for model, label in zip(loaded, labels, strict=True):
            x = _stack([p.tensors[label] for p in prepared], _device(model))
            for method, explainer in explainers.items():
                try:
                    batch_exps[(label, method)] = explainer.explain(model, x, target=target)
                except XrayXaiError:
                    raise
                except Exception as exc:  # a (third-party) explainer's bug: one line naming it and the films
                    raise PluginError(
                        f"explainer {method!r} failed on {_where(recs, prepared)}: {_one_line(exc)}"
                    ) from exc
        for j, prep in enumerate(prepared):
            rec, stem = recs[prep.index], stems[prep.index]
            for label in labels:
                for method in method_list:
                    exp = batch_exps[(label, method)]
                    item = _item(rec, stem, label, method, exp, j, threshold)
                    if out_dir is None:
                        item["explanation"] = _slice(exp, j)
                        item["film"] = prep.films[label]
                    else:
                        item["files"] = _write_one(
                            paths_for(stem, label, method), prep.films[label], exp, j, item, per_member
                        )
                    result.items.append(item)
            if out_dir is not None and compare and "png" in fmt:
                fig = _write_comparison(out_dir, stem, rec, prep, labels, method_list, batch_exps, j, target)
                result.figures.append(str(fig))
            if out_dir is not None:
                _sheet_entry(sheet, out_dir, rec, stem, labels, method_list, fmt, compare, batch_exps, j)
        if out_dir is not None and "png" in fmt:
            result.figures.extend(_write_studies(out_dir, recs, stems, prepared, labels, method_list, batch_exps))

    skipped.extend(unreadable)
    result.seconds = time.perf_counter() - start
    if out_dir is not None:
        _write_reports(out_dir, result, sheet, target)
    if recs and unreadable and len(unreadable) == len(recs):  # nothing at all could be read: that is an error
        more = f" (and {len(recs) - 1} more, listed in skipped.csv)" if len(recs) > 1 else ""
        raise DataError(unreadable[0].path, f"{unreadable[0].problem}; no image could be read{more}")
    if not recs and skipped:  # every input path missing or empty
        raise DataError(skipped[0].path, skipped[0].problem)
    return result


def _batches(recs: Sequence[Record], todo: Sequence[int], size: int) -> Iterable[list[int]]:
    """Batches of record indices that never split a study (its views are drawn together), in record order."""
    groups: dict[str, list[int]] = {}
    for i in todo:
        groups.setdefault(recs[i].study or f"\0{i}", []).append(i)
    batch: list[int] = []
    for group in groups.values():
        if batch and len(batch) + len(group) > size:
            yield batch
            batch = []
        batch.extend(group)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _prepare(
    recs: Sequence[Record],
    batch: Sequence[int],
    models: Sequence[Model],
    labels: Sequence[str],
    skipped: list[Problem],
    *,
    strict: bool = False,
    warned: list[Problem] | None = None,
) -> list[_Prepared]:
    """Read each film once and preprocess it for every model; unreadable files are listed, not fatal (and films
    kept despite damage listed in ``warned``)."""
    from xray_xai.data.images import read_film
    from xray_xai.data.preprocessing import geometry, to_tensor

    out = []
    for i in batch:
        rec = recs[i]
        try:
            image, warning = read_film(rec.path, strict=strict)
            if warning is not None and warned is not None:
                warned.append(warning)
            films = {lab: geometry(image, m.preprocessing) for m, lab in zip(models, labels, strict=True)}
            tensors = {lab: to_tensor(image, m.preprocessing) for m, lab in zip(models, labels, strict=True)}
        except (XrayXaiError, ValueError, OSError) as exc:
            problem = exc.problem if isinstance(exc, DataError) else (str(exc) or type(exc).__name__)
            skipped.append(Problem(str(rec.path), problem.splitlines()[0]))
            continue
        out.append(_Prepared(i, films, tensors))
    return out


def _where(recs: Sequence[Record], prepared: Sequence[_Prepared]) -> str:
    """The film (or batch of films) a failing plugin was given, for its one-line error."""
    first = recs[prepared[0].index].path
    return str(first) if len(prepared) == 1 else f"a batch of {len(prepared)} films starting with {first}"


def _one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of an unexpected exception."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _stack(tensors: Sequence[torch.Tensor], device: Any) -> torch.Tensor:
    import torch

    x = torch.stack(list(tensors))
    return x.to(device) if device is not None else x


def _select_abnormal(
    recs: Sequence[Record],
    prepared: list[_Prepared],
    models: Sequence[Model],
    labels: Sequence[str],
    threshold: float,
) -> list[_Prepared]:
    """Keep images that at least one model predicts abnormal (so comparison figures stay complete)."""
    import torch

    keep = np.zeros(len(prepared), dtype=bool)
    for model, label in zip(models, labels, strict=True):
        try:
            with torch.no_grad():
                p = model.predict_proba(_stack([q.tensors[label] for q in prepared], _device(model)))
        except XrayXaiError:
            raise
        except Exception as exc:  # a model plugin's forward failed: one line naming it and the films
            raise PluginError(f"model {label!r} failed on {_where(recs, prepared)}: {_one_line(exc)}") from exc
        keep |= p.detach().cpu().numpy().reshape(-1) >= threshold
    return [q for q, k in zip(prepared, keep, strict=True) if k]


def _slice(exp: Explanation, j: int) -> Explanation:
    extras = {
        k: (v[:, j] if k in ("member_maps", "member_probabilities") else v[j]) if isinstance(v, np.ndarray) else v
        for k, v in exp.extras.items()
    }
    return Explanation(
        maps=exp.maps[j : j + 1],
        raw=exp.raw[j : j + 1],
        probabilities=exp.probabilities[j : j + 1],
        method=exp.method,
        target=exp.target,
        params=exp.params,
        model=exp.model,
        model_fingerprint=exp.model_fingerprint,
        seed=exp.seed,
        extras=extras,
    )


def _item(
    rec: Record, stem: str, label: str, method: str, exp: Explanation, j: int, threshold: float
) -> dict[str, Any]:
    meta = exp.metadata(j)
    prob = float(exp.probabilities[j])
    return {
        "image_id": rec.image_id,
        "stem": stem,
        "path": str(rec.path),
        "study": rec.study,
        "view": rec.view,
        "region": rec.region,
        "label": rec.label,
        "model_label": label,
        **meta,
        "probability": prob,
        "predicted": "abnormal" if prob >= threshold else "normal",
        "threshold": threshold,
    }


def _title(method: str, model: str, prob: float, target: str = "abnormal") -> str:
    evidence = "" if target == "abnormal" else f"  (evidence for {target})"
    return f"{method} - {model} - p(abnormal) = {prob:.3f}{evidence}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    from xray_xai._util.fsutil import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def _write_one(
    paths: dict[str, Path], film: np.ndarray, exp: Explanation, j: int, item: dict[str, Any], per_member: bool
) -> dict[str, str]:
    from xray_xai.explain.overlays import render_overlay

    files: dict[str, str] = {}
    heat = exp.maps[j]
    prob = float(exp.probabilities[j])
    if "png" in paths:
        kept = exp.extras.get("kept_superpixels")
        seg = exp.extras.get("superpixels")
        render_overlay(
            film,
            heat,
            paths["png"],
            title=_title(exp.method, exp.model, prob, exp.target),
            kept=kept[j] if isinstance(kept, np.ndarray) else None,
            labels=seg[j] if isinstance(seg, np.ndarray) else None,
        )
        files["png"] = str(paths["png"])
    if "npy" in paths:
        _save_npy(paths["npy"], exp.raw[j])
        files["npy"] = str(paths["npy"])
    if per_member and "member_maps" in exp.extras:
        files.update(_write_members(paths, film, exp, j))
    if "json" in paths:
        atomic_write_json(paths["json"], {**item, "files": files})
        files["json"] = str(paths["json"])
    return files


def _write_members(paths: dict[str, Path], film: np.ndarray, exp: Explanation, j: int) -> dict[str, str]:
    """One map per ensemble member and the disagreement map (std across members), beside the fused one."""
    from xray_xai.explain.overlays import Panel, render_grid

    any_path = next(iter(paths.values()))
    stem = any_path.name.rsplit(".", 1)[0]
    folder = any_path.parent
    names = list(exp.extras.get("member_names", []))
    maps = exp.extras["member_maps"][:, j]
    probs = exp.extras["member_probabilities"][:, j]
    dis = exp.extras["disagreement"][j]
    files: dict[str, str] = {}
    if "npy" in paths:
        for name, m in zip(names, maps, strict=True):
            p = folder / f"{stem}.member-{output_stem(name)}.npy"
            _save_npy(p, m)
            files[f"member:{name}"] = str(p)
        p = folder / f"{stem}.disagreement.npy"
        _save_npy(p, dis)
        files["disagreement"] = str(p)
    if "png" in paths:
        panels = [Panel(film, caption="film"), Panel(film, exp.maps[j], caption=f"fused p={exp.probabilities[j]:.3f}")]
        panels += [Panel(film, m, caption=f"{n} p={p:.3f}") for n, m, p in zip(names, maps, probs, strict=True)]
        peak = float(dis.max())
        panels.append(Panel(film, dis / peak if peak > 0 else dis, caption=f"disagreement (std, max {peak:.2f})"))
        p = folder / f"{stem}.members.png"
        render_grid([panels], p, title=_title(exp.method, exp.model, float(exp.probabilities[j]), exp.target))
        files["members_png"] = str(p)
    return files


def _write_comparison(
    out: Path,
    stem: str,
    rec: Record,
    prep: _Prepared,
    labels: Sequence[str],
    methods: Sequence[str],
    exps: dict[tuple[str, str], Explanation],
    j: int,
    target: str,
) -> Path:
    """Rows = models, columns = film + methods (the layout of the published DenseNet fine-tune comparison)."""
    from xray_xai.explain.overlays import Panel, render_grid

    rows = []
    row_labels = []
    for label in labels:
        prob = float(exps[(label, methods[0])].probabilities[j])
        row = [Panel(prep.films[label], caption="film")]
        row += [Panel(prep.films[label], exps[(label, m)].maps[j], caption=m) for m in methods]
        rows.append(row)
        row_labels.append(f"{label}\np(abnormal)={prob:.3f}")
    title = rec.image_id + ("" if target == "abnormal" else f"  (evidence for {target})")
    return render_grid(rows, out / "compare" / f"{stem}.png", row_labels=row_labels, title=title)


def _write_studies(
    out: Path,
    recs: Sequence[Record],
    stems: Sequence[str],
    prepared: Sequence[_Prepared],
    labels: Sequence[str],
    methods: Sequence[str],
    exps: dict[tuple[str, str], Explanation],
) -> list[str]:
    """One figure per study with several views in this batch, per model and method."""
    from xray_xai.explain.overlays import render_study

    by_study: dict[str, list[int]] = {}
    for j, prep in enumerate(prepared):
        study = recs[prep.index].study
        if study:
            by_study.setdefault(study, []).append(j)
    written = []
    for study, js in by_study.items():
        if len(js) < 2:
            continue
        for label in labels:
            for method in methods:
                exp = exps[(label, method)]
                path = out / "studies" / label / output_stem(method) / f"{output_stem(study)}.png"
                render_study(
                    [prepared[j].films[label] for j in js],
                    [exp.maps[j] for j in js],
                    [float(exp.probabilities[j]) for j in js],
                    path,
                    view_labels=[recs[prepared[j].index].view or recs[prepared[j].index].path.name for j in js],
                    title=f"{study} - {method} - {label}",
                )
                written.append(str(path))
    return written


def _sheet_entry(
    sheet: list[dict[str, Any]],
    out: Path | None,
    rec: Record,
    stem: str,
    labels: Sequence[str],
    methods: Sequence[str],
    fmt: Sequence[str],
    compare: bool,
    exps: dict[tuple[str, str], Explanation] | None,
    j: int = 0,
) -> None:
    if out is None or "png" not in fmt:
        return
    probs = {lab: float(exps[(lab, methods[0])].probabilities[j]) for lab in labels} if exps else {}
    caption = rec.image_id + "".join(f"  {lab}: p={p:.3f}" for lab, p in probs.items()) if len(labels) > 1 else ""
    if compare:
        links = {f"{lab}/{m}": out / lab / output_stem(m) / f"{stem}.png" for lab in labels for m in methods}
        sheet.append(
            {"png": out / "compare" / f"{stem}.png", "caption": caption or rec.image_id, "links": links}
            | ({"probability": probs[labels[0]]} if len(labels) == 1 and probs else {})
        )
    else:
        png = out / labels[0] / output_stem(methods[0]) / f"{stem}.png"
        links = {"json": png.with_suffix(".json")} if "json" in fmt else {}
        if "npy" in fmt:
            links["npy"] = png.with_suffix(".npy")
        sheet.append(
            {"png": png, "caption": rec.image_id, "links": links} | ({"probability": probs[labels[0]]} if probs else {})
        )


def _write_reports(out: Path, result: ExplainResult, sheet: list[dict[str, Any]], target: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_skipped_csv(out / "skipped.csv", result.skipped, warnings=result.warnings)
    if sheet:
        from xray_xai.explain.overlays import contact_sheet

        result.index = contact_sheet(
            sheet,
            out / "index.html",
            title="xray-xai explanations",
            subtitle=(
                f"models: {', '.join(result.models)} | methods: {', '.join(result.methods)} | target: {target} | "
                f"{len(sheet)} images"
            ),
            skipped=[(p.path, p.problem) for p in result.skipped],
        )
    summary = result.to_dict()
    summary.pop("items")
    atomic_write_json(out / "summary.json", summary)
