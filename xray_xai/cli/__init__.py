"""The ``xray-xai`` command line. One click module per command group, imported only when its command runs.

Exit codes: 0 success, 1 a failure reported in one line on stderr, 2 a usage error (click's own).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

from xray_xai import __version__

__all__ = ["main"]

#: command name -> "module:attribute" under xray_xai.cli; imported lazily so that --help stays fast.
COMMANDS: dict[str, str] = {
    "plugins": "plugins:plugins",
    "synth": "data:synth",
    "data": "data:data",
    "prepare": "prepare:prepare",
    "train": "train:train",
    "evaluate": "train:evaluate",
    "predict": "train:predict",
    "calibrate": "calibrate:calibrate",
    "models": "train:models",
    "import": "import_:import_",
    "explain": "explain:explain",
    "cluster": "cluster:cluster",
    "audit": "audit:audit",
    "strata": "strata:strata",
    "leaderboard": "leaderboard:leaderboard",
    "demo": "demo:demo",
    "serve": "serve:serve",
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if self._spec_exists(n))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None or not self._spec_exists(cmd_name):
            return None
        module_name, attr = spec.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        command: click.Command = getattr(module, attr)
        return command

    @staticmethod
    def _spec_exists(cmd_name: str) -> bool:
        module_name = COMMANDS[cmd_name].split(":")[0]
        return importlib.util.find_spec(f"{__name__}.{module_name}") is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", prog_name="xray-xai")
def main(**_: Any) -> None:
    """Train, explain and audit classifiers of musculoskeletal radiographs.

    \b
    Example:
      xray-xai synth phantoms --n-studies 50 --seed 0
      xray-xai data phantoms
    """
    from xray_xai import api

    api.prepare_process()  # the process-wide tuning only the program's entry chooses (1.4x faster CPU training)
