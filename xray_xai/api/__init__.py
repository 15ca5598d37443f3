"""The Python API: whatever a command does, the function of the same name here does (floor 3 of DESIGN.md).

The one place that composes services: the command line and the web app call these functions and hold no logic of
their own (model resolution, method lists, ``--layer``, ``--param``, the Ray backend are all decided here); scripts
and notebooks use them directly::

    from xray_xai import api

    root = api.synth("phantoms", n_studies=60, seed=0)
    run = api.train("cnn-small", root, epochs=3, image_size=64)
    metrics = api.evaluate(run.checkpoint, root, split="test")
    result = api.explain(run.checkpoint, "gradcam,saliency", data=root, split="test", out="explanations")
    clusters = api.cluster(run.checkpoint, root, k=4, out_dir="clusters")
    grid = api.audit([run.checkpoint], ["gradcam", "saliency"], root, n=20, out_dir="audit")

A model is named the same way everywhere (:mod:`xray_xai.models.resolve`): a registered name (the newest trained one
in the store), a checkpoint path or a model object; ``checkpoint=`` beside a name pins that name's weights.

Importing this module is cheap (no torch, numpy or sklearn); each function imports its service when first called.
"""

from __future__ import annotations

from typing import Any

from xray_xai._util.params import ParamError, method_params, parse_params, split_names
from xray_xai.api._analysis import (
    audit,
    cluster,
    demo,
    extract_features,
    format_stat,
    list_plugins,
    select_k,
    write_report,
)
from xray_xai.api._data import data_summary, open_dataset, read_image_bytes, synth
from xray_xai.api._explain import explain, explain_films, explainer_names
from xray_xai.api._leaderboard import leaderboard
from xray_xai.api._models import (
    PREDICTION_FIELDS,
    epoch_line,
    evaluate,
    list_store,
    load_model,
    models_dir,
    predict,
    predictions_csv,
    resolve_model,
    resolve_specs,
    save_model,
    train,
    write_predictions,
)
from xray_xai.api._process import prepare_process, ray_unsupported, to_json
from xray_xai.defaults import CLUSTER_EXPLAINER, DECISION_THRESHOLD, DEFAULT_METHOD

__all__ = [
    "CLUSTER_EXPLAINER",
    "DECISION_THRESHOLD",
    "DEFAULT_METHOD",
    "PREDICTION_FIELDS",
    "ParamError",
    "audit",
    "cluster",
    "data_summary",
    "demo",
    "epoch_line",
    "evaluate",
    "explain",
    "explain_films",
    "explainer_names",
    "extract_features",
    "format_stat",
    "leaderboard",
    "list_plugins",
    "list_store",
    "load_model",
    "method_params",
    "models_dir",
    "open_dataset",
    "parse_params",
    "predict",
    "predictions_csv",
    "prepare_process",
    "ray_unsupported",
    "read_image_bytes",
    "resolve_model",
    "resolve_specs",
    "save_model",
    "select_k",
    "split_names",
    "synth",
    "to_json",
    "train",
    "write_predictions",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Constants the faces use for their choices, imported on first use: ``REGIONS`` (the MURA regions) and
    ``TRAIN_CHOICES`` (``{"optimizer": ..., "schedule": ..., "monitor": ..., "loss": ...}``, the names ``train``
    accepts)."""
    if name == "REGIONS":
        from xray_xai.sdk.interfaces import REGIONS

        return REGIONS
    if name == "TRAIN_CHOICES":
        from xray_xai.models import training

        return {
            "optimizer": training.OPTIMIZERS,
            "schedule": training.SCHEDULES,
            "monitor": training.MONITORS,
            "loss": training.LOSSES,
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
