"""What the faces get from xray_xai.api: option syntax, backend rules, process set-up only at the CLI's entry."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from xray_xai import api
from xray_xai.errors import XrayXaiError


def test_import_has_no_process_wide_effect_and_the_cli_entry_chooses_it() -> None:
    code = (
        "import sys, xray_xai, xray_xai.api, xray_xai.cli\n"
        "alloc = sys.modules.get('xray_xai._util.allocator')\n"
        "print(alloc is None or alloc._done is None, 'matplotlib' in sys.modules)\n"
        "from click.testing import CliRunner\n"
        "assert CliRunner().invoke(xray_xai.cli.main, ['data', '--help']).exit_code == 0\n"
        "print(sys.modules['xray_xai._util.allocator']._done is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.split() == ["True", "False", "True"]


def test_split_names() -> None:
    assert api.split_names("gradcam, saliency", None, ["gradcam", "cam,"]) == ["gradcam", "saliency", "cam"]
    assert api.split_names(None, "") == []


def test_method_params_syntax() -> None:
    assert api.method_params(["saliency.n_segments=200", "gradcam++.layer=body.3"], ["saliency", "gradcam++"]) == {
        "saliency": {"n_segments": 200},
        "gradcam++": {"layer": "body.3"},
    }
    assert api.method_params(["layer=features.denseblock3", "flip=false"], ["gradcam"]) == {
        "gradcam": {"layer": "features.denseblock3", "flip": False}
    }
    for items, methods, message in (
        (["n=1"], ["a", "b"], "which method"),
        (["c.n=1"], ["a"], "not among the chosen methods"),
        (["oops"], ["a"], "expected METHOD.KEY=VALUE"),
        (["=1"], ["a"], "expected METHOD.KEY=VALUE"),
    ):
        with pytest.raises(api.ParamError, match=message):
            api.method_params(items, methods)
    assert api.parse_params(["k=4", "init=k-means++"]) == {"k": 4, "init": "k-means++"}


def test_ray_backend_refuses_local_only_options() -> None:
    assert api.ray_unsupported("explain", only="all", per_member=False, resume=True) == ["resume"]
    assert api.ray_unsupported("cluster", per_region=True, select_k_range=[2, 3], on="features") == [
        "per_region",
        "select_k_range",
    ]
    with pytest.raises(XrayXaiError, match="per_member only work with backend='local'"):
        api.explain("cnn-small", "gradcam", inputs=["x.png"], per_member=True, backend="ray")
    with pytest.raises(XrayXaiError, match="unknown backend 'spark'"):
        api.cluster("cnn-small", ".", backend="spark")


def test_layer_needs_a_method_that_takes_one() -> None:
    with pytest.raises(api.ParamError, match=r"none of saliency takes a layer .*gradcam"):
        api.explain("cnn-small", "saliency", inputs=["x.png"], layer="body.3")


def test_constants_for_the_faces() -> None:
    assert "wrist" in api.REGIONS and "adamw" in api.TRAIN_CHOICES["optimizer"]
    assert api.PREDICTION_FIELDS[0] == "path" and api.predictions_csv([]).startswith("path,study,")
    with pytest.raises(AttributeError):
        api.NOT_THERE  # noqa: B018


def test_train_choices_are_the_services_names() -> None:
    """The CLI's choices come from the API; --augment is spelled out (its home imports numpy) and checked here."""
    from xray_xai.cli.train import _guide_losses, train
    from xray_xai.data.augment import AUGMENTATIONS

    choices = {p.name: tuple(p.type.choices) for p in train.params if isinstance(p.type, click.Choice)}
    assert choices["augment"] == AUGMENTATIONS
    for name, allowed in api.TRAIN_CHOICES.items():
        if name == "guide_loss":  # families join with "+": a callback checks each against the API's names
            assert _guide_losses(None, None, "+".join(allowed)) == "+".join(allowed)  # type: ignore[arg-type]
            with pytest.raises(click.BadParameter):
                _guide_losses(None, None, "gain")  # type: ignore[arg-type]
            continue
        assert choices[name] == tuple(allowed)
