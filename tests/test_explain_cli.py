"""The explain service and ``xray-xai explain``: files written, naming, skipping, resume, comparisons, ensembles."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from xray_xai._util.slugs import output_stem
from xray_xai.cli import main
from xray_xai.explain.service import explain
from xray_xai.sdk import registry
from xray_xai.testing.explainers import LinearModel, TinyConvNet, tiny_convnet


@pytest.fixture
def tiny_registered() -> Iterator[None]:
    registry.models.register(TinyConvNet, package="tests")
    registry.models.register(LinearModel, package="tests")
    try:
        yield
    finally:
        registry.models.unregister(TinyConvNet.name)
        registry.models.unregister(LinearModel.name)


@pytest.fixture
def films(tmp_path: Path) -> Path:
    """Two views of one study, one loose film (different sizes) and a file that is not an image."""
    root = tmp_path / "films"
    rng = np.random.default_rng(0)
    for rel, shape in (
        ("patient1/study1/view1.png", (48, 40)),
        ("patient1/study1/view2.png", (40, 48)),
        ("loose.png", (36, 36)),
    ):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(p)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def _save_tiny() -> Path:
    from xray_xai.models.store import save_model

    return save_model(tiny_convnet(), metadata={})


def test_output_stem_is_stable_and_safe() -> None:
    assert output_stem("patient1/study1/view1.png") == "patient1__study1__view1"
    assert output_stem("../a b/c.png") == "a_b__c"
    assert output_stem("x/IMG1.dcm") == "x__IMG1"


def test_service_in_memory(films: Path) -> None:
    res = explain(tiny_convnet(), "gradcam", inputs=[films / "loose.png"], out=None)
    assert len(res.items) == 1 and not res.skipped
    item = res.items[0]
    assert item["explanation"].maps.shape == (1, 32, 32)
    assert item["film"].shape == (32, 32) and 0 <= item["film"].min() <= item["film"].max() <= 1
    assert item["method"] == "gradcam" and 0 <= item["probability"] <= 1


def test_cli_writes_overlays_maps_metadata_comparison_and_sheet(
    films: Path, tmp_path: Path, tiny_registered: None
) -> None:
    _save_tiny()
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "explain",
            "--model",
            "tiny-convnet",
            "--methods",
            "gradcam,saliency",
            "--input",
            str(films),
            "--out",
            str(out),
            "--json",
            "--param",
            "saliency.n_segments=30",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["n_explained"] == 6 and summary["n_skipped"] == 1
    assert summary["skipped"][0]["path"].endswith("broken.png")
    stem = "patient1__study1__view1"
    for method in ("gradcam", "saliency"):
        folder = out / "tiny-convnet" / method
        raw = np.load(folder / f"{stem}.npy")
        assert raw.ndim == 2
        meta = json.loads((folder / f"{stem}.json").read_text())
        assert meta["method"] == method and meta["image_id"] == "patient1/study1/view1.png"
        assert meta["model_fingerprint"] and 0 <= meta["probability"] <= 1
        with Image.open(folder / f"{stem}.png") as im:
            assert im.size[0] > 300  # film + overlay + colour bar
    assert json.loads((out / "tiny-convnet" / "saliency" / f"{stem}.json").read_text())["params"]["n_segments"] == 30
    assert (out / "compare" / f"{stem}.png").exists()
    assert (out / "studies" / "tiny-convnet" / "gradcam" / "patient1__study1.png").exists()
    sheet = (out / "index.html").read_text()
    assert 'src="compare/patient1__study1__view1.png"' in sheet
    assert "http://" not in sheet and "https://" not in sheet and "<script" not in sheet
    assert "broken.png" in (out / "skipped.csv").read_text()
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporaries

    # --resume: nothing recomputed, files untouched
    before = (out / "tiny-convnet" / "gradcam" / f"{stem}.png").stat().st_mtime_ns
    res2 = runner.invoke(
        main,
        [
            "explain",
            "--model",
            "tiny-convnet",
            "--methods",
            "gradcam,saliency",
            "--input",
            str(films),
            "--out",
            str(out),
            "--json",
            "--resume",
        ],
    )
    assert res2.exit_code == 0, res2.output
    again = json.loads(res2.stdout)
    assert again["n_explained"] == 0 and again["n_resumed"] == 3
    assert (out / "tiny-convnet" / "gradcam" / f"{stem}.png").stat().st_mtime_ns == before
    assert "view2.png" in (out / "index.html").read_text()  # the sheet still lists resumed images


def test_cli_two_models_side_by_side_and_checkpoint(films: Path, tmp_path: Path, tiny_registered: None) -> None:
    ckpt, other = _save_tiny(), _save_tiny()
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main,
        [
            "explain",
            "--model",
            str(ckpt),
            "--model",
            str(other),
            "--method",
            "cam",
            "--input",
            str(films / "loose.png"),
            "--out",
            str(out),
            "--format",
            "png",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "tiny-convnet" / "cam" / "loose.png").exists()
    assert (out / "tiny-convnet-2" / "cam" / "loose.png").exists()
    assert (out / "compare" / "loose.png").exists()
    assert not (out / "tiny-convnet" / "cam" / "loose.npy").exists()
    # --model NAME --checkpoint PATH: the checkpoint gives that model's weights (one model, no comparison)
    res = CliRunner().invoke(
        main,
        [
            "explain",
            "--model",
            "tiny-convnet",
            "--checkpoint",
            str(ckpt),
            "--method",
            "cam",
            "--input",
            str(films / "loose.png"),
            "--out",
            str(tmp_path / "one"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["models"] == ["tiny-convnet"]
    res = CliRunner().invoke(
        main,
        [
            "explain",
            "--model",
            "tiny-linear",
            "--checkpoint",
            str(ckpt),
            "--method",
            "cam",
            "--input",
            str(films / "loose.png"),
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert res.exit_code == 1 and "holds model 'tiny-convnet'" in res.stderr


def test_only_predicted_abnormal(films: Path, tmp_path: Path) -> None:
    model = tiny_convnet()
    all_ = explain(model, "gradcam", inputs=[films], out=None, threshold=0.0, only="predicted-abnormal")
    none = explain(model, "gradcam", inputs=[films], out=None, threshold=1.01, only="predicted-abnormal")
    assert len(all_.items) == 3 and len(none.items) == 0


def test_incompatible_model_and_method_is_one_line_error(films: Path, tmp_path: Path, tiny_registered: None) -> None:
    from xray_xai.models.store import save_model

    save_model(LinearModel(), metadata={})
    res = CliRunner().invoke(
        main, ["explain", "--model", "tiny-linear", "--method", "cam", "--input", str(films), "--out", str(tmp_path)]
    )
    assert res.exit_code == 1
    assert res.stderr.startswith("error: ") and "cam" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # no method: the default (layercam) is used, so what fails is the unknown model, with exit 1
        (["--model", "x"], 1, "error: x: no such checkpoint file or folder, and not a registered model name"),
        (["--method", "cam"], 2, "give --model NAME (repeatable) or --checkpoint PATH"),
        (["--model", "x", "--method", "cam", None], 2, "give --input PATH (repeatable) or --data DIR"),
        (["--model", "x", "--method", "cam", "--param", "oops"], 2, "'oops': expected METHOD.KEY=VALUE"),
        (["--model", "x", "--methods", "cam,saliency", "--param", "k=1"], 2, "'k=1': which method?"),
        (["--model", "x", "--method", "cam", "--param", "saliency.k=1"], 2, "'saliency' is not among the chosen"),
    ],
)
def test_usage_errors(args: list[str | None], code: int, message: str, films: Path) -> None:
    given = [a for a in args if a is not None] + ([] if None in args else ["--input", str(films)])
    res = CliRunner().invoke(main, ["explain", *given])
    assert res.exit_code == code, res.output
    assert message in res.output
    assert res.output.strip().splitlines()[-1].startswith("Error: " if code == 2 else "error: ")


def test_key_value_param_goes_to_the_one_method(films: Path, tmp_path: Path, tiny_registered: None) -> None:
    ckpt = _save_tiny()
    args = ["explain", "--checkpoint", str(ckpt), "--input", str(films / "loose.png"), "--json"]
    one = CliRunner().invoke(main, [*args, "--method", "gradcam", "--param", "layer=body.3", "--out", str(tmp_path)])
    assert one.exit_code == 0, one.output
    assert json.loads(next(tmp_path.rglob("loose*.json")).read_text())["params"]["layer"] == "body.3"


def test_faces_default_to_the_shared_method_and_threshold() -> None:
    import inspect

    from xray_xai import api, defaults
    from xray_xai.cli.cluster import cluster as cluster_command
    from xray_xai.cli.explain import explain as explain_command

    # --threshold unset: the model's operating point recorded by `calibrate`, else the shared default (one resolver)
    for command in (explain_command, cluster_command):
        threshold = next(p for p in command.params if p.name == "threshold")
        assert threshold.default is None
    assert inspect.signature(api.explain).parameters["threshold"].default is None
    assert inspect.signature(api.cluster).parameters["threshold"].default == defaults.DECISION_THRESHOLD
    assert api.resolve_threshold(tiny_convnet()) == defaults.DECISION_THRESHOLD
    assert api.DEFAULT_METHOD == defaults.DEFAULT_METHOD and api.split_names(None) == []


def test_per_member_ensemble_outputs(films: Path, tmp_path: Path) -> None:
    import xray_xai

    ensemble = xray_xai.get_model("ensemble-mean")(members=[tiny_convnet(0), tiny_convnet(1)], member_names=["a", "b"])
    res = explain(ensemble, "gradcam", inputs=[films / "loose.png"], out=tmp_path / "o", per_member=True)
    files = res.items[0]["files"]
    folder = tmp_path / "o" / "ensemble-mean" / "gradcam"
    a = np.load(folder / "loose.member-a.npy")
    b = np.load(folder / "loose.member-b.npy")
    dis = np.load(folder / "loose.disagreement.npy")
    np.testing.assert_allclose(dis, np.stack([a, b]).std(axis=0), atol=1e-6)
    assert Path(files["members_png"]).exists()


def test_target_normal_recorded(films: Path, tmp_path: Path) -> None:
    res = explain(tiny_convnet(), "cam", inputs=[films / "loose.png"], out=tmp_path / "o", target="normal")
    meta = json.loads(Path(res.items[0]["files"]["json"]).read_text())
    assert meta["target"] == "normal"


def test_every_input_unreadable_is_one_line_error(films: Path, tmp_path: Path, tiny_registered: None) -> None:
    _save_tiny()
    bad = films / "broken.png"
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["explain", "--model", "tiny-convnet", "--method", "gradcam", "--input", str(bad), "--out", str(out)]
    )
    assert res.exit_code == 1
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("error: ") and "broken.png" in line
    row = (out / "skipped.csv").read_text().splitlines()[1]
    path, problem = row.split(",", 1)
    assert path.endswith("broken.png") and "broken.png" not in problem  # the problem column does not repeat it


def test_layer_option_reaches_methods_that_take_one(films: Path, tmp_path: Path, tiny_registered: None) -> None:
    import json

    ckpt = _save_tiny()
    runner = CliRunner()
    base = ["explain", "--checkpoint", str(ckpt), "--input", str(films / "loose.png"), "--json"]
    ok = runner.invoke(main, [*base, "--method", "gradcam", "--layer", "body.3", "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    meta = json.loads(next((tmp_path / "a").rglob("loose*.json")).read_text())
    assert meta["params"]["layer"] == "body.3"
    wrong = runner.invoke(main, [*base, "--method", "gradcam", "--layer", "body.9", "--out", str(tmp_path / "b")])
    assert wrong.exit_code == 1 and "body." in wrong.stderr and "did you mean" in wrong.stderr
    none = runner.invoke(main, [*base, "--method", "saliency", "--layer", "body.3", "--out", str(tmp_path / "c")])
    assert none.exit_code == 2 and "takes a layer" in none.stderr
