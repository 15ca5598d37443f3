"""``xray-xai plugins``: every installed plugin of every kind."""

from __future__ import annotations

from typing import Literal

import click

from xray_xai import api
from xray_xai.cli._common import echo_json, handle_errors, print_table


@click.command()
@click.option("--kind", type=click.Choice(["model", "explainer", "clusterer", "dataset"]), help="Only this kind.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@handle_errors
def plugins(kind: Literal["model", "explainer", "clusterer", "dataset"] | None, as_json: bool) -> None:
    """List plugins with kind, name, providing package and version, description and tags.

    Plugins come from the entry-point groups xray_xai.models, xray_xai.explainers, xray_xai.clusterers and
    xray_xai.datasets; explainer families (xray_xai.explainer_families) add every method of captum and
    pytorch-grad-cam as captum:<Class> and grad-cam:<Class>, discovered in the installed versions; a library
    class that cannot explain one film's logit is listed as unsupported with the reason. Set
    XRAY_XAI_PLUGINS=pattern,... to load only some. A plugin that fails to import is listed with its error and
    does not stop the others.

    \b
    Example:
      xray-xai plugins --kind explainer
      xray-xai plugins --json | jq '.[] | select(.unsupported) | .name + ": " + .unsupported'
      xray-xai plugins --json | jq '.[] | select(.kind=="model") | .name'
    """
    infos = api.list_plugins(kind)
    if as_json:
        echo_json([i.to_dict() for i in infos])
        return
    from rich.markup import escape

    rows = []
    for i in infos:
        desc = f"[red]failed to load: {escape(i.error)}[/red]" if i.error else escape(i.description)
        if i.unsupported:
            desc = f"[yellow]unsupported: {escape(i.unsupported)}[/yellow]"
        rows.append([i.kind, i.name, f"{i.package} {i.version}", desc, ", ".join(i.tags)])
    print_table(("kind", "name", "package", "description", "tags"), rows)
    broken = [i for i in infos if i.error]
    if broken:
        click.echo(f"{len(broken)} plugin(s) failed to load: {', '.join(i.name for i in broken)}", err=True)
