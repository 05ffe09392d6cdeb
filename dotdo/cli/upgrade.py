"""`dotdo upgrade check | apply`: what a deploy does to the runs that are waiting.

`check` is meant for CI before a deploy (docs/upgrades.md): it loads the release's code
(`--app`), reads the store without writing to it, and exits 1 naming each unfinished run
that the release would strand, with the reasons.
"""

from __future__ import annotations

import json

import click

from dotdo.cli.common import (
    USAGE,
    CliError,
    Db,
    app_option,
    checked_id,
    db_option,
    execute,
    load_apps,
    opened,
    selected_db,
)
from dotdo.cli.output import one_line
from dotdo.engine.upgrade_apply import check_one
from dotdo.engine.upgrade_check import UpgradeReport

__all__ = ["upgrade"]

SHOWN = 50
"""Stranded runs listed one by one; the rest are counted (use --json for all)."""


def _print_report(report: UpgradeReport) -> None:
    stranded = report.stranded
    total = len(report.runs)
    click.echo(
        f"upgrade check: {total} unfinished run{'s' * (total != 1)}, "
        f"{total - len(stranded)} can finish on this code, {len(stranded)} would strand"
    )
    for verdict in stranded[:SHOWN]:
        click.echo(
            f"  run {verdict.run_id} ({verdict.workflow} at {verdict.node}, "
            f"graph {verdict.graph_hash}): {one_line('; '.join(verdict.reasons))}"
        )
    if len(stranded) > SHOWN:
        click.echo(f"  ... and {len(stranded) - SHOWN} more (--json lists them all)")
    warnings = sorted({str(f) for r in report.runs for f in r.findings if not f.strands})
    for warning in warnings[:10]:
        click.echo(f"  note: {one_line(warning)}")


async def _check(db: Db, apps: list[str], workflows: list[str], as_json: bool) -> int:
    targets = load_apps(apps)
    async with opened(db, *targets, read_only=True) as engine:
        report = await engine.upgrade_check(workflows=workflows or None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "runs": [
                        {
                            "run_id": r.run_id,
                            "workflow": r.workflow,
                            "graph_hash": r.graph_hash,
                            "node": r.node,
                            "status": r.status,
                            "strands": r.strands,
                            "reasons": r.reasons,
                        }
                        for r in report.runs
                    ],
                },
                indent=2,
            )
        )
    else:
        _print_report(report)
    return 0 if report.ok else 1


@click.group()
def upgrade() -> None:
    """Check, before a deploy, which waiting runs the new code can finish; move runs."""


@upgrade.command()
@app_option("The release's code: every DO module (or .flow file) it deploys.", required=True)
@click.option("--workflow", "workflows", multiple=True, metavar="NAME", help="Only these.")
@click.option("--json", "as_json", is_flag=True, help="Every run's verdict as JSON.")
@db_option()
def check(apps: tuple[str, ...], workflows: tuple[str, ...], as_json: bool) -> None:
    """Exit 1, naming each unfinished run this code would strand, and why."""
    execute(_check(selected_db(), list(apps), list(workflows), as_json))


async def _apply(db: Db, run_id: str | None, every: bool, apps: list[str], dry_run: bool) -> int:
    if (run_id is None) == (not every):
        raise CliError("name one RUN or pass --all (not both)", USAGE)
    if run_id is not None:
        checked_id(run_id)
    targets = load_apps(apps)
    async with opened(db, *targets, existing=True) as engine:
        outcomes = await engine.upgrade_apply(None if every else [run_id or ""], dry_run=dry_run)
    if run_id is not None:
        outcome = check_one(outcomes)
        moved = f"{outcome.from_hash} -> {outcome.to_hash}"
        click.echo(f"run {outcome.run_id}: {outcome.reason} (graph {moved})")
        return 0
    refused = [o for o in outcomes if not o.applied]
    for outcome in outcomes:
        if outcome.applied:
            click.echo(f"  run {outcome.run_id}: {outcome.reason}")
        else:
            click.echo(f"  run {outcome.run_id}: refused: {one_line(outcome.reason)}")
    verb = "would move" if dry_run else "moved"
    click.echo(
        f"upgrade apply: {verb} {len(outcomes) - len(refused)} of {len(outcomes)} parked run"
        f"{'s' * (len(outcomes) != 1)} on an older graph; {len(refused)} refused"
    )
    return 1 if refused else 0


@upgrade.command()
@click.argument("run_id", metavar="RUN", required=False)
@click.option("--all", "every", is_flag=True, help="Every parked run on an older graph.")
@app_option("The current code (the graphs runs move onto).", required=True)
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
@db_option()
def apply(run_id: str | None, every: bool, apps: tuple[str, ...], dry_run: bool) -> None:
    """Move RUN (or --all) onto the current graph where step ids and liveness allow it."""
    execute(_apply(selected_db(), run_id, every, list(apps), dry_run))
