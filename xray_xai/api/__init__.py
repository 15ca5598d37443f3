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
    found = api.strata(run.checkpoint, root, split="test", out_dir="strata")

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
from xray_xai.api._calibration import (
    calibrate,
    calibrated_probability,
    calibration_info,
    parse_rule,
    resolve_threshold,
    threshold_source,
)
from xray_xai.api._data import data_summary, open_dataset, read_image_bytes, synth
from xray_xai.api._explain import explain, explain_films, explainer_names
from xray_xai.api._films import film_preprocessing, films_dir, open_films, prepare_films
from xray_xai.api._import import IMPORT_OUTPUTS, import_model, preprocessing, wrap_model
from xray_xai.api._leaderboard import leaderboard
from xray_xai.api._models import (
    PREDICTION_FIELDS,
    epoch_line,
    evaluate,
    launch_train,
    list_store,
    load_model,
    models_dir,
    predict,
    predictions_csv,
    recipe,
    recipe_names,
    resolve_model,
    resolve_specs,
    save_model,
    train,
    write_predictions,
)
from xray_xai.api._process import prepare_process, ray_unsupported, to_json
from xray_xai.api._provenance import best_real_model, describe_models, list_models, provenance
from xray_xai.api._strata import STRATA_CORRECTIONS, strata
from xray_xai.defaults import (
    CALIBRATION_METHODS,
    CLUSTER_EXPLAINER,
    DECISION_THRESHOLD,
    DEFAULT_LEVELS,
    DEFAULT_METHOD,
    STUDY_AGGREGATIONS,
)

__all__ = [
    "CALIBRATION_METHODS",
    "CLUSTER_EXPLAINER",
    "DECISION_THRESHOLD",
    "DEFAULT_LEVELS",
    "DEFAULT_METHOD",
    "IMPORT_OUTPUTS",
    "PREDICTION_FIELDS",
    "STRATA_CORRECTIONS",
    "STUDY_AGGREGATIONS",
    "ParamError",
    "audit",
    "best_real_model",
    "calibrate",
    "calibrated_probability",
    "calibration_info",
    "cluster",
    "data_summary",
    "demo",
    "describe_models",
    "epoch_line",
    "evaluate",
    "explain",
    "explain_films",
    "explainer_names",
    "extract_features",
    "film_preprocessing",
    "films_dir",
    "format_stat",
    "import_model",
    "launch_train",
    "leaderboard",
    "list_models",
    "list_plugins",
    "list_store",
    "load_model",
    "method_params",
    "models_dir",
    "open_dataset",
    "open_films",
    "parse_params",
    "parse_rule",
    "predict",
    "predictions_csv",
    "prepare_films",
    "prepare_process",
    "preprocessing",
    "provenance",
    "ray_unsupported",
    "read_image_bytes",
    "recipe",
    "recipe_names",
    "resolve_model",
    "resolve_specs",
    "resolve_threshold",
    "save_model",
    "select_k",
    "split_names",
    "strata",
    "synth",
    "threshold_source",
    "to_json",
    "train",
    "wrap_model",
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
            "guide": training.GUIDE_SOURCES,
            "guide_loss": training.GUIDE_LOSSES,
        }
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
