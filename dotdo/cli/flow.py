"""`dotdo check | fmt | render`, and the `.flow` half of `dotdo run`: the language tooling.

`check` reports every problem of every file, not only the first; `render` draws any workflow,
Python or `.flow`, from the same graph the engine walks, and with `--run` draws the graph that
run pinned (not today's code) with its progress on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dotdo.cli.common import (
    FAILURE,
    USAGE,
    CliError,
    Db,
    allow_option,
    checked_id,
    cwd_importable,
    db_option,
    execute,
    import_module,
    opened,
    selected_db,
)
from dotdo.compiler.ir import Graph
from dotdo.compiler.overlay import run_overlay
from dotdo.compiler.render import Diagram, Overlay, render
from dotdo.dsl.flow.checker import check_files
from dotdo.dsl.flow.diagnostics import FlowError
from dotdo.dsl.flow.formatter import format_file
from dotdo.dsl.flow.loader import flow_diagram, load_flow
from dotdo.dsl.python.decorators import WorkflowDef
from dotdo.dsl.python.do import DO
from dotdo.engine.trust import stored_graph

__all__ = ["check", "fmt", "render_command", "resolve_flow"]

_FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv", ".mmd", ".mermaid")


def _split(target: str) -> tuple[Path, str]:
    path, _, name = target.partition(".flow")
    file = Path(path + ".flow")
    if not file.is_file():
        raise CliError(f"no such file: {file}", USAGE)
    return file, name.lstrip(":")


def _pick(file: Path, name: str, names: list[str]) -> str:
    if name:
        return name
    if len(names) != 1:
        shown = ", ".join(names) or "none"
        raise CliError(f"{file} has several workflows ({shown}): use {file}:NAME", USAGE)
    return names[0]


def resolve_flow(
    target: str, flow_modules: tuple[str, ...] = ()
) -> tuple[WorkflowDef[Any], type[DO]]:
    """`file.flow` (its only workflow) or `file.flow:name`, loaded with `flow_modules`
    allowed besides the file's own project."""
    file, name = _split(target)
    cwd_importable()  # for the modules its `use` and `import` lines name
    module = load_flow(file, flow_modules=flow_modules)
    name = _pick(file, name, list(module.workflows))
    return module[name], module.owner


def _graph_of(target: str, flow_modules: tuple[str, ...]) -> Graph | Diagram:
    if ".flow" in target:
        # Drawing needs the graphs only: compiled from the checked file, nothing imported.
        # A file of several workflows, named by no `:NAME`, is drawn whole.
        file, name = _split(target)
        diagram = flow_diagram(file, flow_modules=flow_modules)
        graphs = diagram.graphs
        if not name and len(graphs) > 1:
            return diagram
        name = _pick(file, name, list(graphs))
        if name not in graphs:
            known = ", ".join(graphs) or "none"
            raise CliError(f"{file} has no workflow {name!r} (it has: {known})", USAGE)
        return graphs[name]
    module_name, _, path = target.partition(":")
    class_path, _, method = path.rpartition(".")
    if not module_name or not class_path:
        raise CliError(
            f"bad target {target!r}: expected a .flow file or module:Class.method", USAGE
        )
    found: object = import_module(module_name)
    for part in class_path.split("."):
        found = getattr(found, part, None)
    workflows = getattr(found, "__dotdo_workflows__", {})
    if method not in workflows:
        raise CliError(f"{target} is not a @workflow of a DO class", USAGE)
    graph: Graph = workflows[method].graph
    return graph


async def _overlay(db: Db, run_id: str) -> tuple[Graph, Overlay]:
    """The run's pinned graph and how far it got, read from the store."""
    checked_id(run_id)
    async with opened(db, read_only=True) as engine:
        info = await engine.get_run(run_id)
        journal = await engine.journal(run_id)
        body = await engine.store.graph_body(info.graph_hash)
    graph = stored_graph(body, info.graph_hash, name=info.workflow, run_id=run_id)
    overlay = run_overlay(
        graph, status=info.status, node=info.node, finished=info.finished, journal=journal
    )
    return graph, overlay


async def _render(
    db: Db, target: str, out: Path, run_id: str | None, flow_modules: tuple[str, ...]
) -> int:
    if out.suffix.lower() not in _FORMATS:
        raise CliError(f"unknown diagram format {out.suffix!r}: use {', '.join(_FORMATS)}", USAGE)
    overlay = None
    graph: Graph | Diagram
    if run_id is not None:
        graph, overlay = await _overlay(db, run_id)
    else:
        graph = _graph_of(target, flow_modules)
    render(graph, out, overlay)
    click.echo(f"wrote {out}")
    return 0


async def _check(paths: list[Path], flow_modules: tuple[str, ...]) -> int:
    diagnostics = check_files(paths, flow_modules=flow_modules)
    for diagnostic in diagnostics:
        click.echo(diagnostic.render(), err=True)
    errors = sum(1 for d in diagnostics if d.is_error)
    if errors:
        click.echo(f"{errors} error{'s' if errors != 1 else ''} in {len(paths)} file(s)", err=True)
        return FAILURE
    click.echo(f"{len(paths)} file(s) ok")
    return 0


async def _fmt(path: Path, write: bool) -> int:
    try:
        text = format_file(path)
    except FlowError as exc:
        for diagnostic in exc.diagnostics:
            click.echo(diagnostic.render(), err=True)
        return FAILURE
    if write:
        path.write_text(text)
        click.echo(f"formatted {path}")
    else:
        click.echo(text, nl=False)
    return 0


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@allow_option()
def check(files: tuple[Path, ...], allow_modules: tuple[str, ...]) -> None:
    """Check .flow files; reports every error of every file. Runs none of their modules."""
    execute(_check(list(files), allow_modules))


@click.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--write", is_flag=True, help="Rewrite the file instead of printing it.")
def fmt(file: Path, write: bool) -> None:
    """Print a .flow file in canonical form (or --write it back)."""
    execute(_fmt(file, write))


@click.command("render")
@click.argument("target")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="out.svg, .png, .pdf (need Graphviz), .dot or .mmd",
)
@click.option("--run", "run_id", metavar="RUN", help="Draw this run's progress on its graph.")
@allow_option()
@db_option()
def render_command(
    target: str, out: Path, run_id: str | None, allow_modules: tuple[str, ...]
) -> None:
    """Draw TARGET (a .flow file[:name] or module:Class.method) as a diagram; a .flow
    file of several workflows without :name draws them all."""
    execute(_render(selected_db(), target, out, run_id, allow_modules))
