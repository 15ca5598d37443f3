"""Contract checks for model plugins, shipped so third-party authors run the same checks (sklearn ``check_estimator``).

    from xray_xai.testing.models import check_model
    check_model(MyModel, image_size=64)

Each check raises ``AssertionError`` with a message naming the model and what is wrong.
"""

from __future__ import annotations

from typing import Any

from xray_xai.sdk.interfaces import Model, Preprocessing

__all__ = ["check_model", "example_batch"]


def example_batch(pre: Preprocessing, batch: int = 2, seed: int = 0) -> Any:
    """A seeded random batch shaped like ``pre``'s inputs ``(B, C, S, S)``, values like normalised films."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, pre.channels, pre.input_size, pre.input_size, generator=g)
    if pre.normalize == "imagenet":
        mean = torch.tensor(pre.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(pre.std, dtype=x.dtype).view(-1, 1, 1)
        x = (x - mean) / std
    return x


def _check_preprocessing(name: str, pre: Any, image_size: int | None) -> None:
    assert isinstance(pre, Preprocessing), f"{name}: preprocessing is {type(pre).__name__}, not Preprocessing"
    assert pre.input_size > 0 and pre.channels in (1, 3), f"{name}: bad preprocessing {pre}"
    assert pre.mode in ("center-crop", "resize", "letterbox"), f"{name}: unknown preprocessing mode {pre.mode!r}"
    assert pre.normalize in ("imagenet", "minmax", "none"), f"{name}: unknown normalisation {pre.normalize!r}"
    if pre.normalize == "imagenet":
        assert len(pre.mean) == len(pre.std) == pre.channels, f"{name}: mean/std do not match {pre.channels} channels"
        assert all(s > 0 for s in pre.std), f"{name}: std must be positive"
    if pre.mode == "center-crop":
        sizes = (pre.crop, getattr(pre, "resize", None))
        assert any(v is not None and v > 0 for v in sizes), f"{name}: center-crop needs a crop or resize size"
    if image_size is not None:
        assert pre.input_size == image_size, f"{name}: image_size={image_size} gave input_size {pre.input_size}"
    assert Preprocessing.from_dict(pre.to_dict()) == pre, f"{name}: preprocessing does not round-trip via dict"


def check_model(model: Model | type[Model], image_size: int = 64, **options: Any) -> Model:
    """Run the model contract on ``model`` (a class, built with ``image_size`` and ``options``, or an instance).

    Torch models: ``forward`` gives ``(B,)`` logits, ``predict_proba`` is in [0, 1] and equals ``sigmoid(forward)``,
    ``features`` is ``(B, D)`` with ``D == classifier.in_features``, ``feature_layer``'s output equals the features,
    ``target_layer``'s output is a 4-D map whose channel count equals the pooled width when the tags claim a linear
    head, the trainable parameters are exactly the regime's, and ``config()`` rebuilds an identical model.
    Non-torch models: probabilities and features shapes, and ``config()`` round-trip. Returns the instance.
    """
    import torch

    cls: Any = model if isinstance(model, type) else type(model)
    name = getattr(cls, "name", "") or cls.__name__
    inst: Any = cls(image_size=image_size, **options) if isinstance(model, type) else model
    config = _check_declarations(name, inst, image_size if isinstance(model, type) else None)
    built: Model = inst
    x = example_batch(inst.preprocessing, batch=2)
    if not isinstance(inst, torch.nn.Module):
        _check_plain_outputs(name, inst, x)
        return built
    inst.eval()
    logits, feats = _check_torch_outputs(name, inst, x)
    _check_named_layers(name, inst, x, feats)
    _check_regime(name, inst)
    _check_rebuild(name, cls, inst, config, x, logits)
    _check_input_gradient(name, inst, x)
    return built


def _check_declarations(name: str, inst: Any, image_size: int | None) -> dict[str, Any]:
    """Plugin metadata, preprocessing, and a JSON-ready ``config()`` (returned)."""
    import json

    assert isinstance(inst, Model), f"{name}: not an xray_xai.sdk.Model"
    assert inst.name, f"{name}: empty name"
    assert inst.description, f"{name}: empty description"
    _check_preprocessing(name, inst.preprocessing, image_size)
    config = inst.config()
    assert isinstance(config, dict), f"{name}: config() must return a dict"
    json.dumps(config)  # the sidecar stores it as JSON
    return config


def _check_plain_outputs(name: str, inst: Any, x: Any) -> None:
    """A model that is no torch module: probabilities in [0, 1] of shape ``(B,)`` and ``(B, D)`` features."""
    if not inst.fitted:
        return  # an unfitted classical model has nothing more to check
    proba = inst.predict_proba(x)
    assert proba.shape == (2,), f"{name}: predict_proba gave shape {tuple(proba.shape)}, expected (2,)"
    assert bool(((proba >= 0) & (proba <= 1)).all()), f"{name}: probabilities outside [0, 1]"
    feats = inst.features(x)
    assert feats.ndim == 2 and feats.shape[0] == 2, f"{name}: features shape {tuple(feats.shape)}"


def _check_torch_outputs(name: str, inst: Any, x: Any) -> tuple[Any, Any]:
    """Logits ``(B,)``, ``predict_proba == sigmoid(forward)``, a ``Linear(D, 1)`` classifier fed by the features."""
    import torch

    assert inst.tags.differentiable, f"{name}: a torch model should be tagged differentiable"
    with torch.no_grad():
        logits = inst(x)
    assert logits.shape == (2,), f"{name}: forward gave shape {tuple(logits.shape)}, expected (2,)"
    assert bool(torch.isfinite(logits).all()), f"{name}: non-finite logits"
    proba = inst.predict_proba(x)
    assert proba.shape == (2,) and bool(((proba >= 0) & (proba <= 1)).all()), f"{name}: bad predict_proba"
    assert torch.allclose(proba, torch.sigmoid(logits)), f"{name}: predict_proba is not sigmoid(forward)"
    classifier = inst.classifier
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == 1, (
        f"{name}: classifier not Linear(D, 1)"
    )
    feats = inst.features(x)
    assert feats.shape == (2, classifier.in_features), (
        f"{name}: features {tuple(feats.shape)} but classifier.in_features is {classifier.in_features}"
    )
    return logits, feats


def _check_named_layers(name: str, inst: Any, x: Any, feats: Any) -> None:
    """The named layers exist; the feature layer gives the features; the target layer gives a 4-D map (whose
    average is the features when the tags claim a linear head)."""
    import torch

    tags = inst.tags
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for key in ("target_layer", "feature_layer"):
        layer_name = getattr(inst, key, "")
        if key == "target_layer" and not tags.has_target_layer:
            continue
        assert layer_name, f"{name}: {key} is empty"
        try:
            module = inst.get_submodule(layer_name)
        except AttributeError:
            raise AssertionError(f"{name}: {key} {layer_name!r} is not a submodule") from None

        def hook(_m: Any, _i: Any, out: Any, key: str = key) -> None:
            captured[key] = out

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            inst(x)
    finally:
        for h in handles:
            h.remove()
    if "feature_layer" in captured:
        assert torch.allclose(captured["feature_layer"], feats), f"{name}: feature_layer output differs from features"
    if "target_layer" in captured:
        fmap = captured["target_layer"]
        assert fmap.ndim == 4 and fmap.shape[0] == 2, f"{name}: target_layer output has shape {tuple(fmap.shape)}"
        if tags.has_linear_head:
            assert fmap.shape[1] == inst.classifier.in_features, (
                f"{name}: target map channels != classifier.in_features"
            )
            pooled = fmap.mean(dim=(2, 3))
            assert torch.allclose(pooled, feats, atol=1e-5), f"{name}: features are not the target map's average"


def _check_regime(name: str, inst: Any) -> None:
    """Exactly the parameters under ``trainable_prefixes`` are trainable (all when it is None), and some are."""
    prefixes = inst.trainable_prefixes
    for pname, p in inst.named_parameters():
        expected = prefixes is None or any(pname.startswith(pre) for pre in prefixes)
        assert p.requires_grad == expected, f"{name}: parameter {pname} requires_grad={p.requires_grad}"
    assert any(p.requires_grad for p in inst.parameters()), f"{name}: nothing is trainable"


def _check_rebuild(name: str, cls: Any, inst: Any, config: dict[str, Any], x: Any, logits: Any) -> None:
    """``config()`` rebuilds the same architecture, and with the same weights the same outputs (what the store does)."""
    import torch

    rebuilt: Any = cls(**config)
    assert rebuilt.config() == config, f"{name}: config() does not round-trip through the constructor"
    assert rebuilt.preprocessing == inst.preprocessing, f"{name}: rebuilt model has other preprocessing"
    rebuilt.load_state_dict(inst.state_dict())
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), logits), f"{name}: rebuilt model with the same weights gives other logits"


def _check_input_gradient(name: str, inst: Any, x: Any) -> None:
    """Gradients reach the input (saliency-style explainers need it); parameter gradients are cleared after."""
    xg = x.clone().requires_grad_(True)
    inst(xg).sum().backward()
    assert xg.grad is not None and bool(xg.grad.isfinite().all()), f"{name}: no finite input gradient"
    inst.zero_grad(set_to_none=True)
