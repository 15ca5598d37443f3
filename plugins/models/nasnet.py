"""NASNet-A Mobile (4 @ 1056) with one logit: our own implementation from the paper, trained from scratch.

Zoph, Vasudevan, Shlens, Le (2018), "Learning Transferable Architectures for Scalable Image Recognition", CVPR.
timm ships only NASNet-A *Large*, and the one PyTorch port of the Mobile model (Cadene's ``pretrainedmodels``) has
been unmaintained since 2018, so the network is written here from the paper (Fig. 2 and 4, Table 2, appendix A.4)
and from the cell definitions published with it. What is built:

* the ImageNet stem: a 3x3 convolution, stride 2, no padding, 32 filters + BatchNorm, then two *reduction* cells
  with F/4 and F/2 filters (F = 1056 / 24 = 44);
* three stacks of N = 4 *normal* cells with F, 2F and 4F filters, a reduction cell before the second and the
  third stack; a normal cell concatenates 6 states (6 x 4F = 1056 maps at the end), a reduction cell 4;
* each cell reads the two previous cells' outputs: ``h`` (ReLU - 1x1 conv - BN of the last output) and ``p`` (the one
  before, made to fit: a *factorised reduction* when it is twice as large, a 1x1 projection when its width differs);
* five blocks per cell, each the sum of two operations on earlier states: ``sep3/5/7`` (ReLU - depthwise kxk -
  pointwise - BN, twice; "separable_kxk_2"), ``avg3`` (average pool, padding not counted, as TensorFlow's SAME),
  ``max3``, ``id``. In a reduction cell the operations that read ``h`` or ``p`` have stride 2;
* a final ReLU (``backbone.relu``): the map that global average pooling turns into the 1056 features, and the
  target layer of CAM methods.

Choices that differ from the published *training* set-up, not from the architecture: no auxiliary head and no
drop-path (the Mobile model was trained without drop-path; the auxiliary head only helps training), no dropout
before the classifier (our head's ``dropout`` applies to hidden layers), BatchNorm eps 1e-3 as in the paper's code
but torch's momentum 0.1 (TensorFlow's decay 0.9997 leaves the running statistics near their initial values after a
short from-scratch run). Padding is symmetric (k // 2) where TensorFlow's SAME pads one more pixel at the bottom/right
for stride 2: the sizes are the same (ceil(H / 2) per reduction), only the sampling grid moves by one pixel, which
matters for ported weights only, and none exist here.

With a 1000-class classifier the network has 5,289,978 parameters (paper: 5.3 M; 5,326,716 with the BatchNorm
running statistics) and 563.6 M multiply-adds at 224 px (paper: 564 M; convolutions and classifier, counted with
``torch.utils.flop_counter``); with our one-logit head, 4,234,035 parameters. ``tests/test_nasnet.py`` checks both.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xray_xai.errors import PluginError
from xray_xai.sdk import BackboneModel, Preprocessing, Tags

__all__ = ["NORMAL_CELL", "REDUCTION_CELL", "CellSpec", "NASNetATrunk", "NasNetMobile"]


class CellSpec(NamedTuple):
    """A NASNet cell: five blocks ``((op, input), (op, input))`` over states ``[h, p, block0, ..., block4]``, the
    states concatenated into the output, and whether the operations on ``h`` and ``p`` have stride 2."""

    blocks: tuple[tuple[tuple[str, int], tuple[str, int]], ...]
    concat: tuple[int, ...]
    reduction: bool


#: NASNet-A normal cell (paper Fig. 4, left); state 0 is h_i, state 1 is h_{i-1}
NORMAL_CELL = CellSpec(
    blocks=(
        (("sep5", 0), ("sep3", 1)),
        (("sep5", 1), ("sep3", 1)),
        (("avg3", 0), ("id", 1)),
        (("avg3", 1), ("avg3", 1)),
        (("sep3", 0), ("id", 0)),
    ),
    concat=(1, 2, 3, 4, 5, 6),
    reduction=False,
)

#: NASNet-A reduction cell (paper Fig. 4, right)
REDUCTION_CELL = CellSpec(
    blocks=(
        (("sep5", 0), ("sep7", 1)),
        (("max3", 0), ("sep7", 1)),
        (("avg3", 0), ("sep5", 1)),
        (("id", 3), ("avg3", 2)),
        (("sep3", 2), ("max3", 0)),
    ),
    concat=(3, 4, 5, 6),
    reduction=True,
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    """ReLU - 1x1 conv - BN: how a cell adapts an input to its width."""
    return nn.Sequential(nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), _bn(cout))


class SeparableStack(nn.Module):
    """``separable_kxk_2``: (ReLU - depthwise kxk - pointwise 1x1 - BN) twice; only the first may have stride 2."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.layers = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(cin, cin, kernel, stride=stride, padding=pad, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
            _bn(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, kernel, padding=pad, groups=cout, bias=False),
            nn.Conv2d(cout, cout, 1, bias=False),
            _bn(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FactorizedReduction(nn.Module):
    """Halves the resolution without losing a pixel: two 1x1 convs on the even and on the odd pixel grid (the
    second shifted by one pixel, zero padded at the bottom/right), concatenated, then BN. Input already ReLU'd."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.path1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.path2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.path1(x[:, :, ::2, ::2]), self.path2(shifted[:, :, ::2, ::2])], dim=1))


def _operation(op: str, cin: int, cout: int, stride: int) -> nn.Module:
    if op.startswith("sep"):
        return SeparableStack(cin, cout, int(op[3:]), stride)
    if cin != cout:  # never happens in NASNet-A: pools and identities read states already cout wide
        raise PluginError(f"NASNet cell: operation {op!r} on {cin} maps cannot give {cout}")
    if op == "avg3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if op == "max3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if op == "id" and stride == 1:
        return nn.Identity()
    raise PluginError(f"NASNet cell: unknown operation {op!r} (stride {stride})")


class Cell(nn.Module):
    """One NASNet-A cell of ``filters`` maps per state. ``prev`` says how ``p`` (the output before the last) is
    made to fit: ``None`` (there is none: ``p`` is the last output itself, the first stem cell), ``"reduce"``
    (``p`` has twice the resolution), ``"project"`` (another width) or ``"same"``."""

    def __init__(self, spec: CellSpec, c_last: int, c_prev: int, filters: int, prev: str | None) -> None:
        super().__init__()
        self.spec = spec
        self.prev_mode = prev
        if prev == "reduce":
            self.adjust: nn.Module = nn.Sequential(nn.ReLU(), FactorizedReduction(c_prev, filters))
        elif prev == "project":
            self.adjust = _conv_bn(c_prev, filters)
        else:
            self.adjust = nn.Identity()
        c_p = c_last if prev is None else filters
        self.conv_in = _conv_bn(c_last, filters)
        widths = [filters, c_p] + [filters] * len(spec.blocks)
        ops = []
        for (op_a, in_a), (op_b, in_b) in spec.blocks:
            for op, src in ((op_a, in_a), (op_b, in_b)):
                stride = 2 if spec.reduction and src < 2 else 1
                ops.append(_operation(op, widths[src], filters, stride))
        self.ops = nn.ModuleList(ops)
        self.out_channels = filters * len(spec.concat)

    def forward(self, last: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        states = [self.conv_in(last), self.adjust(last if prev is None else prev)]
        for i, ((_, in_a), (_, in_b)) in enumerate(self.spec.blocks):
            states.append(self.ops[2 * i](states[in_a]) + self.ops[2 * i + 1](states[in_b]))
        return torch.cat([states[i] for i in self.spec.concat], dim=1)


def _cell_plan(repeats: int, filters: int) -> list[tuple[str, CellSpec, int]]:
    """(name, cell, filters) in order: two stem reduction cells, then 3 stacks of ``repeats`` normal cells with a
    reduction cell between stacks (the names of the paper's code: cell_stem_0, cell_0, reduction_cell_0...)."""
    plan = [("cell_stem_0", REDUCTION_CELL, filters // 4), ("cell_stem_1", REDUCTION_CELL, filters // 2)]
    index = 0
    for stack in range(3):
        if stack > 0:
            plan.append((f"reduction_cell_{stack - 1}", REDUCTION_CELL, filters * 2**stack))
        for _ in range(repeats):
            plan.append((f"cell_{index}", NORMAL_CELL, filters * 2**stack))
            index += 1
    return plan


class NASNetATrunk(nn.Module):
    """NASNet-A with the ImageNet stem, ``repeats`` normal cells per stack and ``penultimate_filters`` output maps
    (Mobile: 4 @ 1056; the paper's other ImageNet models differ in their stem too). Output: ReLU'd map at 1/32."""

    def __init__(
        self, repeats: int = 4, penultimate_filters: int = 1056, stem_filters: int = 32, in_channels: int = 3
    ) -> None:
        super().__init__()
        if penultimate_filters % 24:
            raise PluginError(f"NASNet-A: penultimate_filters must be a multiple of 24, got {penultimate_filters}")
        self.conv0 = nn.Sequential(nn.Conv2d(in_channels, stem_filters, 3, stride=2, bias=False), _bn(stem_filters))
        # (channels, resolution level) of the last two outputs; None: no output before the stem convolution
        last: tuple[int, int] = (stem_filters, 1)
        before: tuple[int, int] | None = None
        self.cell_names: list[str] = []
        for name, spec, filters in _cell_plan(repeats, penultimate_filters // 24):
            if before is None:
                mode = None
            elif before[1] != last[1]:
                mode = "reduce"
            else:
                mode = "project" if before[0] != filters else "same"
            cell = Cell(spec, last[0], before[0] if before else last[0], filters, mode)
            self.add_module(name, cell)
            self.cell_names.append(name)
            before, last = last, (cell.out_channels, last[1] + int(spec.reduction))
        self.relu = nn.ReLU()
        self.out_channels = last[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prev: torch.Tensor | None = None
        last = self.conv0(x)
        for name in self.cell_names:
            prev, last = last, getattr(self, name)(last, prev)
        return self.relu(last)


def init_nasnet(module: nn.Module) -> None:
    """He initialisation (fan out) of every convolution, BatchNorm at identity: the usual from-scratch start."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class NasNetMobile(BackboneModel):
    """NASNet-A Mobile (4 @ 1056, 224 px), our implementation, trained from scratch: no ImageNet weights exist."""

    name = "nasnet-mobile"
    description = "NASNet-A Mobile (4 @ 1056, own implementation of Zoph et al. 2018), from scratch, all layers"
    tags: ClassVar[Tags] = Tags(differentiable=True, has_linear_head=True, has_target_layer=True)
    default_preprocessing: ClassVar[Preprocessing] = Preprocessing(
        name="resize-224-imagenet", input_size=224, mode="resize"
    )
    target_layer = "backbone.relu"

    def __init__(self, *, pretrained: bool = False, **options: Any) -> None:
        if pretrained:
            raise PluginError(
                "model 'nasnet-mobile' has no pretrained weights (no maintained package publishes NASNet-A Mobile "
                "ImageNet weights for it); train it from scratch with --no-pretrained"
            )
        super().__init__(pretrained=False, **options)
        self.backbone = NASNetATrunk(repeats=4, penultimate_filters=1056, stem_filters=32)
        init_nasnet(self.backbone)
        self._finish(self.backbone.out_channels)
