"""dotdo's benchmark: three workloads against its peers (LangGraph, DBOS), ratios in one run.

    .venv/bin/python bench/run.py                 # 1 warm-up + 3 repetitions, median
    .venv/bin/python bench/run.py --quick         # 1 repetition
    .venv/bin/python bench/run.py --json out.json --peers dotdo,langgraph --workloads sequential

Each (peer, workload) runs in its own subprocess (DBOS is a process-wide singleton; the
resume workload needs a real process death), and each repetition uses a fresh temporary
database. Every peer reports wall time and CPU time (user + sys of its whole process) over
the same window. Each peer is optional: one that is not installed is skipped with a note.
See README.md for the exact timing rules.
"""

from __future__ import annotations

import argparse
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
PEERS = ("dotdo", "langgraph", "dbos")
WORKERS = {peer: HERE / f"workloads_{peer}.py" for peer in PEERS}
DB_NAME = {"dotdo": "dotdo.db", "langgraph": "langgraph.sqlite", "dbos": "dbos.sqlite"}
LABEL = {"dotdo": "dotdo", "langgraph": "LangGraph", "dbos": "DBOS"}
DISTRIBUTIONS = {
    "dotdo": ("dotdo",),
    "langgraph": ("langgraph", "langgraph-checkpoint-sqlite", "aiosqlite"),
    "dbos": ("dbos",),
}
"""What each peer's worker imports, by distribution name (checked without importing it)."""
WORKLOADS = ("throughput", "sequential", "resume")

THROUGHPUT_TARGET = 30_000.0
"""steps/s, 200 runs x 10 steps, all concurrent."""
THROUGHPUT_RATIO_TARGET = 50.0
"""dotdo's throughput over each peer's (LangGraph and DBOS alike)."""
SEQUENTIAL_TARGET = 4_500.0
"""steps/s, one run of 1,000 steps."""
FSYNC_SHARE_TARGET = 0.75
"""sequential must also reach this share of the fsync limit measured in the same run."""
RESUME_TARGET_MS = 3.0
"""open -> next step recorded, at every history size (100, 1,000 and 10,000: flat)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 repetition instead of 3")
    parser.add_argument("--reps", type=int, default=None, help="measured repetitions (3)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up repetitions (1)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write results here")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma list: {','.join(PEERS)}")
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
        help="DBOS's SQLite journal: wal (like the others) or delete (SQLite's default)",
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


def installed(peer: str) -> dict[str, str] | None:
    """The versions of what the peer's worker needs, or None when one of them is missing."""
    versions = {}
    for dist in DISTRIBUTIONS[peer]:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            return None
    return versions


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


def spread(values: list[float]) -> dict[str, float]:
    return {"value": median(values), "min": min(values), "max": max(values)}


# ---------------------------------------------------------------- workloads
class PeerFailed(Exception):
    pass


def steps_workload(kind: str, peers: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Repetitions interleaved across peers (dotdo, LangGraph, DBOS, dotdo, ...), one process each.

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
        outcomes[peer] = {
            **spread([r["steps_per_s"] for r in reps]),
            "unit": "steps/s",
            "cpu": spread([r["cpu_us_per_step"] for r in reps]),
            "cpu_unit": "us/step",
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
        detail: dict[str, Any] = {
            "history": history,
            "setup_seconds": templates[peer][1],
            "warmup": samples[peer][: args.warmup],
            "reps": reps,
            "median_open_ms": median([r["open_ms"] for r in reps]),
            "replayed_steps": max(r["replayed_steps"] for r in reps),
        }
        for extra in ("cpu_ms", "dispatch_ms", "replay_ms", "state_bytes"):
            if all(extra in r for r in reps):
                detail[f"median_{extra}"] = median([r[extra] for r in reps])
        outcomes[peer] = {
            **spread([r["next_step_ms"] for r in reps]),
            "unit": "ms",
            "cpu": spread([r["cpu_ms"] for r in reps]),
            "cpu_unit": "ms CPU",
            "detail": detail,
        }
    return outcomes


# ------------------------------------------------------------------ report
def num(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit.startswith("ms"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def cell(value: float | None, bounds: list[float] | None, unit: str) -> str:
    """The median, then [min-max] of the repetitions when there are several."""
    if value is None or bounds is None:
        return "-"
    if bounds[0] == bounds[1]:
        return fmt(value, unit)
    return f"{fmt(value, unit)} [{fmt(bounds[0], unit)}-{fmt(bounds[1], unit)}]"


def ratio(dotdo: float | None, peer: float | None) -> float | None:
    return dotdo / peer if dotdo is not None and peer else None


def factor_text(dotdo_over_peer: float | None, *, higher_is_better: bool, words: str) -> str:
    """dotdo/peer read the right way round: "12x faster", "3.1x less CPU", "1.2x slower"."""
    if not dotdo_over_peer:
        return "-"
    factor = dotdo_over_peer if higher_is_better else 1 / dotdo_over_peer
    better, worse = words.split("|")
    return f"{num(factor)}x {better}" if factor >= 1 else f"{num(1 / factor)}x {worse}"


def checks_for(
    key: str, row: dict[str, Any], peers: list[str], fsync_limit: float | None
) -> list[dict[str, Any]]:
    """dotdo's targets for one row: what is required, what was measured, met or not (None:
    not measured)."""
    workload = key.split(":")[0]
    value = row["median"].get("dotdo")
    checks: list[dict[str, Any]] = []

    def add(target: str, measured: float | None, shown: str, met: bool | None) -> None:
        checks.append(
            {
                "workload": key,
                "target": target,
                "measured": measured,
                "shown": shown if measured is not None else "not measured",
                "met": met if measured is not None else None,
            }
        )

    if workload == "throughput":
        add(
            f">= {THROUGHPUT_TARGET:,.0f} steps/s",
            value,
            f"{fmt(value)} steps/s",
            value is not None and value >= THROUGHPUT_TARGET,
        )
        for peer in ("langgraph", "dbos"):
            r = row["ratio"].get(peer) if peer in peers else None
            add(
                f">= {THROUGHPUT_RATIO_TARGET:.0f}x {LABEL[peer]}",
                r,
                f"{num(r)}x" if r else "",
                r is not None and r >= THROUGHPUT_RATIO_TARGET,
            )
    elif workload == "sequential":
        add(
            f">= {SEQUENTIAL_TARGET:,.0f} steps/s",
            value,
            f"{fmt(value)} steps/s",
            value is not None and value >= SEQUENTIAL_TARGET,
        )
        share = value / fsync_limit if value is not None and fsync_limit else None
        bound = f" = {FSYNC_SHARE_TARGET * fsync_limit:,.0f} steps/s" if fsync_limit else ""
        add(
            f">= {FSYNC_SHARE_TARGET}x fsync limit{bound}",
            share,
            f"{share:.2f}x the limit" if share is not None else "",
            share is not None and share >= FSYNC_SHARE_TARGET,
        )
    elif workload == "resume":
        add(
            f"< {RESUME_TARGET_MS:g} ms",
            value,
            f"{fmt(value, 'ms')} ms",
            value is not None and value < RESUME_TARGET_MS,
        )
    return checks


def build_rows(
    results: dict[str, dict[str, dict[str, Any]]], peers: list[str], fsync_limit: float | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, by_peer in results.items():
        first = next(iter(by_peer.values()))
        row: dict[str, Any] = {
            "workload": key,
            "unit": first["unit"],
            "cpu_unit": first["cpu_unit"],
            "median": {p: o["value"] for p, o in by_peer.items()},
            "range": {p: [o["min"], o["max"]] for p, o in by_peer.items()},
            "cpu": {p: o["cpu"]["value"] for p, o in by_peer.items()},
            "cpu_range": {p: [o["cpu"]["min"], o["cpu"]["max"]] for p, o in by_peer.items()},
        }
        others = [p for p in peers if p != "dotdo"]
        row["ratio"] = {p: ratio(row["median"].get("dotdo"), row["median"].get(p)) for p in others}
        row["cpu_ratio"] = {p: ratio(row["cpu"].get("dotdo"), row["cpu"].get(p)) for p in others}
        row["checks"] = checks_for(key, row, peers, fsync_limit)
        verdicts = [c["met"] for c in row["checks"] if c["met"] is not None]
        row["met"] = all(verdicts) if verdicts else None
        rows.append(row)
    return rows


def print_table(title: str, header: list[str], lines: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=False)]
        for line in [header, *lines]:
            print("  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)))
        return
    console = Console(width=max(Console().width, 160))
    table = Table(title=escape(title))
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for line in lines:
        table.add_row(*(escape(str(c)) for c in line))
    console.print(table)


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
        if "langgraph" in by_peer:
            d = by_peer["langgraph"]
            parts.append(
                f"LangGraph: connect + compile {d['detail']['median_open_ms']:.1f}, "
                f"next node started {d['value']:.1f}, "
                f"nodes re-executed {d['detail']['replayed_steps']}"
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
    peers = report["peers"]
    others = [p for p in peers if p != "dotdo"]
    env = report["environment"]
    runs = f"median [min-max] of {report['reps']} rep(s), each after {report['warmup']} warm-up"

    header = ["workload", "unit", *(LABEL[p] for p in peers)]
    header += [f"vs {LABEL[p]}" for p in others] + ["targets met"]
    lines = []
    for r in rows:
        higher = r["unit"] == "steps/s"
        line = [r["workload"], r["unit"]]
        line += [cell(r["median"].get(p), r["range"].get(p), r["unit"]) for p in peers]
        line += [
            factor_text(r["ratio"][p], higher_is_better=higher, words="faster|slower")
            for p in others
        ]
        line.append({True: "yes", False: "NO", None: "-"}[r["met"]])
        lines.append(line)
    print_table(f"Wall time, {runs}", header, lines)

    header = ["workload", "unit", *(LABEL[p] for p in peers)]
    header += [f"vs {LABEL[p]}" for p in others]
    lines = []
    for r in rows:
        line = [r["workload"], r["cpu_unit"]]
        line += [cell(r["cpu"].get(p), r["cpu_range"].get(p), r["cpu_unit"]) for p in peers]
        line += [
            factor_text(r["cpu_ratio"][p], higher_is_better=False, words="less CPU|more CPU")
            for p in others
        ]
        lines.append(line)
    print_table(
        "CPU time (user + sys, whole process) per step; resume: open -> next step", header, lines
    )

    checks = [c for r in rows for c in r["checks"]]
    if checks:
        print("dotdo's targets:")
        width = max(len(c["target"]) for c in checks)
        for c in checks:
            verdict = {True: "yes", False: "NO", None: "-"}[c["met"]]
            print(f"  {c['workload']:>13}  {c['target']:<{width}}  {c['shown']:>22}  {verdict}")
    fsync = report["fsync"]
    samples = ", ".join(f"{when} {rate:,.0f}" for when, rate in fsync["samples"])
    print(
        "fsync limit (raw sqlite3 loop: one 100-byte row per transaction, WAL + "
        f"synchronous=FULL, {fsync['commits_per_sample']:,} commits a sample), commits/s: "
        f"{samples}; limit for sequential ({fsync['limit_from']}) {fsync['limit']:,.0f}/s, "
        f"three quarters of it {fsync['sequential_target']:,.0f} steps/s"
    )
    breakdown = resume_breakdown(report["results"])
    if breakdown:
        print("resume breakdown (medians, ms):")
        for line in breakdown:
            print("  " + line)
    for kind, gc in report["group_commit"].items():
        print(
            f"dotdo group commit, {kind}: {gc['batches']} transactions for "
            f"{gc['committed']} checkpoints = {gc['checkpoints_per_txn']:.1f} per transaction"
        )
    for note in report["notes"]:
        print(f"note: {note}")
    load = report["load_average"]
    print(
        f"machine: {env['nproc']} CPU ({env['cpu']}), {env['memory']} RAM, Python {env['python']},"
        f" SQLite {env['sqlite']}; load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.2f}' for x in load['start'])}, at end "
        f"{'/'.join(f'{x:.2f}' for x in load['end'])}"
    )


def fsync_summary(samples: list[tuple[str, float]], commits: int) -> dict[str, Any]:
    """The fsync limit the sequential target is set against: the samples taken just before
    and after the sequential workload (their mean), or all samples when it did not run."""
    around = [rate for when, rate in samples if "sequential" in when]
    limit = median(around or [rate for _, rate in samples])
    return {
        "samples": samples,
        "commits_per_sample": commits,
        "limit_from": "mean of the samples around it" if around else "median of all samples",
        "limit": limit,
        "sequential_target": FSYNC_SHARE_TARGET * limit,
    }


def main() -> None:
    args = parse_args()
    requested = [p.strip() for p in args.peers.split(",") if p.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(requested) - set(PEERS) | set(workloads) - set(WORKLOADS)
    if unknown:
        sys.exit(f"unknown peer or workload: {', '.join(sorted(unknown))}")
    load_start = os.getloadavg()
    notes: list[str] = []
    versions: dict[str, dict[str, str]] = {}
    peers: list[str] = []
    for peer in PEERS:
        if peer not in requested:
            continue
        found = installed(peer)
        if found is None:
            missing = ", ".join(DISTRIBUTIONS[peer])
            notes.append(
                f"{LABEL[peer]} skipped: not installed (needs {missing}; pip install -e '.[bench]')"
            )
            continue
        versions[peer] = found
        peers.append(peer)
    if "dotdo" in peers:
        notes.append("dotdo: its defaults, WAL + synchronous=FULL")
    if "langgraph" in peers:
        v = versions["langgraph"]
        notes.append(
            f"LangGraph {v['langgraph']}, langgraph-checkpoint-sqlite "
            f"{v['langgraph-checkpoint-sqlite']}, aiosqlite {v['aiosqlite']}: one "
            "AsyncSqliteSaver per process on an aiosqlite connection set to WAL + "
            "synchronous=FULL (checked), ainvoke(durability='sync')"
        )
    if "dbos" in peers:
        notes.append(
            f"DBOS {versions['dbos']['dbos']} uses an SQLite system database, "
            f"journal={args.dbos_journal}, synchronous=FULL (SQLite's default)"
        )
    if not peers:
        sys.exit("no peer to run: " + "; ".join(notes))
    sizes = [int(s) for s in args.resume_sizes.split(",") if s.strip()]

    results: dict[str, dict[str, dict[str, Any]]] = {}
    failures: list[str] = []
    commits = 1000
    calibration = [("start", sqlite_commit_rate(args.tmp, commits))]
    for workload in workloads:
        if workload == "resume":
            keyed = {f"resume:{n}": (lambda n=n: resume_workload(n, peers, args)) for n in sizes}
        else:
            keyed = {workload: (lambda w=workload: steps_workload(w, peers, args))}
        if workload == "sequential":
            calibration.append(("before sequential", sqlite_commit_rate(args.tmp, commits)))
        for key, measure in keyed.items():
            for peer, outcome in measure().items():
                if "error" in outcome:
                    failures.append(f"{peer} {key}: {outcome['error']}")
                    say(f"[bench] {peer} {key} FAILED: {outcome['error']}")
                    continue
                results.setdefault(key, {})[peer] = outcome
                say(
                    f"[bench] {peer}: {key} = {fmt(outcome['value'], outcome['unit'])} "
                    f"{outcome['unit']}, CPU {fmt(outcome['cpu']['value'], outcome['cpu_unit'])} "
                    f"{outcome['cpu_unit']} (medians)"
                )
        if workload == "sequential":
            calibration.append(("after sequential", sqlite_commit_rate(args.tmp, commits)))
    calibration.append(("end", sqlite_commit_rate(args.tmp, commits)))
    fsync = fsync_summary(calibration, commits)

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
        "peers": peers,
        "versions": versions,
        "reps": args.reps,
        "warmup": args.warmup,
        "environment": environment(),
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "fsync": fsync,
        "targets": {
            "throughput_steps_per_s": THROUGHPUT_TARGET,
            "throughput_ratio_to_each_peer": THROUGHPUT_RATIO_TARGET,
            "sequential_steps_per_s": SEQUENTIAL_TARGET,
            "sequential_share_of_fsync_limit": FSYNC_SHARE_TARGET,
            "resume_ms": RESUME_TARGET_MS,
        },
        "settings": {
            "runs": args.runs,
            "steps_per_run": args.steps_per_run,
            "seq_steps": args.seq_steps,
            "resume_sizes": sizes,
            "dbos_journal": args.dbos_journal,
        },
        "rows": build_rows(results, peers, fsync["limit"]),
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
