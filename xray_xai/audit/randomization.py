"""Cascading parameter randomisation (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A saliency method that explains the *model* must change its maps when the model's weights are destroyed. We
re-initialise the parameterised layers one after another from the output towards the input and recompute the maps
after each stage; maps that survive full randomisation describe the image (edges, brightness), not the model.

The original model is never touched: randomisation happens on one deep copy, which every stage mutates further.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = ["cascading_randomization", "layer_order", "randomize_module"]


def layer_order(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters, from input to output.

    The order is the order in which one forward pass on a dummy input calls them (hooks record it), which is the
    true data flow even where modules were registered in another order; modules the pass did not reach, or models
    whose forward fails on a dummy input, fall back to registration order.
    """
    import torch

    owners = [(n, m) for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if not owners:
        return []
    seen: list[str] = []
    handles = []

    def hook_for(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, _output: Any) -> None:
            if name not in seen:
                seen.append(name)

        return hook

    pre = getattr(model, "preprocessing", None)
    size = int(getattr(pre, "input_size", 64) or 64)
    channels = int(getattr(pre, "channels", 3) or 3)
    for name, module in owners:
        handles.append(module.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, channels, size, size))
    except Exception:  # a model with another input contract: registration order is the best we know
        seen = []
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    rest = [n for n, _ in owners if n not in seen]
    return seen + rest


def randomize_module(module: nn.Module, generator_seed: int, mode: Literal["reset", "normal"] = "reset") -> None:
    """Re-initialise the parameters a module owns directly (not its children's).

    ``"reset"`` calls ``reset_parameters()`` where the module has it (the layer's own initialiser: Kaiming for
    convolutions and linear layers; batch norm also forgets its running statistics); any parameter left unchanged by
    that (e.g. a fresh batch-norm weight that was already 1), and every parameter under ``"normal"``, is replaced by
    Gaussian noise with the parameter's own standard deviation (0.02 if that is zero). Seeded, global RNG untouched.
    """
    import torch

    params = dict(module.named_parameters(recurse=False))
    before = {k: p.detach().clone() for k, p in params.items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(generator_seed)
        with torch.no_grad():
            reset = getattr(module, "reset_parameters", None)
            if mode == "reset" and callable(reset):
                reset()
            elif mode not in ("reset", "normal"):
                raise ValueError(f"unknown randomisation mode {mode!r}; expected 'reset' or 'normal'")
            for k, p in module.named_parameters(recurse=False):
                if mode == "normal" or torch.equal(p, before[k]):
                    std = float(before[k].float().std()) if before[k].numel() > 1 else 0.0
                    if not std or not torch.isfinite(torch.tensor(std)):
                        std = 0.02
                    p.copy_(torch.randn_like(p) * std)


def cascading_randomization(
    model: Any,
    seed: int = 0,
    *,
    n_stages: int | None = None,
    mode: Literal["reset", "normal"] = "reset",
) -> Iterator[tuple[str, Any]]:
    """Yield ``(layer_name, randomised_copy)`` after each stage, randomising from the output layer down.

    Every stage randomises one more parameterised module (cumulatively). With ``n_stages``, the first stage is the
    output layer alone and the remaining layers are split into ``n_stages - 1`` groups of about equal size, so the
    last stage is always the fully randomised model; ``layer_name`` is then the deepest (closest to the input)
    module of the stage. The yielded model is one deep copy in eval mode that the next stage mutates further: copy
    it if you keep it. The original ``model`` is left bit-identical.

    Models without torch parameters (e.g. a scikit-learn pipeline) yield nothing.
    """
    import copy

    from torch import nn

    if not isinstance(model, nn.Module):
        return
    work = copy.deepcopy(model)
    work.eval()
    names = list(reversed(layer_order(work)))  # output first
    if not names:
        return
    modules = dict(work.named_modules())
    if n_stages is None or n_stages >= len(names):
        groups = [[n] for n in names]
    else:
        n_stages = max(1, int(n_stages))
        groups = [names[:1]]
        rest = names[1:]
        k = n_stages - 1
        if k > 0 and rest:
            bounds = [round(i * len(rest) / k) for i in range(k + 1)]
            groups += [rest[bounds[i] : bounds[i + 1]] for i in range(k) if bounds[i + 1] > bounds[i]]
        elif rest:
            groups[0] += rest
    done = 0
    for group in groups:
        for name in group:
            randomize_module(modules[name], seed * 1_000_003 + done, mode)
            done += 1
        yield group[-1], work
