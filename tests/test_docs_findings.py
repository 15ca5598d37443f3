"""What a newcomer following the docs hit (issue 20, findings 1, 2, 3 and 10): each fixed where it was wrong (the code
or the docs), each checked here."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from xray_xai import api
from xray_xai.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(api.synth(tmp_path_factory.mktemp("ph") / "phantoms", n_studies=8, seed=0, image_size=64))


def _films(root: Path) -> list[Path]:
    return sorted(root.rglob("*.png"))


# -- finding 1: write_report with an in-memory cluster result ------------------------------------------------------
def test_write_report_takes_the_in_memory_cluster_result(phantoms: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    clusters = api.cluster(
        tiny_checkpoint, phantoms, k=2, threshold=None, out_dir=tmp_path / "clusters", progress=False
    )
    assert "feature_set" in clusters  # the in-memory result, as docs/quickstart.md passes it
    html = api.write_report(tmp_path / "report", clustering=clusters)
    saved = json.loads((tmp_path / "report" / "report.json").read_text(encoding="utf-8"))["clustering"]
    assert saved["k"] == 2 and "feature_set" not in saved and "labels" not in saved
    assert "Clusters" in html.read_text(encoding="utf-8")


# -- finding 2: the shipped example explainer passes the contract check given a model ------------------------------
def test_example_plugin_passes_check_explainer(monkeypatch: pytest.MonkeyPatch) -> None:
    import xray_xai
    from xray_xai.testing.explainers import check_explainer, tiny_convnet

    monkeypatch.syspath_prepend(str(REPO / "examples" / "custom_plugin"))
    from xray_xai_example.explainer import InputXGradient

    check_explainer(InputXGradient, tiny_convnet())
    check_explainer(InputXGradient, xray_xai.get_model("cnn-small")(image_size=32))
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    assert "needs a model" in text  # the doc says what the second argument is


# -- finding 3: Problem fields; folder data evaluated with its labels ----------------------------------------------
def test_data_doc_names_the_problem_fields() -> None:
    from dataclasses import fields

    from xray_xai.sdk.interfaces import Problem

    names = ", ".join(f.name for f in fields(Problem))
    assert f"list[Problem]: {names}" in (REPO / "docs" / "data.md").read_text(encoding="utf-8")


def test_evaluate_reads_folder_labels_with_o(phantoms: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    scans = tmp_path / "scans"
    rows = ["path,label"]
    for i, film in enumerate(_films(phantoms)[:8]):
        (scans / "a").mkdir(parents=True, exist_ok=True)
        shutil.copy(film, scans / "a" / f"s{i}.png")
        rows.append(f"a/s{i}.png,{i % 2}")
    (scans / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(scans), "--dataset", "folder"]
    args += ["--split", "all", "--bootstrap", "5", "--json"]
    without = CliRunner().invoke(main, args)
    assert without.exit_code != 0 and "no labelled images" in without.output
    result = CliRunner().invoke(main, [*args, "-o", "labels=labels.csv"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_images"] == 8


# -- finding 10: the smaller drift ---------------------------------------------------------------------------------
def test_output_stem_example_in_the_docs_is_what_explain_writes() -> None:
    from xray_xai._util.slugs import output_stem
    from xray_xai.data.records import mura_study

    text = (REPO / "docs" / "explainers.md").read_text(encoding="utf-8")
    path, stem = re.search(r"\(`(MURA-v1\.1/[^`]+\.png)`,\s+of study `[^`]+` -> `([^`]+)`\)", text).groups()  # type: ignore[union-attr]
    record = mura_study(path)
    assert record is not None and output_stem(record.image_id) == stem


def test_cam_refusal_points_to_gradcam_and_plugins_agree() -> None:
    import xray_xai
    from xray_xai.errors import PluginError

    cam = xray_xai.get_explainer("cam")()
    for name in ("cnn-small", "convnet"):
        cls = xray_xai.get_model(name)
        assert cls.tags.has_linear_head is False  # what `xray-xai plugins --json` lists
        with pytest.raises(PluginError, match="use gradcam"):
            cam.check_model(cls(image_size=32))
        linear = cls(image_size=32, hidden=())  # `--hidden none`: pooling straight into the classifier
        assert linear.tags.has_linear_head is True
        cam.check_model(linear)
    listed = {p.name: p for p in api.list_plugins("model")}
    assert not listed["cnn-small"].tags.get("has_linear_head") and listed["densenet-full"].tags["has_linear_head"]
    assert xray_xai.get_model("densenet-full").tags.has_linear_head is True


def test_cluster_message_names_all_images(phantoms: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["cluster", "--checkpoint", str(tiny_checkpoint), "--data", str(phantoms), "--threshold", "1.0",
               "--out", str(tmp_path / "c")],
    )  # fmt: skip
    assert result.exit_code != 0 and "--all-images" in result.output


def test_preset_name_states_the_size_used() -> None:
    import xray_xai
    from xray_xai.data.geometry import preset

    assert xray_xai.get_model("cnn-small")(image_size=64).preprocessing.name == "resize-64-gray-minmax"
    assert preset("resize-224-imagenet", 64).name == "resize-64-imagenet"
    assert preset("resize-224-imagenet").name == "resize-224-imagenet"


def test_ensemble_training_prints_no_best_epoch_zero(phantoms: Path, tiny_checkpoint: Path) -> None:
    args = ["train", "--model", "ensemble-mean", "--members", f"{tiny_checkpoint},{tiny_checkpoint}"]
    result = CliRunner().invoke(main, [*args, "--data", str(phantoms)])
    assert result.exit_code == 0, result.output
    assert "best epoch 0" not in result.output and "ensemble of trained members" in result.output


def test_roc_and_montages_have_titles(
    phantoms: Path, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from matplotlib.figure import Figure
    from PIL import Image

    titles: list[str] = []
    real_savefig = Figure.savefig

    def savefig(fig: Figure, *args: object, **kwargs: object) -> None:
        titles.extend(ax.get_title() for ax in fig.axes)
        real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    api.evaluate(tiny_checkpoint, phantoms, split="train", bootstrap=0, out_dir=tmp_path / "eval")
    assert "ROC: image and study level" in titles
    api.cluster(tiny_checkpoint, phantoms, k=2, threshold=None, out_dir=tmp_path / "c", progress=False)
    montage = np.asarray(Image.open(next((tmp_path / "c").rglob("montage_cluster_0.png"))))
    assert (montage[:14] < 128).any() and (montage.shape[0] - 14 + 2) % 130 == 0  # a title band over the tiles


def test_mura_layout_film_keeps_study_and_region_in_json(phantoms: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    film = next(f for f in _films(phantoms) if "XR_" in str(f))
    region = re.search(r"XR_(\w+)", str(film))[1].lower()  # type: ignore[index]
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(tiny_checkpoint), "--input", str(film), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["region"] == region and row["study"].endswith(film.parent.name)
    out = tmp_path / "ex"
    args = ["explain", "--checkpoint", str(tiny_checkpoint), "--method", "gradcam", "--input", str(film)]
    assert CliRunner().invoke(main, [*args, "--out", str(out)]).exit_code == 0
    (sidecar,) = [p for p in out.rglob("*.json") if p.name != "summary.json"]
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    assert meta["region"] == region and meta["study"] == row["study"]
