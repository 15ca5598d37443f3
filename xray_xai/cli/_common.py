"""Helpers shared by the command modules: error reporting, JSON output, ``--param`` parsing."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import click

from xray_xai import api
from xray_xai.errors import XrayXaiError, one_line

__all__ = [
    "CACHE_HELP",
    "MODEL_HELP",
    "STRICT_HELP",
    "announce_models",
    "echo_json",
    "echo_provenance",
    "handle_errors",
    "param_option",
    "parse_or_bad_parameter",
    "print_table",
    "refuse_on_ray",
]

#: ``--model`` of the commands that run one model (evaluate, predict, cluster): the rule of models/resolve.py
MODEL_HELP = "Shipped model (fracatlas-lite0), model name (newest trained in the store) or checkpoint path."

#: ``--strict`` of the commands that read films (train, evaluate, predict, explain, cluster, audit).
STRICT_HELP = (
    "Skip films whose JPEG/PNG stream ends early even when little is missing (by default such a film is read, "
    "its missing rows black, and listed with the damage in warnings.csv)."
)

#: ``--cache`` of the commands that read films for one model (train, evaluate).
CACHE_HELP = (
    "Prepared films (`xray-xai prepare`): auto: those under $XRAY_XAI_HOME/cache/films, or an existing cache folder; "
    "films not prepared yet are prepared first. Films are then read as 8-bit levels (at most half a grey level from "
    "the decoded film), so results differ slightly from off, which decodes every film."
)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn :class:`XrayXaiError` (and a few OS errors) into one line on stderr and exit code 1, a malformed option
    value (:class:`xray_xai.api.ParamError`) into a usage error (exit code 2), Ctrl+C into exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except api.ParamError as exc:
            raise click.UsageError(one_line(exc)) from None
        except (XrayXaiError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (numpy scalars and paths become plain values)."""
    click.echo(api.to_json(data))


def parse_or_bad_parameter(parse: Callable[[], Any], hint: str = "'--param'") -> Any:
    """Run ``parse`` (an api parser); its :class:`~xray_xai.api.ParamError` becomes a one-line click.BadParameter."""
    try:
        return parse()
    except api.ParamError as exc:
        raise click.BadParameter(one_line(exc), param_hint=hint) from None


def param_option(ctx: click.Context, param: click.Parameter, value: Iterable[str]) -> dict[str, Any]:
    """Callback for ``KEY=VALUE`` options (``--param``, ``-o``): a dict, values as JSON when they parse."""
    return dict(parse_or_bad_parameter(lambda: api.parse_params(value), hint=f"'{param.opts[-1]}'"))


#: option names of the API whose flag is not simply ``--name-with-dashes``
_FLAGS = {"select_k_range": "--select-k", "on": "--on explanations"}


def refuse_on_ray(command: Literal["explain", "cluster"], **options: Any) -> None:
    """A usage error naming the flags that ``--backend ray`` of ``command`` cannot honour (see
    :func:`xray_xai.api.ray_unsupported`)."""
    bad = api.ray_unsupported(command, **options)
    if bad:
        flags = [_FLAGS.get(name, "--" + name.replace("_", "-")) for name in bad]
        raise click.UsageError(f"{', '.join(flags)} only work with --backend local")


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, title: str | None = None, console: Any = None
) -> None:
    """A table on stdout that stays readable whatever the width: never a header or a name split mid-word.

    On a terminal: a rich table whose columns wrap at spaces only (each column at least as wide as its longest word;
    cells may hold rich markup). Piped or redirected (stdout not a terminal, e.g. ``| less``, ``> file``, CI), or on
    a terminal too narrow for whole words: plain rows, columns aligned with two spaces, never wrapped, so ``grep``
    and ``cut`` see one line per row. Rich decides what a terminal is (``FORCE_COLOR``, ``COLUMNS`` are honoured);
    ``console`` (a rich Console) replaces the default one.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    body = [[str(c) for c in row] for row in rows]
    out = console or Console()
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    longest = []
    for i, header in enumerate(headers):
        words = [header, *(Text.from_markup(r[i]).plain for r in body if i < len(r))]
        longest.append(max((len(w) for cell in words for w in cell.split()), default=1))
        table.add_column(header, overflow="ellipsis", min_width=longest[-1])
    for row in body:
        table.add_row(*row)
    # rich squeezes columns below min_width when the table cannot fit: then words would break, so print plain rows
    # (columns are two characters apart in this box: one of padding, one separator)
    fits = sum(longest) + 2 * (len(headers) - 1) <= out.width
    if fits and out.is_terminal:
        out.print(table)
        return
    # piped, or too narrow for whole words: plain aligned rows, one line each, never wrapped
    plain = [[Text.from_markup(c).plain for c in row] for row in body]
    widths = [max([len(h), *(len(r[i]) for r in plain if i < len(r))]) for i, h in enumerate(headers)]
    echo = (
        click.echo if console is None else (lambda line: out.print(line, markup=False, highlight=False, soft_wrap=True))
    )
    if title:
        echo(title)
    for cells in (list(headers), ["-" * w for w in widths], *plain):
        echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip())


def announce_models(models: Any, **films: Any) -> list[str]:
    """Warn on stderr, before any work, for each model trained on synthetic phantoms that is given films that are not
    phantoms; return each model's provenance line (:func:`xray_xai.api.provenance`) for the command's summary.
    ``models``: the specs of ``--model`` (or one loaded model); ``films``: what the command reads (``dataset``,
    ``data_root``, ``inputs``, ``checkpoint``), as :func:`xray_xai.api.describe_models` takes them."""
    specs = list(models) if isinstance(models, list | tuple) else [models]
    provs, warnings = api.describe_models(specs, **films)
    for text in warnings:
        click.secho(f"warning: {text}", err=True, fg="red", bold=True)
    return [str(p["short"]) for p in provs]


def echo_provenance(lines: Iterable[str]) -> None:
    """The models' provenance at the end of a command's summary: ``model: NAME [fp]: trained on ..., AUROC ...``."""
    for line in lines:
        click.echo(f"model: {line}")
