"""How ``xray-xai train --nproc N`` starts torchrun, and how its processes report: the command keeps its raw
arguments to hand on, and an error every rank meets is reported once, by rank 0."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

import click

from xray_xai import api
from xray_xai.errors import XrayXaiError


class KeepsArgs(click.Command):
    """A command that keeps its raw arguments (``train --nproc N`` hands them on to each process it starts)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["raw_args"] = list(args)
        return super().parse_args(ctx, args)


def launch_if_asked(nproc: int | None, batch_size: int) -> None:
    """``--nproc N`` outside torchrun: start N processes of this command (without ``--nproc``) and exit with their
    status; under torchrun: check that it started N."""
    if nproc is None:
        return
    if "WORLD_SIZE" in os.environ:
        world = int(os.environ["WORLD_SIZE"])
        if nproc != world:
            raise click.BadParameter(f"{nproc} given, but torchrun started {world} processes", param_hint="'--nproc'")
        return
    if nproc == 1:
        return
    if batch_size % nproc:
        raise click.BadParameter(
            f"{batch_size} is the global batch; it must be divisible by --nproc {nproc}", param_hint="'--batch-size'"
        )
    sys.exit(api.launch_train(nproc, click.get_current_context().meta["raw_args"]))


@contextlib.contextmanager
def rank_zero_reports_first() -> Iterator[None]:
    """Under torchrun, a rank other than 0 that meets an error gives rank 0 a few seconds to report it first: an
    error every rank meets (a refused --resume...) is then one line, rank 0's, and torchrun stops the others."""
    try:
        yield
    except XrayXaiError:
        if os.environ.get("RANK", "0") != "0":
            time.sleep(5)
        raise
