"""Testing with Concept Activation Vectors (TCAV; Kim et al., ICML 2018) of a film attribute, with captum.

The concept is a set of films that have the attribute (hardware, a burned-in marker); each random concept is a set of
the same size drawn from films without it (with the concept's share of abnormal films, so that the CAV separates the
attribute, not the label). For each of ``n_runs`` random concepts R_i a linear classifier on the activations of
``layer`` separates the concept from R_i (its normal is the CAV), and the TCAV score is the share of the input films
(abnormal films of the split analysed) whose abnormal logit grows along the CAV. Kim et al.'s test: the same scores
for CAVs of a random concept R_0 against each R_i are the null; a two-sided t-test of the concept's scores against
the random ones (scipy's ``ttest_ind``) says whether the concept matters to the logit (significant when p < alpha).

captum's ``TCAV`` does the activations, CAVs and scores (``captum.concept``). Its default classifier shuffles with
Python's global random state; :class:`_SeededLinear` (scikit-learn's logistic regression, a seeded split) keeps the
result reproducible from ``seed``. captum stores activations and CAVs with torch's pickle-based format under
``save_path``: that is a fresh private temporary folder removed afterwards, so nothing read back was written by
anyone but this run.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xray_xai.sdk.interfaces import Record

__all__ = ["TcavOptions", "concept_test", "default_layer"]


@dataclass(frozen=True)
class TcavOptions:
    """Sizes of a concept test: films per concept, random runs, input films, the layer (None:
    :func:`default_layer`), the seed and the significance level."""

    concept_size: int = 30
    n_runs: int = 5
    n_inputs: int = 30
    layer: str | None = None
    seed: int = 0
    alpha: float = 0.05


def default_layer(model: Any) -> str:
    """The layer CAVs are learnt on when none is named: three quarters of the way down the model's stages to its
    target layer. Not the target layer itself: when a linear head follows global pooling, the logit's gradient
    there is the head's weights for every film, so every film gets the same sign and TCAV scores are 0 or 1."""
    from xray_xai.sdk.layers import stage_layers

    target = str(getattr(model, "target_layer", "") or "")
    stages = stage_layers(model)
    if target in stages:
        stages = stages[: stages.index(target) + 1]
    if not stages:
        return target
    return stages[round(0.75 * (len(stages) - 1))]


def _seeded_classifier(seed: int) -> Any:
    from captum.concept._utils.classifier import Classifier

    class _SeededLinear(Classifier):
        """Logistic regression on flattened activations; a seeded 2:1 split gives the CAV's held-out accuracy."""

        def __init__(self) -> None:
            self._w: Any = None
            self._classes: list[int] = []

        def train_and_eval(self, dataloader: Any, test_split_ratio: float = 0.33, **_: Any) -> dict[str, Any]:
            import torch
            from sklearn.linear_model import LogisticRegression

            xs, ys = zip(*[(x, y) for x, y in dataloader], strict=True)
            x = torch.cat(xs).reshape(sum(len(v) for v in xs), -1).float().numpy()
            y = torch.cat(ys).numpy()
            order = np.random.default_rng(seed).permutation(len(y))
            n_test = int(test_split_ratio * len(y))
            test, train = order[:n_test], order[n_test:]
            lm = LogisticRegression(max_iter=2000, C=1.0).fit(x[train], y[train])
            acc = float((lm.predict(x[test]) == y[test]).mean()) if n_test else float("nan")
            w = torch.tensor(lm.coef_[0], dtype=torch.float32)
            self._w = torch.stack([-w, w])
            self._classes = [int(c) for c in lm.classes_]
            return {"accs": torch.tensor(acc)}

        def weights(self) -> Any:
            return self._w

        def classes(self) -> list[int]:
            return self._classes

    return _SeededLinear()


def _logit_module(model: Any) -> Any:
    from torch import nn

    class _AbnormalLogit(nn.Module):
        """The model's abnormal logit as a ``(B, 1)`` output, so captum's target is class 0."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> Any:
            return self.net(x).reshape(x.shape[0], -1)[:, :1]

    return _AbnormalLogit(model)


def _draw_sets(
    with_attr: Sequence[Record], without: Sequence[Record], opts: TcavOptions
) -> tuple[list[Record], list[list[Record]]]:
    """The concept films and ``n_runs + 1`` random concepts (label-matched to the concept, drawn with a seed)."""
    rng = np.random.default_rng(opts.seed)
    size = min(opts.concept_size, len(with_attr))
    concept = [with_attr[i] for i in sorted(rng.choice(len(with_attr), size, replace=False))]
    share = sum(int(r.label or 0) for r in concept) / size
    pos = [r for r in without if r.label == 1]
    neg = [r for r in without if r.label != 1]
    randoms = []
    for _ in range(opts.n_runs + 1):
        k_pos = min(len(pos), round(share * size))
        k_neg = min(len(neg), size - k_pos)
        pick = [pos[i] for i in rng.choice(len(pos), k_pos, replace=False)] if k_pos else []
        pick += [neg[i] for i in rng.choice(len(neg), k_neg, replace=False)] if k_neg else []
        randoms.append(pick)
    return concept, randoms


def concept_test(
    model: Any,
    with_attr: Sequence[Record],
    without: Sequence[Record],
    inputs: Sequence[Record],
    opts: TcavOptions | None = None,
) -> dict[str, Any]:
    """TCAV of the concept "films with the attribute" (``with_attr``) against random concepts from ``without``,
    scored on the abnormal logit of ``inputs`` (module docstring). Returns the scores, the CAV accuracies, the
    t-test and ``significant``; ``{"skipped": reason}`` when there are too few films."""
    from captum.concept import TCAV, Concept
    from scipy.stats import ttest_ind

    from xray_xai.data.loader import load_batch
    from xray_xai.sdk.layers import resolve_layer

    opts = opts or TcavOptions()
    if len(with_attr) < 5 or len(without) < 5 or not inputs or opts.n_runs < 2:
        return {"skipped": f"too few films: {len(with_attr)} with the attribute, {len(without)} without, "
                f"{len(inputs)} inputs (need 5, 5, 1) or fewer than 2 runs"}  # fmt: skip
    layer = resolve_layer(model, opts.layer or default_layer(model))
    concept_recs, random_recs = _draw_sets(with_attr, without, opts)
    pre = model.preprocessing
    pick = np.random.default_rng(opts.seed + 1).permutation(len(inputs))[: opts.n_inputs]
    x_in = load_batch([inputs[int(i)].path for i in sorted(pick)], pre)

    def concept(cid: int, name: str, recs: Sequence[Record]) -> Any:
        return Concept(cid, name, [load_batch([r.path for r in recs], pre)])

    concept_c = concept(0, "attribute", concept_recs)
    randoms = [concept(i + 1, f"random{i}", recs) for i, recs in enumerate(random_recs)]
    was_training = model.training
    model.eval()
    wrapped = _logit_module(model)
    try:
        with tempfile.TemporaryDirectory(prefix="xray-xai-tcav-") as tmp:
            tcav = TCAV(wrapped, [f"net.{layer}"], classifier=_seeded_classifier(opts.seed), save_path=tmp)
            experiments = [[concept_c, r] for r in randoms[1:]] + [[randoms[0], r] for r in randoms[1:]]
            cavs = tcav.compute_cavs(experiments)
            scores = tcav.interpret(x_in, experiments, target=0)
    finally:
        model.train(was_training)
    key = f"net.{layer}"
    sign = [float(scores[_key(e)][key]["sign_count"][0]) for e in experiments]
    accs = [_acc(cavs, e, key) for e in experiments]
    n = opts.n_runs
    concept_scores, random_scores = sign[:n], sign[n:]
    with warnings.catch_warnings():  # identical scores (all 1.0) make scipy warn about precision; the p stands
        warnings.simplefilter("ignore", RuntimeWarning)
        test = ttest_ind(concept_scores, random_scores)
    p = float(test.pvalue) if np.isfinite(test.pvalue) else 1.0
    return {
        "layer": layer,
        "n_concept": len(concept_recs),
        "n_random": [len(r) for r in random_recs],
        "n_inputs": int(x_in.shape[0]),
        "n_runs": n,
        "concept_scores": concept_scores,
        "random_scores": random_scores,
        "score": float(np.mean(concept_scores)),
        "score_sd": float(np.std(concept_scores, ddof=1)),
        "random_score": float(np.mean(random_scores)),
        "random_score_sd": float(np.std(random_scores, ddof=1)),
        "cav_accuracy": accs[:n],
        "random_cav_accuracy": accs[n:],
        "t": float(test.statistic) if np.isfinite(test.statistic) else None,
        "p": p,
        "alpha": opts.alpha,
        "significant": bool(p < opts.alpha),
        "direction": "raises" if np.mean(concept_scores) > np.mean(random_scores) else "lowers",
        "seed": opts.seed,
        "test": "two-sided t-test of TCAV scores, concept vs random CAVs (Kim et al. 2018)",
    }


def _key(concepts: Sequence[Any]) -> str:
    return "-".join(str(c.id) for c in concepts)


def _acc(cavs: Any, concepts: Sequence[Any], layer: str) -> float | None:
    cav = cavs.get(_key(concepts), {}).get(layer)
    stats = getattr(cav, "stats", None) or {}
    acc = stats.get("accs")
    return None if acc is None else float(acc)
