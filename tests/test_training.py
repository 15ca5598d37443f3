from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xray_xai.errors import CheckpointError
from xray_xai.models.metrics import auroc
from xray_xai.models.splits import sample_weights as _sample_weights
from xray_xai.models.training import class_weights, region_class_weights, split_fingerprint, train
from xray_xai.sdk.interfaces import Record

OPTS = {"val_fraction": 0.3}


def make_tiny_mura(
    root: Path, n_patients: int = 24, size: int = 32, regions: tuple[str, ...] = ("wrist", "hand"), seed: int = 0
) -> Path:
    """A MURA-layout tree with a planted signal: abnormal films carry a bright square, normal films do not.

    MURA's ``valid`` folder is the ``test`` split; its ``train`` is split into train/val by patient.
    """
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_patients), ("valid", max(4, n_patients // 3))):
        for pid in range(n):
            region = regions[pid % len(regions)]
            label = int(rng.random() < 0.5)
            study = root / "MURA-v1.1" / split / f"XR_{region.upper()}" / f"patient{split[0]}{pid:05d}"
            study = study / f"study1_{'positive' if label else 'negative'}"
            study.mkdir(parents=True)
            for k in (1, 2):
                img = rng.random((size, size)) * 0.4
                if label:
                    x, y = rng.integers(2, size - 12, 2)
                    img[y : y + 10, x : x + 10] = 1.0
                Image.fromarray((img * 255).astype(np.uint8)).save(study / f"image{k}.png")
    return root


@pytest.fixture(scope="module")
def tiny_mura(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_mura(tmp_path_factory.mktemp("mura"))


def _train(root: Path, out: Path, **kw: object) -> object:
    args: dict[str, object] = {
        "dataset": "mura",
        "epochs": 2,
        "batch_size": 8,
        "image_size": 32,
        "out_dir": out,
        "progress": False,
        "dataset_options": OPTS,
    }
    args.update(kw)
    return train("cnn-small", root, **args)  # type: ignore[arg-type]


def test_class_and_region_weights_follow_the_formula() -> None:
    assert class_weights([1, 0, 0, 0]) == {0: 0.25, 1: 0.75}
    assert class_weights([0, 0]) == {0: 1.0, 1: 1.0}
    recs = [Record(Path(f"{i}.png"), region="hand", label=int(i < 1)) for i in range(5)]
    recs += [Record(Path(f"w{i}.png"), region="wrist", label=int(i < 3)) for i in range(4)]
    w = region_class_weights(recs)
    # hand: A=1, N=4 -> normal 1/5, abnormal 4/5; wrist: A=3, N=1 -> normal 3/4, abnormal 1/4
    assert w["hand"] == {0: pytest.approx(0.2), 1: pytest.approx(0.8)}
    assert w["wrist"] == {0: pytest.approx(0.75), 1: pytest.approx(0.25)}
    sw = _sample_weights(recs, "region-weighted-bce")
    assert sw[0] == pytest.approx(0.8) and sw[1] == pytest.approx(0.2)  # hand abnormal, hand normal
    assert sw[5] == pytest.approx(0.25) and sw[8] == pytest.approx(0.75)  # wrist abnormal, wrist normal
    # class weights only: A=4, N=5 over both regions
    assert _sample_weights(recs, "weighted-bce")[:2] == [pytest.approx(5 / 9), pytest.approx(4 / 9)]
    assert _sample_weights(recs, "bce") == [1.0] * len(recs)
    fp = split_fingerprint(recs[:3], recs[3:])
    assert fp == split_fingerprint(list(reversed(recs[:3])), recs[3:]) and fp != split_fingerprint(recs[:4], recs[4:])


def test_training_beats_chance_and_writes_run_files(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.models.evaluation import predict_records
    from xray_xai.models.store import load_model, read_sidecar

    res = _train(tiny_mura, tmp_path / "run", epochs=4, optimizer="adam", lr=3e-3, augment=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == len(res.history) >= 1  # type: ignore[attr-defined]
    assert {"train_loss", "val_loss", "val_accuracy", "val_auroc", "lr", "img_per_s"} <= set(rows[0])
    assert (run / "curves.png").stat().st_size > 0 and (run / "skipped.csv").exists()
    side = read_sidecar(res.checkpoint)  # type: ignore[attr-defined]
    assert side["dataset"] == "mura" and side["seed"] == 0 and len(side["split_fingerprint"]) == 16
    assert side["hyperparameters"]["optimizer"] == "adam"
    model = load_model(res.checkpoint)  # type: ignore[attr-defined]
    from xray_xai.data.datasets import open_dataset

    test = open_dataset(tiny_mura, "mura", **OPTS).records("test")
    kept, probs, skipped = predict_records(model, test)
    assert not skipped and len(kept) == len(test)
    auc = auroc([r.label for r in kept], probs)
    assert auc is not None and auc > 0.75, auc


def test_resume_matches_a_straight_run_and_seed_is_deterministic(tiny_mura: Path, tmp_path: Path) -> None:
    straight = _train(tiny_mura, tmp_path / "a", epochs=2, save=False)
    _train(tiny_mura, tmp_path / "b", epochs=2, save=False)
    first = _train(tiny_mura, tmp_path / "c", epochs=1, save=False)
    assert len(first.history) == 1  # type: ignore[attr-defined]
    resumed = _train(tiny_mura, tmp_path / "c", epochs=2, resume=True, save=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2]  # type: ignore[attr-defined]
    last = {
        k: torch.load(p / "last.pt", weights_only=True)["model"]
        for k, p in (("a", tmp_path / "a"), ("b", tmp_path / "b"), ("c", tmp_path / "c"))
    }
    for key, tensor in last["a"].items():
        assert torch.equal(tensor, last["b"][key]), key  # same seed, same weights
        assert torch.equal(tensor, last["c"][key]), key  # 1 epoch + resume == 2 epochs straight
    assert straight.history[1]["train_loss"] == resumed.history[1]["train_loss"]  # type: ignore[attr-defined]
    assert json.loads((tmp_path / "c" / "last.json").read_text())["epoch"] == 2
    with pytest.raises(CheckpointError, match="cannot resume"):  # another split: refuse, do not mix runs
        _train(tiny_mura, tmp_path / "c", epochs=3, resume=True, max_images=10, save=False)
    other = _train(tiny_mura, tmp_path / "d", epochs=1, seed=1, save=False)
    assert other.history[0]["train_loss"] != first.history[0]["train_loss"]  # type: ignore[attr-defined]


def test_region_weighted_loss_and_region_filter(tiny_mura: Path, tmp_path: Path) -> None:
    res = _train(tiny_mura, tmp_path / "r", epochs=1, loss="region-weighted-bce", regions=["wrist"], save=False)
    assert res.history[0]["val_loss"] > 0  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="train"):
        _train(tiny_mura, tmp_path / "x", epochs=1, regions=["elbow"], save=False)


def test_bad_images_are_skipped_and_listed(tmp_path: Path) -> None:
    root = make_tiny_mura(tmp_path / "m", n_patients=12)
    bad = next((root / "MURA-v1.1" / "train").rglob("image1.png"))
    bad.write_bytes(b"not a png")
    res = _train(root, tmp_path / "run", epochs=1, save=False)
    listed = (tmp_path / "run" / "skipped.csv").read_text()
    assert str(bad.name) in listed and len(res.skipped) == 1  # type: ignore[attr-defined]


def test_lbp_logreg_trains_with_fit(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.models.store import load_model

    res = train(
        "lbp-logreg",
        tiny_mura,
        dataset="mura",
        out_dir=tmp_path / "lbp",
        progress=False,
        dataset_options=OPTS,
        image_size=32,
    )
    assert len(res.history) == 1 and res.history[0]["val_accuracy"] is not None
    assert (tmp_path / "lbp" / "history.csv").read_text().startswith("epoch,")
    assert load_model(res.checkpoint).fitted  # type: ignore[attr-defined]


def test_a_last_batch_of_one_does_not_break_batchnorm(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.models.splits import open_splits as _open_splits

    _, recs, _ = _open_splits(tiny_mura, "mura", None, None, 0, OPTS)
    # cnn-small's head has batch-norm layers; a batch size that leaves one image over
    res = train("cnn-small", tiny_mura, dataset="mura", epochs=1, batch_size=len(recs) - 1, image_size=16,
                out_dir=tmp_path / "bn", progress=False, save=False, dataset_options=OPTS)  # fmt: skip
    assert res.history[0]["train_loss"] > 0


def test_cosine_schedule_warms_up_and_decays_to_zero() -> None:
    from xray_xai.models.epochs import make_scheduler as _scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=1.0)
    sched = _scheduler(opt, "cosine", plateau_patience=5, epochs=3, steps_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    warm = lrs[:5]  # half an epoch of 10 steps
    assert warm == sorted(warm) and warm[0] < 0.5 and lrs[4] == pytest.approx(1.0)
    decay = lrs[5:]
    assert all(a >= b for a, b in itertools.pairwise(decay)) and decay[-1] < 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # zero after the last step


def test_monitor_auroc_keeps_the_best_auroc_epoch_and_recipe_lands_in_the_sidecar(
    tiny_mura: Path, tmp_path: Path
) -> None:
    from xray_xai.models.store import read_sidecar

    res = _train(
        tiny_mura, tmp_path / "m", epochs=4, optimizer="adamw", lr=3e-3, schedule="cosine", monitor="auroc",
        augment="light", early_stop=4,
    )  # fmt: skip
    hist = res.history  # type: ignore[attr-defined]
    aucs = [h["val_auroc"] for h in hist]
    best = max(range(len(aucs)), key=lambda i: (aucs[i], -hist[i]["val_loss"]))
    assert res.best_epoch == hist[best]["epoch"]  # type: ignore[attr-defined]
    assert hist[-1]["lr"] < hist[0]["lr"]  # cosine decay, not a constant rate
    hyper = read_sidecar(res.checkpoint)["hyperparameters"]  # type: ignore[attr-defined]
    assert hyper["optimizer"] == "adamw" and hyper["weight_decay"] == pytest.approx(0.01)
    assert (hyper["schedule"], hyper["monitor"], hyper["augment"]) == ("cosine", "auroc", "light")


def test_unknown_recipe_names_are_refused(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.errors import PluginError

    for kw in ({"schedule": "step"}, {"monitor": "f1"}, {"augment": "heavy"}, {"optimizer": "lamb"}):
        with pytest.raises(PluginError, match="expected one of"):
            _train(tiny_mura, tmp_path / "x", save=False, **kw)


def test_letterbox_training_is_recorded_and_restored(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.models.store import load_model, read_sidecar

    res = _train(tiny_mura, tmp_path / "lb", epochs=1, letterbox=True)
    side = read_sidecar(res.checkpoint)  # type: ignore[attr-defined]
    assert side["preprocessing"]["mode"] == "letterbox" and side["preprocessing"]["input_size"] == 32
    model = load_model(res.checkpoint)  # type: ignore[attr-defined]
    assert model.preprocessing.mode == "letterbox" and model.preprocessing.crop is None


def test_train_leaves_the_process_as_it_found_it(
    tiny_mura: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No process-wide side effect: torch's global RNG state, the allocator and the matplotlib backend are unchanged,
    and the run still draws the weights a global ``torch.manual_seed(seed)`` gave."""
    import matplotlib

    from xray_xai._util import allocator

    calls: list[str] = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("mallopt") or True)
    backend = matplotlib.get_backend()
    matplotlib.use("svg")  # a non-Agg backend: a library call that switches to Agg shows
    try:
        torch.manual_seed(1234)
        torch.rand(3)  # somewhere in the middle of the process's stream
        before = torch.get_rng_state()
        expected = torch.rand(5)
        torch.set_rng_state(before)
        res = _train(tiny_mura, tmp_path / "run", epochs=1, save=False)
        assert matplotlib.get_backend() == "svg"
        assert torch.equal(torch.get_rng_state(), before)
        assert torch.equal(torch.rand(5), expected)
    finally:
        matplotlib.use(backend)
    assert calls == []
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the weights are those of a process seeded globally, as the documented recipe always trained them
    torch.manual_seed(0)
    fresh = _train(tiny_mura, tmp_path / "again", epochs=1, save=False)
    assert fresh.history[0]["train_loss"] == res.history[0]["train_loss"]  # type: ignore[attr-defined]


def test_train_config_is_the_recipe(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.errors import PluginError
    from xray_xai.models.config import TrainConfig

    cfg = TrainConfig(epochs=1, batch_size=8, image_size=32, optimizer="adam", augment=False)
    assert cfg.learning_rate == 1e-4 and cfg.decay == 0.0 and cfg.augment_name == "none"
    merged = TrainConfig.from_options(cfg, lr=5e-4, hidden=[8], regions=["wrist"])
    assert merged.lr == 5e-4 and merged.model_options == {"hidden": [8]} and merged.regions == ("wrist",)
    assert cfg.lr is None  # frozen: from_options made a copy
    with pytest.raises(PluginError, match="unknown schedule"):
        TrainConfig(schedule="step")
    by_config = train("cnn-small", tiny_mura, cfg, dataset="mura", out_dir=tmp_path / "a", progress=False,
                      save=False, dataset_options=OPTS)  # fmt: skip
    by_keywords = _train(tiny_mura, tmp_path / "b", epochs=1, optimizer="adam", augment=False, save=False)
    assert by_config.history[0]["train_loss"] == by_keywords.history[0]["train_loss"]  # type: ignore[attr-defined]


def test_each_epoch_is_reported_as_it_ends(tiny_mura: Path, tmp_path: Path) -> None:
    from xray_xai.models.runs import epoch_line

    seen: list[tuple[int, int]] = []

    def on_epoch(row: dict[str, object]) -> None:  # history.csv already holds the epoch when it is reported
        seen.append((int(row["epoch"]), len((tmp_path / "run" / "history.csv").read_text().splitlines()) - 1))  # type: ignore[call-overload]

    _train(tiny_mura, tmp_path / "run", epochs=2, save=False, on_epoch=on_epoch)
    assert seen == [(1, 1), (2, 2)]
    line = epoch_line({"epoch": 3, "train_loss": 0.51234, "lr": 5e-4, "val_auroc": None})
    assert line == "epoch=3  train_loss=0.512  lr=5.00e-04  val_auroc=-"  # not lr=0.000
