"""dotdo's benchmark: three workloads against a peer (DBOS on SQLite), ratios in one run.

    .venv/bin/python bench/run.py                 # 1 warm-up + 3 repetitions, median
    .venv/bin/python bench/run.py --quick         # 1 repetition
    .venv/bin/python bench/run.py --json out.json --peers dotdo --workloads sequential

Each (peer, workload) runs in its own subprocess (DBOS is a process-wide singleton), and each
repetition uses a fresh temporary database. The resume workload crashes a real process
(os._exit inside a step) and times a fresh process reopening the file; see README.md.
DBOS is optional: without it, dotdo's figures print with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from _common import (
    CRASH_EXIT,
    copy_database,
    environment,
    fresh_dir,
    median,
    parse_result,
    sqlite_commit_rate,
)

HERE = Path(__file__).resolve().parent
WORKERS = {"dotdo": HERE / "workloads_dotdo.py", "dbos": HERE / "workloads_dbos.py"}
DB_NAME = {"dotdo": "dotdo.db", "dbos": "dbos.sqlite"}
TARGETS = {
    "throughput": (">=", 10_000.0, "steps/s"),
    "sequential": (">=", 2_000.0, "steps/s"),
    "resume": ("<", 20.0, "ms"),
}
WORKLOADS = ("throughput", "sequential", "resume")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition instead of 3")
    parser.add_argument("--reps", type=int, default=None, help="measured repetitions (3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up repetitions (1)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write results here")
    parser.add_argument("--peers", default="dotdo,dbos", help="comma list: dotdo,dbos")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list")
    parser.add_argument("--runs", type=int, default=200, help="throughput: concurrent runs")
    parser.add_argument("--steps-per-run", type=int, default=10, help="throughput: steps each")
    parser.add_argument("--seq-steps", type=int, default=1000, help="sequential: steps")
    parser.add_argument(
        "--resume-sizes", default="100,1000,10000", help="resume: completed steps before crash"
    )
    parser.add_argument(
        "--dbos-journal",
        choices=["wal", "delete"],
        default="wal",
        help="DBOS's SQLite journal: wal (like dotdo) or delete (SQLite's default)",
    )
    parser.add_argument("--tmp", default=None, help="parent directory for temporary databases")
    parser.add_argument(
        "--profile", default=None, help="directory: cProfile one extra dotdo rep per workload"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="per worker, seconds")
    args = parser.parse_args()
    if args.reps is None:
        args.reps = 1 if args.quick else 3
    if args.reps < 1 or args.warmup < 0:
        parser.error("--reps must be at least 1 and --warmup at least 0")
    return args


def dbos_version() -> str | None:
    if importlib.util.find_spec("dbos") is None:
        return None
    try:
        return version("dbos")
    except PackageNotFoundError:
        return "unknown"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_worker(
    peer: str, argv: list[str], args: argparse.Namespace, *, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(WORKERS[peer]), *argv]
    if peer == "dbos":
        command += ["--journal", args.dbos_journal]
    if args.tmp:
        command += ["--tmp", args.tmp]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=args.timeout,
        env={**os.environ, **(env or {})},
        cwd=HERE.parent,
    )


def worker_result(peer: str, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PeerFailed(f"{peer} worker failed (exit {proc.returncode}):\n{tail}")
    return parse_result(proc.stdout)


# ---------------------------------------------------------------- workloads
class PeerFailed(Exception):
    pass


def steps_workload(kind: str, peers: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Repetitions interleaved across peers (dotdo, DBOS, dotdo, ...), one process each.

    Every process first runs `--warmup` unmeasured repetitions, then one measured one, so
    each measured figure comes from a warmed-up process and a fresh database, and slow
    drifts of the machine (this VM's fsync rate varies) hit both peers alike.
    """
    steps = args.steps_per_run if kind == "throughput" else args.seq_steps
    argv = [kind, "--reps", "1", "--warmup", str(args.warmup)]
    argv += ["--runs", str(args.runs), "--steps", str(steps)]
    collected: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    failed: dict[str, str] = {}
    for rep in range(args.reps):
        for peer in peers:
            if peer in failed:
                continue
            say(f"[bench] {peer}: {kind} rep {rep + 1}/{args.reps}")
            try:
                result = worker_result(peer, run_worker(peer, argv, args))
            except (PeerFailed, subprocess.TimeoutExpired, ValueError) as exc:
                failed[peer] = str(exc)
                continue
            collected[peer].append(result)
    if args.profile and "dotdo" in peers and "dotdo" not in failed:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        target = Path(args.profile) / f"dotdo-{kind}.prof"
        say(f"[bench] dotdo: {kind} under cProfile -> {target}")
        run_worker("dotdo", [*argv, "--profile", str(target)], args)
    outcomes: dict[str, Any] = {}
    for peer, results in collected.items():
        if peer in failed:
            outcomes[peer] = {"error": failed[peer]}
            continue
        reps = [r["reps"][0] for r in results]
        values = [r["steps_per_s"] for r in reps]
        outcomes[peer] = {
            "value": median(values),
            "min": min(values),
            "max": max(values),
            "unit": "steps/s",
            "detail": {
                "runs": results[0]["runs"],
                "steps_per_run": results[0]["steps_per_run"],
                "reps": reps,
                "warmup": [w for r in results for w in r["warmup"]],
            },
        }
    return outcomes


def build_template(peer: str, history: int, args: argparse.Namespace) -> tuple[Path, float]:
    """Run the workflow in a process that dies inside step history+1 (untimed)."""
    template_dir = fresh_dir(args.tmp, f"{peer}-resume-template")
    template = template_dir / DB_NAME[peer]
    say(f"[bench] {peer}: resume:{history} setup (crash after {history} steps)")
    started = time.perf_counter()
    argv = ["resume-setup", "--db", str(template), "--history", str(history)]
    proc = run_worker(peer, argv, args)
    if proc.returncode != CRASH_EXIT:
        shutil.rmtree(template_dir, ignore_errors=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise PeerFailed(f"{peer} resume setup did not crash as planned:\n{tail}")
    return template, time.perf_counter() - started


def resume_workload(history: int, peers: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """One crashed database per peer, then warm-up + reps on fresh copies, peers interleaved."""
    templates: dict[str, tuple[Path, float]] = {}
    failed: dict[str, str] = {}
    samples: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
    try:
        for peer in peers:
            try:
                templates[peer] = build_template(peer, history, args)
            except (PeerFailed, subprocess.TimeoutExpired) as exc:
                failed[peer] = str(exc)
        for i in range(args.warmup + args.reps):
            for peer, (template, _) in templates.items():
                if peer in failed:
                    continue
                directory = fresh_dir(args.tmp, f"{peer}-resume-{history}-{i}")
                db = directory / DB_NAME[peer]
                try:
                    copy_database(template, db)
                    argv = ["resume-measure", "--db", str(db), "--history", str(history)]
                    samples[peer].append(worker_result(peer, run_worker(peer, argv, args)))
                except (PeerFailed, subprocess.TimeoutExpired, ValueError) as exc:
                    failed[peer] = str(exc)
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
    finally:
        for template, _ in templates.values():
            shutil.rmtree(template.parent, ignore_errors=True)
    outcomes: dict[str, Any] = {}
    for peer in peers:
        if peer in failed:
            outcomes[peer] = {"error": failed[peer]}
            continue
        reps = samples[peer][args.warmup :]
        values = [r["next_step_ms"] for r in reps]
        detail: dict[str, Any] = {
            "history": history,
            "setup_seconds": templates[peer][1],
            "warmup": samples[peer][: args.warmup],
            "reps": reps,
            "median_open_ms": median([r["open_ms"] for r in reps]),
            "replayed_steps": max(r["replayed_steps"] for r in reps),
        }
        for extra in ("dispatch_ms", "replay_ms", "state_bytes"):
            if all(extra in r for r in reps):
                detail[f"median_{extra}"] = median([r[extra] for r in reps])
        outcomes[peer] = {
            "value": median(values),
            "min": min(values),
            "max": max(values),
            "unit": "ms",
            "detail": detail,
        }
    return outcomes


# ------------------------------------------------------------------ report
def target_met(workload: str, value: float) -> bool:
    op, bound, _ = TARGETS[workload]
    return value >= bound if op == ">=" else value < bound


def build_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, by_peer in results.items():
        workload = key.split(":")[0]
        dotdo = by_peer.get("dotdo")
        dbos = by_peer.get("dbos")
        unit = (dotdo or dbos or {}).get("unit", "")
        row: dict[str, Any] = {"workload": key, "unit": unit}
        row["dotdo"] = dotdo["value"] if dotdo else None
        row["dbos"] = dbos["value"] if dbos else None
        row["dotdo_range"] = [dotdo["min"], dotdo["max"]] if dotdo else None
        row["dbos_range"] = [dbos["min"], dbos["max"]] if dbos else None
        row["ratio"] = row["dotdo"] / row["dbos"] if dotdo and dbos and dbos["value"] else None
        op, bound, _ = TARGETS[workload]
        row["target"] = f"{op} {bound:,.0f} {unit}"
        row["met"] = target_met(workload, row["dotdo"]) if dotdo else None
        rows.append(row)
    return rows


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def cell(value: float | None, spread: list[float] | None, unit: str) -> str:
    """The median, then [min-max] of the repetitions when there are several."""
    if value is None or spread is None:
        return "-"
    if spread[0] == spread[1]:
        return fmt(value, unit)
    return f"{fmt(value, unit)} [{fmt(spread[0], unit)}-{fmt(spread[1], unit)}]"


def speedup(row: dict[str, Any]) -> str:
    if row["ratio"] is None or row["ratio"] == 0:
        return "-"
    factor = row["ratio"] if row["unit"] != "ms" else 1 / row["ratio"]
    return f"{factor:,.1f}x faster" if factor >= 1 else f"{1 / factor:,.1f}x slower"


def resume_breakdown(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    lines = []
    for key, by_peer in results.items():
        if not key.startswith("resume:"):
            continue
        parts = [f"{key:>13}"]
        if "dotdo" in by_peer:
            d = by_peer["dotdo"]
            parts.append(
                f"dotdo: Engine.open() {d['detail']['median_open_ms']:.1f}, "
                f"next step recorded {d['value']:.1f}, "
                f"steps re-executed {d['detail']['replayed_steps']}"
            )
        if "dbos" in by_peer:
            d = by_peer["dbos"]["detail"]
            parts.append(
                f"DBOS: launch() {d['median_open_ms']:.1f}, "
                f"queue dispatch {d['median_dispatch_ms']:.1f}, "
                f"replay + next step {d['median_replay_ms']:.1f}"
            )
        lines.append(" | ".join(parts))
    return lines


def print_report(report: dict[str, Any]) -> None:
    rows = report["rows"]
    env = report["environment"]
    header = ["workload", "unit", "dotdo", "DBOS", "dotdo/DBOS", "dotdo is", "target", "met"]
    lines = [
        [
            r["workload"],
            r["unit"],
            cell(r["dotdo"], r["dotdo_range"], r["unit"]),
            cell(r["dbos"], r["dbos_range"], r["unit"]),
            f"{r['ratio']:.3g}" if r["ratio"] is not None else "-",
            speedup(r),
            r["target"],
            {True: "yes", False: "NO", None: "-"}[r["met"]],
        ]
        for r in rows
    ]
    title = (
        f"dotdo {report['dotdo_version']} vs DBOS {report['dbos_version'] or '(not installed)'}"
        f" - median [min-max] of {report['reps']} rep(s), each after {report['warmup']}"
        " warm-up"
    )
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
        for line in [header, *lines]:
            print("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)))
    else:
        console = Console(width=max(Console().width, 140))
        table = Table(title=escape(title))
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
        for line in lines:
            table.add_row(*(escape(str(c)) for c in line))
        console.print(table)
    breakdown = resume_breakdown(report["results"])
    if breakdown:
        print("resume breakdown (medians, ms):")
        for line in breakdown:
            print("  " + line)
    for note in report["notes"]:
        print(f"note: {note}")
    for kind, gc in report["group_commit"].items():
        print(
            f"dotdo group commit, {kind}: {gc['batches']} transactions for "
            f"{gc['committed']} checkpoints = {gc['checkpoints_per_txn']:.1f} per transaction"
        )
    print(
        f"machine: {env['nproc']} CPU ({env['cpu']}), {env['memory']} RAM, Python {env['python']},"
        f" SQLite {env['sqlite']}; raw SQLite WAL+FULL single-row commits/s here, before and"
        f" after: {', '.join(f'{c:,.0f}' for c in report['sqlite_commits_per_s'])}"
    )


def main() -> None:
    args = parse_args()
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(peers) - set(WORKERS) | set(workloads) - set(WORKLOADS)
    if unknown:
        sys.exit(f"unknown peer or workload: {', '.join(sorted(unknown))}")
    notes: list[str] = []
    dbos = dbos_version()
    if "dbos" in peers and dbos is None:
        peers.remove("dbos")
        notes.append(
            "DBOS is not installed (pip install -e '.[bench]'): dotdo's figures only, no ratios"
        )
    if "dbos" in peers:
        notes.append(
            f"DBOS {dbos} uses an SQLite system database, journal={args.dbos_journal}, "
            "synchronous=FULL (SQLite's default); dotdo uses WAL + synchronous=FULL"
        )
    sizes = [int(s) for s in args.resume_sizes.split(",") if s.strip()]

    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    calibration = [sqlite_commit_rate(args.tmp)]
    for workload in workloads:
        if workload == "resume":
            keyed = {f"resume:{n}": (lambda n=n: resume_workload(n, peers, args)) for n in sizes}
        else:
            keyed = {workload: (lambda w=workload: steps_workload(w, peers, args))}
        for key, measure in keyed.items():
            for peer, outcome in measure().items():
                if "error" in outcome:
                    failures.append(f"{peer} {key}: {outcome['error']}")
                    say(f"[bench] {peer} {key} FAILED: {outcome['error']}")
                    continue
                results.setdefault(key, {})[peer] = outcome
                say(
                    f"[bench] {peer}: {key} = {fmt(outcome['value'], outcome['unit'])} "
                    f"{outcome['unit']} (median)"
                )
    calibration.append(sqlite_commit_rate(args.tmp))

    group_commit = {}
    for kind in ("throughput", "sequential"):
        dotdo_result = results.get(kind, {}).get("dotdo")
        if dotdo_result:
            reps = dotdo_result["detail"]["reps"]
            batches = sum(r["batches"] for r in reps)
            committed = sum(r["committed"] for r in reps)
            group_commit[kind] = {
                "batches": round(batches / len(reps)),
                "committed": round(committed / len(reps)),
                "checkpoints_per_txn": committed / batches if batches else 0.0,
            }
    report = {
        "dotdo_version": version("dotdo"),
        "dbos_version": dbos if "dbos" in peers else None,
        "reps": args.reps,
        "warmup": args.warmup,
        "environment": environment(),
        "sqlite_commits_per_s": calibration,
        "settings": {
            "runs": args.runs,
            "steps_per_run": args.steps_per_run,
            "seq_steps": args.seq_steps,
            "resume_sizes": sizes,
            "dbos_journal": args.dbos_journal,
        },
        "rows": build_rows(results),
        "group_commit": group_commit,
        "results": results,
        "notes": notes,
        "failures": failures,
    }
    print_report(report)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json_path}")
    if failures:
        for failure in failures:
            print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
