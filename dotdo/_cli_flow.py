"""`dotdo check | fmt | render`, and the `.flow` half of `dotdo run`: the language tooling.

`check` reports every problem of every file, not only the first; `render` draws any workflow,
Python or `.flow`, from the same graph the engine walks, and with `--run` draws the graph that
run pinned (not today's code) with its progress on it: read from the database opened
read-only, verified against its hash like the engine verifies it, and never compiled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from dotdo._cli_common import (
    FAILURE,
    USAGE,
    CliError,
    checked_id,
    cwd_importable,
    db_option,
    execute,
    import_module,
    opened,
    selected_db,
)
from dotdo.compiler.flow_check import check_files
from dotdo.compiler.ir import Graph
from dotdo.compiler.render import Overlay, render
from dotdo.dsl.decorators import WorkflowDef
from dotdo.dsl.do import DO
from dotdo.dsl.flow_errors import FlowError
from dotdo.dsl.flow_format import format_file
from dotdo.dsl.flow_runtime import load_flow
from dotdo.engine._trust import stored_graph

__all__ = ["check", "fmt", "render_command", "resolve_flow"]

_FORMATS = (".svg", ".png", ".pdf", ".dot", ".gv", ".mmd", ".mermaid")


def resolve_flow(target: str) -> tuple[WorkflowDef[Any], type[DO]]:
    """`file.flow` (its only workflow) or `file.flow:name`."""
    path, _, name = target.partition(".flow")
    file = Path(path + ".flow")
    name = name.lstrip(":")
    if not file.is_file():
        raise CliError(f"no such file: {file}", USAGE)
    cwd_importable()  # for the modules its `use` and `import` lines name
    module = load_flow(file)
    if not name:
        if len(module.workflows) != 1:
            names = ", ".join(module.workflows) or "none"
            raise CliError(f"{file} has several workflows ({names}): use {file}:NAME", USAGE)
        name = next(iter(module.workflows))
    return module[name], module.owner


def _graph_of(target: str) -> Graph:
    if ".flow" in target:
        wf, _ = resolve_flow(target)
        return wf.graph
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


async def _overlay(db: Path, run_id: str) -> tuple[Graph, Overlay]:
    """The run's pinned graph and how far it got, read from the store."""
    checked_id(run_id)
    async with opened(db, read_only=True) as engine:
        info = await engine.get_run(run_id)
        journal = await engine.journal(run_id)
        row = await engine.store.fetch_one(
            "SELECT body FROM graphs WHERE hash = ?", (info.graph_hash,)
        )
    body = row["body"] if row is not None else None
    graph = stored_graph(body, info.graph_hash, name=info.workflow, run_id=run_id)
    base = {re.sub(r"(\[\d+\])+$", "", r.key) for r in journal if r.status == "completed"}
    failed_keys = {re.sub(r"(\[\d+\])+$", "", r.key) for r in journal if r.status == "failed"}
    done, failed = set(), set()
    for node in graph.nodes.values():
        name = getattr(node, "name", None)
        if name in base:
            done.add(node.id)
        if name is not None and f"compensate:{name}" in base:
            done.add(f"undo_{node.id}")
        if name in failed_keys and info.status in ("failed", "compensated"):
            failed.add(node.id)
    overlay = Overlay(done=done, failed=failed, current=None if info.finished else info.node)
    if info.status == "completed":
        done.add("end")
    return graph, overlay


async def _render(db: Path, target: str, out: Path, run_id: str | None) -> int:
    if out.suffix.lower() not in _FORMATS:
        raise CliError(f"unknown diagram format {out.suffix!r}: use {', '.join(_FORMATS)}", USAGE)
    overlay = None
    if run_id is not None:
        graph, overlay = await _overlay(db, run_id)
    else:
        graph = _graph_of(target)
    render(graph, out, overlay)
    click.echo(f"wrote {out}")
    return 0


async def _check(paths: list[Path]) -> int:
    diagnostics = check_files(paths)
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
def check(files: tuple[Path, ...]) -> None:
    """Check .flow files; reports every error of every file."""
    execute(_check(list(files)))


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
@db_option()
def render_command(target: str, out: Path, run_id: str | None) -> None:
    """Draw TARGET (a .flow file[:name] or module:Class.method) as a diagram."""
    execute(_render(selected_db(), target, out, run_id))
