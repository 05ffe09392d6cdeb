"""`dotdo diff TARGET --from GRAPH_HASH -o diff.svg`: what a release changes in a workflow.

The old graph is read from the store (`--from`: a hash a run pinned, or a unique prefix of
one, as `dotdo status` and `dotdo upgrade check` show them) and verified against its hash;
the new one is TARGET's graph in today's code. Nodes are matched by step id
(dotdo.compiler.diff).
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    allow_option,
    db_option,
    execute,
    opened,
    selected_db,
)
from dotdo.cli.flow import _FORMATS, _graph_of
from dotdo.compiler.diff import diff_graphs, render_diff
from dotdo.compiler.ir import Graph
from dotdo.engine.trust import stored_graph

__all__ = ["diff"]

_HASH = re.compile(r"[0-9a-f]{4,64}")


async def _stored(db: Db, wanted: str, name: str) -> Graph:
    if not _HASH.fullmatch(wanted):
        raise CliError(f"bad --from {wanted[:80]!r}: expected a graph hash (hex digits)", USAGE)
    async with opened(db, read_only=True) as engine:
        rows = await engine.store.graphs_with_prefix(wanted)
        if not rows:
            known = await engine.store.graph_hashes(name, 5)
            stored = ", ".join(known) or "none"
            raise CliError(
                f"graph {wanted} is not stored in {db} (graphs of {name} there: {stored})"
            )
    if len(rows) > 1:
        raise CliError(f"graph prefix {wanted} is ambiguous: {', '.join(h for h, _ in rows)}")
    return stored_graph(rows[0][1], rows[0][0], name=name, run_id="(none)")


async def _diff(db: Db, target: str, graph_hash: str, out: Path, modules: tuple[str, ...]) -> int:
    if out.suffix.lower() not in _FORMATS:
        raise CliError(f"unknown diagram format {out.suffix!r}: use {', '.join(_FORMATS)}", USAGE)
    new = _graph_of(target, modules)
    if not isinstance(new, Graph):
        raise CliError(
            f"{target} holds several workflows ({', '.join(new.graphs)}): name one "
            "(FILE.flow:NAME or module:Class.method)",
            USAGE,
        )
    old = await _stored(db, graph_hash, new.name)
    diff = diff_graphs(old, new)
    render_diff(diff, out)
    click.echo(f"{new.name} {old.hash} -> {new.hash}: {diff.summary()}; wrote {out}")
    return 0


@click.command()
@click.argument("target")
@click.option("--from", "graph_hash", required=True, metavar="GRAPH_HASH", help="Old graph.")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="diff.svg, .png, .pdf (need Graphviz), .dot or .mmd",
)
@allow_option()
@db_option()
def diff(target: str, graph_hash: str, out: Path, allow_modules: tuple[str, ...]) -> None:
    """Draw how TARGET's graph today differs from a stored one, matched by step id."""
    execute(_diff(selected_db(), target, graph_hash.lower(), out, allow_modules))
