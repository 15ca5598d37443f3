"""Whether a state dict fits a model's: missing, unexpected and differently shaped tensors.

One check for the two places that load weights into a built architecture (the store's loader and ``xray-xai
import``), so that both name the same problems the same way before ``load_state_dict`` would fail with torch's
multi-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StateFit", "state_fit"]


@dataclass(frozen=True)
class StateFit:
    """The mismatches of a file's tensors (``have``) against a model's (``want``), in the model's key order.

    ``shape_mismatch`` holds ``{"key", "file", "model"}`` with the shapes as lists (JSON-ready)."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {"missing": self.missing, "unexpected": self.unexpected, "shape_mismatch": self.shape_mismatch}

    def summary(self) -> str:
        """One line: how many of each kind, with the first of each as an example."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (e.g. {self.unexpected[0]})")
        if self.shape_mismatch:
            s = self.shape_mismatch[0]
            parts.append(
                f"{len(self.shape_mismatch)} of other shape "
                f"(e.g. {s['key']}: file {tuple(s['file'])}, model {tuple(s['model'])})"
            )
        return "; ".join(parts)


def state_fit(
    have: Mapping[str, Any], want: Mapping[str, Any], *, may_miss: Callable[[str], bool] | None = None
) -> StateFit:
    """Compare the tensors ``have`` (from a file) with ``want`` (a model's ``state_dict()``); keys for which
    ``may_miss`` is true are not reported missing (e.g. BatchNorm counters absent from files of older torch)."""
    return StateFit(
        missing=[k for k in want if k not in have and not (may_miss is not None and may_miss(k))],
        unexpected=[k for k in have if k not in want],
        shape_mismatch=[
            {"key": k, "file": list(have[k].shape), "model": list(want[k].shape)}
            for k in want
            if k in have and tuple(have[k].shape) != tuple(want[k].shape)
        ],
    )
