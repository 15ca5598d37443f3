"""Training augmentation of film tensors: random flips, rotation, shift and zoom (:class:`Augment`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["AUGMENTATIONS", "Augment"]

#: Training augmentation names accepted by :meth:`Augment.preset` (and ``xray-xai train --augment``).
AUGMENTATIONS: tuple[str, ...] = ("standard", "light", "none")


class Augment:
    """Training augmentation on film tensors ``(C, H, W)`` or ``(B, C, H, W)`` in [0, 1], before normalisation.

    Random horizontal/vertical flips, a rotation within ``+-degrees``, a shift of up to ``translate`` of the side and
    a zoom within ``scale``; uncovered corners are filled with ``fill`` (black). Draws come from the ``generator``
    passed to the call, else the one given here, else torch's global RNG (which DataLoader seeds per worker), so a
    seeded generator reproduces the same augmentation.
    """

    def __init__(
        self,
        hflip: float = 0.5,
        vflip: float = 0.5,
        degrees: float = 30.0,
        translate: float = 0.05,
        scale: tuple[float, float] = (0.9, 1.1),
        fill: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        if not (0.0 <= hflip <= 1.0 and 0.0 <= vflip <= 1.0):
            raise ValueError("flip probabilities must be in [0, 1]")
        if degrees < 0 or translate < 0 or not (0 < scale[0] <= scale[1]):
            raise ValueError("degrees and translate must be >= 0 and 0 < scale[0] <= scale[1]")
        self.hflip = float(hflip)
        self.vflip = float(vflip)
        self.degrees = float(degrees)
        self.translate = float(translate)
        self.scale = (float(scale[0]), float(scale[1]))
        self.fill = float(fill)
        self.generator = generator

    @classmethod
    def default(cls) -> Augment:
        """The MURA training recipe (lateral inversion, rotation up to 30 degrees) plus vertical flips, 5 % shifts
        and +-10 % zoom."""
        return cls()

    @classmethod
    def light(cls) -> Augment:
        """Flips and rotations within +-10 degrees, no shift or zoom: the usual recipe for fine-tuning a pretrained
        backbone, where strong geometry changes cost more than they regularise."""
        return cls(degrees=10.0, translate=0.0, scale=(1.0, 1.0))

    @classmethod
    def preset(cls, name: str) -> Augment | None:
        """``standard`` (:meth:`default`), ``light`` (:meth:`light`) or ``none``."""
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r}; expected one of {', '.join(AUGMENTATIONS)}")
        presets = {"standard": cls.default, "light": cls.light}
        return presets[name]() if name in presets else None

    def __repr__(self) -> str:
        return (
            f"Augment(hflip={self.hflip}, vflip={self.vflip}, degrees={self.degrees}, "
            f"translate={self.translate}, scale={self.scale}, fill={self.fill})"
        )

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        import torch

        if x.ndim == 4:
            return torch.stack([self(item, generator=generator) for item in x])
        if x.ndim != 3:
            raise ValueError(f"Augment expects (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        g = generator if generator is not None else self.generator
        u = torch.rand(6, generator=g).tolist()
        if u[0] < self.hflip:
            x = torch.flip(x, dims=[-1])
        if u[1] < self.vflip:
            x = torch.flip(x, dims=[-2])
        angle = (2 * u[2] - 1) * self.degrees
        h, w = x.shape[-2:]
        tx = round((2 * u[3] - 1) * self.translate * w)
        ty = round((2 * u[4] - 1) * self.translate * h)
        zoom = self.scale[0] + u[5] * (self.scale[1] - self.scale[0])
        if angle == 0 and tx == 0 and ty == 0 and zoom == 1.0:
            return x
        out = F.affine(
            x,
            angle=angle,
            translate=[tx, ty],
            scale=zoom,
            shear=[0.0, 0.0],
            interpolation=InterpolationMode.BILINEAR,
            fill=self.fill,
        )
        return torch.as_tensor(out)
