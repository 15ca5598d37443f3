"""``xray-xai import``: a classifier trained elsewhere into the store (:func:`xray_xai.api.import_model`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors, param_option
from xray_xai.errors import XrayXaiError, one_line


def _floats(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected numbers separated by commas, e.g. 0.5,0.5,0.5") from None


_PRE_KEYS = (
    "input_size", "mode", "resize", "crop", "mean", "std", "normalize", "channels", "eight_bit", "exif_orientation",
)  # fmt: skip


@click.command(name="import")
@click.argument("weights", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--arch", required=True, help="timm:<model>, torchvision:<model>, or a registered model plugin name.")
@click.option("--name", required=True, help="The name the model gets in the store (--model NAME everywhere).")
@click.option("--arch-option", "arch_options", multiple=True, callback=param_option, metavar="KEY=VALUE",
              help="Constructor option of the architecture, repeatable; values typed as JSON (bn_eps=1e-3, "
                   "drop_rate=0.2). bn_eps / bn_momentum are set on every BatchNorm layer.")  # fmt: skip
@click.option("--output", type=click.Choice(api.IMPORT_OUTPUTS), default="logit", show_default=True,
              help="What the original forward returned: logit, probability (sigmoid inside forward), softmax "
                   "(class scores of a softmax classifier) or softmax-probability.")  # fmt: skip
@click.option("--positive-index", type=int, default=1, show_default=True, help="Abnormal class of a softmax model.")
@click.option(
    "--num-classes", type=click.IntRange(min=1), help="Outputs of the last layer (default: read from WEIGHTS)."
)
@click.option("--input-size", type=click.IntRange(min=8), help="Input side in pixels (default 224).")
@click.option("--mode", type=click.Choice(["resize", "center-crop", "letterbox"]),
              help="resize: Resize((S, S)); center-crop: Resize(R) + CenterCrop(S), R from --resize; letterbox: "
                   "longer side to S, padded square. Default resize.")  # fmt: skip
@click.option(
    "--resize", type=click.IntRange(min=8), help="With --mode center-crop: shorter side resized to this first."
)
@click.option("--crop", type=click.IntRange(min=1), help="With --mode center-crop and no --resize: crop this many "
              "pixels of the film first, then resize to --input-size.")  # fmt: skip
@click.option("--mean", callback=_floats, help="Normalize mean, one value or one per channel (default ImageNet's).")
@click.option("--std", callback=_floats, help="Normalize std, one value or one per channel (default ImageNet's).")
@click.option("--normalize", type=click.Choice(["imagenet", "minmax", "none"]),
              help="imagenet: (x - mean) / std (default); minmax: each film to [0, 1]; none: x in [0, 1].")  # fmt: skip
@click.option(
    "--channels", type=click.Choice(["1", "3"]), help="Input channels; a grey film is repeated on 3 (default)."
)
@click.option("--eight-bit/--float-resize", "eight_bit", default=None,
              help="Resize films in 8 bits as torchvision's PIL transforms do (default), or in float32.")  # fmt: skip
@click.option("--exif-orientation/--stored-orientation", "exif_orientation", default=None,
              help="Turn films upright by their EXIF tag, or keep pixels as stored as PIL's Image.open does "
                   "(default).")  # fmt: skip
@click.option("--target-layer", help="Module for CAM methods (default: the last feature map, found automatically).")
@click.option("--trained-on", help="The data set the model was trained on, recorded as its provenance (e.g. mura).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write the checkpoint folder here instead of the store.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result (on a mismatch: every key listed).")
@handle_errors
def import_(weights: Path, arch: str, name: str, arch_options: dict[str, Any], as_json: bool, **options: Any) -> None:
    """Import a classifier trained elsewhere (a state dict or safetensors file) as a store checkpoint.

    The architecture is rebuilt (no weight download), key prefixes such as module. (DataParallel) are stripped,
    and every tensor must fit. A pickled whole model is refused without being run: re-save it with
    torch.save(model.state_dict(), PATH).

    \b
    Example:
      xray-xai import densenet.pth --arch torchvision:densenet169 --name mura-densenet --output probability
      xray-xai import net.pth --arch timm:efficientnet_lite0 --arch-option bn_eps=1e-3 --name fracture-net \\
          --output probability --mode center-crop --resize 146 --input-size 128 --mean 0.5 --std 0.5
    """
    pre_opts = {k: options.pop(k) for k in _PRE_KEYS}
    if pre_opts["channels"] is not None:
        pre_opts["channels"] = int(pre_opts["channels"])
    plugin = ":" not in arch
    pre = None if plugin and all(v is None for v in pre_opts.values()) else api.preprocessing(**pre_opts)
    try:
        result = api.import_model(weights, arch, name, arch_options=arch_options, preprocessing=pre, **options)
    except XrayXaiError as exc:
        details = getattr(exc, "details", None)
        if as_json and details is not None:
            echo_json({"error": one_line(exc), **details})
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(1)
        raise
    if as_json:
        echo_json(result.to_dict())
        return
    stripped = f", prefix {result.prefix_stripped!r} stripped" if result.prefix_stripped else ""
    layer = result.target_layer or "none found (gradient methods only; --target-layer NAME)"
    cam = " (CAM exact)" if result.cam_exact else ""
    click.echo(
        f"imported {result.name} from {weights.name} (sha256 {result.sha256[:12]}, {result.arch}, "
        f"{result.n_tensors} tensors{stripped}, {result.num_classes} output(s)) -> {result.checkpoint}; "
        f"target layer {layer}{cam}"
    )
