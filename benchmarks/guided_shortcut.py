"""Box guidance against a planted shortcut, on phantoms: does guidance move the model's evidence from the shortcut
to the finding? (issue 18's synthetic check; tests/test_guidance_shortcut.py asserts it with three seeds.)

The training films are 48-px phantoms (forearm and humerus, half of them fractured, the fracture about 0.8% of the
film); every fractured training film also carries a shortcut token (:func:`burn_token`: a bright disc with a dark
rim, 0.3 of the side across, at a random place) and no normal one does, so the token alone separates the classes.
Each test film carries the token whatever its label, so there it says nothing. A small three-stage CNN (6 x 6 map
before pooling) is trained twice per seed with the same initial weights and batches: on labels alone, and with
:class:`xray_xai.models.guidance.Guide` on the fracture masks of the fractured films. On the fractured test films
the last layer's Grad-CAM (the map ``point`` and ``outside`` train) and the default explainer (``layercam``, the map
``layercam`` trains) are scored by the pointing game against the fracture (with the 3.5% tolerance) and the token,
and the AUROC on the test films says whether the model learned the fracture or the token (chance: 0.5).

Usage: python benchmarks/guided_shortcut.py [--seeds 5] [--loss point --loss outside --loss layercam] [--weight 1]
"""

from __future__ import annotations

import argparse
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from xray_xai.audit import scores
from xray_xai.models.guidance import NO_MASK, GuideSpec, make_guide
from xray_xai.sdk import Preprocessing, Tags, TorchModel

SIZE = 48


class ShortcutNet(TorchModel):
    """Three conv stages (each halves the side: a 6 x 6 map at 48 px) -> global average pool -> linear."""

    name = "shortcut-net"
    description = "benchmark model: 3 conv+BN stages, GAP, linear"
    tags = Tags(differentiable=True, has_linear_head=True, has_target_layer=True)
    target_layer = "backbone.stage3"
    feature_layer = "backbone.stage3"
    default_preprocessing = Preprocessing(name="phantom-48", input_size=SIZE, channels=1, normalize="none")

    def __init__(self, *, image_size: int = SIZE, widths: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__(image_size=image_size)
        stages: list[tuple[str, nn.Module]] = []
        cin = 1
        for i, w in enumerate(widths, start=1):
            block = nn.Sequential(
                nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                nn.MaxPool2d(2),
            )  # fmt: skip
            stages.append((f"stage{i}", block))
            cin = w
        self.backbone = nn.Sequential(OrderedDict(stages))
        self.classifier = nn.Linear(cin, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x).mean(dim=(2, 3))


@dataclass
class Films:
    """Phantoms with their labels, fracture masks and token masks."""

    x: torch.Tensor  # (n, 1, S, S)
    y: torch.Tensor  # (n,) float
    fracture: np.ndarray  # (n, S, S) bool
    token: np.ndarray  # (n, S, S) bool


def shortcut_films(n: int, seed: int, *, token_follows_label: bool) -> Films:
    """``n`` phantoms, every second one fractured; the token on the fractured films only (``token_follows_label``)
    or on every film."""
    from xray_xai_plugins.datasets._phantoms import ViewParams, burn_token, phantom

    rng = np.random.default_rng(seed)
    xs, ys, fractures, tokens = [], [], [], []
    for i in range(n):
        label = i % 2
        vp = ViewParams(SIZE, SIZE, rotation=float(rng.uniform(-15, 15)),
                        marker_corner=str(rng.choice(["tl", "tr", "bl", "br"])))  # fmt: skip
        region = ("forearm", "humerus")[(i // 2) % 2]
        img, masks = phantom(region, rng, SIZE, abnormality="fracture" if label else None, contrast=6.0,
                             view_params=vp)  # fmt: skip
        img = np.array(img, dtype=np.float32)
        token = np.zeros((SIZE, SIZE), bool)
        if label or not token_follows_label:
            token, _ = burn_token(img, rng)
        xs.append(img)
        ys.append(label)
        fractures.append(masks["abnormality"])
        tokens.append(token)
    x = torch.tensor(np.stack(xs))[:, None]
    return Films(x, torch.tensor(ys, dtype=torch.float32), np.stack(fractures), np.stack(tokens))


def train(films: Films, seed: int, guide: GuideSpec | None, epochs: int = 12) -> ShortcutNet:
    """Adam 3e-3, batches of 32, every other epoch flipped; with ``guide`` the term on the fractured films."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ShortcutNet()
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        term = make_guide(guide, model) if guide is not None else None
        masks = torch.tensor(films.fracture.astype(np.float32))
        masks[films.y == 0] = NO_MASK
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(films.x))
            for i in range(0, len(perm), 32):
                idx = perm[i : i + 32]
                xb, mb = films.x[idx], masks[idx]
                if epoch % 2:
                    xb, mb = torch.flip(xb, dims=[3]), torch.flip(mb, dims=[2])
                if term is not None:
                    xb = term.prepare(xb)
                logits = model(xb)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, films.y[idx])
                if term is not None:
                    loss = loss + term.term(logits, mb, xb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        if term is not None:
            term.close()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def score(model: ShortcutNet, test: Films) -> dict[str, float]:
    """AUROC on the test films; over the fractured test films, the pointing game of the last layer's Grad-CAM and of
    the default explainer (``layercam``, stride 4) on the fracture (3.5% tolerance) and on the token."""
    from sklearn.metrics import roc_auc_score

    import xray_xai

    with torch.no_grad():
        auroc = float(roc_auc_score(test.y.numpy(), model.predict_proba(test.x).numpy()))
    pos = test.y.numpy() == 1
    fractured = test.x[torch.from_numpy(pos)]
    tol = scores.tolerance_px(SIZE)
    out = {"auroc": auroc}
    for method, prefix in (("gradcam", ""), ("layercam", "layercam_")):
        maps = xray_xai.get_explainer(method)().explain(model, fractured).maps
        out[f"{prefix}pointing_fracture"] = float(
            np.nanmean(scores.pointing_game(maps, test.fracture[pos], tolerance=tol))
        )
        out[f"{prefix}pointing_token"] = float(np.nanmean(scores.pointing_game(maps, test.token[pos])))
    return out


def compare(seeds: range, guide: GuideSpec) -> dict[str, dict[str, float]]:
    """Unguided vs guided, each metric averaged over the seeds (same films, same initial weights per seed)."""
    train_films = shortcut_films(256, 0, token_follows_label=True)
    test_films = shortcut_films(64, 1, token_follows_label=False)
    rows: dict[str, list[dict[str, float]]] = {"unguided": [], "guided": []}
    for seed in seeds:
        rows["unguided"].append(score(train(train_films, seed, None), test_films))
        rows["guided"].append(score(train(train_films, seed, guide), test_films))
    return {k: {m: float(np.mean([r[m] for r in v])) for m in v[0]} for k, v in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="models per arm (seeds 0..N-1)")
    parser.add_argument("--loss", action="append", help="guide loss (repeat; default: point and outside)")
    parser.add_argument("--weight", type=float, default=1.0)
    args = parser.parse_args()
    print(
        "| guide loss | weight | model | AUROC (token says nothing) | `gradcam`: pointing on fracture (3.5%) | "
        "on token | `layercam`: pointing on fracture (3.5%) | on token |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for loss in args.loss or ["point", "outside"]:
        t0 = time.perf_counter()
        result = compare(range(args.seeds), GuideSpec(source="boxes", loss=loss, weight=args.weight))
        for arm, m in result.items():
            print(f"| {loss} | {args.weight:g} | {arm} | {m['auroc']:.2f} | {m['pointing_fracture']:.2f} | "
                  f"{m['pointing_token']:.2f} | {m['layercam_pointing_fracture']:.2f} | "
                  f"{m['layercam_pointing_token']:.2f} |", flush=True)  # fmt: skip
        print(f"<!-- {loss}: {time.perf_counter() - t0:.0f} s -->")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
