"""Stored rows are data (docs/security.md, "Stored rows").

Whoever can write the database can put anything in a row. Each test here is such a row:
values tagged as a module, a function, a class, a dataclass or a model of a module nobody
imported (a trap that leaves a marker file when imported) or of the standard library, in
every column that holds values; graph bodies edited under the hash a run pinned, swapped for
another workflow's graph, or replaced by an attacker's graph under its own hash; run states
that point compensation at arbitrary methods; a `graphs.module` that names the trap. The
CLI, the engine and a resume read them as data or refuse them in one clear line; they never
import the trap, and never run edited graph code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import dotdo.cli
from dotdo import Approval, Engine, GraphIntegrityError, RunInfo

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from cli_app import guarded, guarded_v2  # noqa: E402
from cli_app.shop import Order, Shop  # noqa: E402

Vault = guarded.Vault
APP = ("--app", "cli_app.guarded")


# ----------------------------------------------------------------------------- fixtures
@dataclass
class Trap:
    """Modules whose import leaves a marker: none of them may ever be imported."""

    dir: Path
    module: str
    package: str
    marker: Path

    def untouched(self) -> None:
        assert not self.marker.exists(), "a trap module was imported"
        assert self.module not in sys.modules and self.package not in sys.modules
        assert not any(name.startswith(self.package + ".") for name in sys.modules)


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Trap]:
    folder = tmp_path / "trapdir"
    folder.mkdir()
    stem = "rowtrap_" + "".join(c if c.isalnum() else "_" for c in tmp_path.name)
    marker = tmp_path / "imported.marker"
    code = textwrap.dedent(
        f"""
        from dataclasses import dataclass
        from enum import Enum
        from pydantic import BaseModel
        open({str(marker)!r}, "a").write(__name__ + "\\n")

        @dataclass
        class Data:
            x: int = 0

        class Model(BaseModel):
            x: int = 0

        class Color(Enum):
            RED = 1

        class Boom(Exception):
            pass

        def run(*args):
            open({str(marker)!r}, "a").write("called\\n")
        """
    )
    (folder / f"{stem}.py").write_text(code)
    (folder / f"{stem}_pkg").mkdir()
    (folder / f"{stem}_pkg" / "__init__.py").write_text(code)
    (folder / f"{stem}_pkg" / "sub.py").write_text(code)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)  # where a command that imports would look first
    this_before = "this" in sys.modules
    yield Trap(folder, stem, f"{stem}_pkg", marker)
    for name in [n for n in sys.modules if n.startswith(stem)]:
        del sys.modules[name]
    assert this_before or "this" not in sys.modules, "a row made dotdo import `this`"


@pytest.fixture(autouse=True)
def _logger() -> Iterator[None]:
    """The CLI sends dotdo's log records to stderr; put the logger back afterwards."""
    logger = logging.getLogger("dotdo")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "steps.log"
    monkeypatch.setenv("GUARDED_LOG", str(path))
    monkeypatch.setenv("CLI_APP_COUNTER", str(tmp_path / "shop.log"))
    monkeypatch.delenv("DOTDO_SECRET", raising=False)
    return path


def ran(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def payloads(trap: Trap) -> dict[str, Any]:
    """One hostile value per kind: code kinds, and data kinds naming unimported modules."""
    return {
        "module": {"$t": "module", "v": trap.module},
        "func": {"$t": "func", "cls": f"{trap.module}:run"},
        "class": {"$t": "class", "cls": f"{trap.module}:Data"},
        "dataclass": {"$t": "dataclass", "cls": f"{trap.module}:Data", "v": {"x": 1}},
        "model": {"$t": "model", "cls": f"{trap.module}:Model", "v": {"x": 1}},
        "enum": {"$t": "enum", "cls": f"{trap.package}.sub:Color", "v": 1},
        "exception": {"$t": "exc", "cls": f"{trap.module}:Boom", "msg": "m", "args": ["m"]},
        "stdlib": {"$t": "dataclass", "cls": "this:Zen", "v": {}},
        "stdlib_model": {"$t": "model", "cls": "subprocess:CompletedProcess", "v": {}},
    }


def put(db: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(sql, params)
        conn.commit()


def one(db: Path, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, params).fetchone()[0]


def dotdo_cmd(*args: str | Path) -> Result:
    return CliRunner().invoke(dotdo.cli.cli, [str(a) for a in args], catch_exceptions=False)


def ok_or_one_line(result: Result) -> None:
    """A command meeting a hostile row either works or says why in one line."""
    assert "Traceback" not in result.output
    assert "unexpected" not in result.stderr, result.stderr
    if result.exit_code != 0:
        assert result.exit_code == 1, (result.exit_code, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


async def _populate(db: Path) -> None:
    """g1 waits on an approval, w1 on an event, c1 completed (result, journal values)."""
    async with Engine(db).register(Vault, Shop) as engine:
        await engine.start(Vault.guarded, 7, run_id="g1")
        await engine.start(Vault.waiter, run_id="w1")
        await (await engine.start(Shop.checkout, Order(id="o", amount=2), run_id="c1")).result()
        await engine.idle("g1", timeout=10)
        await engine.idle("w1", timeout=10)


@pytest.fixture
def db(tmp_path: Path, log: Path) -> Path:
    path = tmp_path / "rows.db"
    asyncio.run(_populate(path))
    return path


def read(db: Path, run_id: str) -> RunInfo:
    async def go() -> RunInfo:
        async with Engine(db, read_only=True) as engine:
            return await engine.get_run(run_id)

    return asyncio.run(go())


# ------------------------------------------------------------- hostile values, every column
def _inject(db: Path, column: str, value: Any) -> None:
    text = json.dumps(value)
    if column == "runs.result":
        put(db, "UPDATE runs SET result = ? WHERE run_id = 'c1'", (text,))
    elif column == "runs.error":
        put(db, "UPDATE runs SET error = ? WHERE run_id = 'c1'", (text,))
    elif column == "runs.input":
        put(db, "UPDATE runs SET input = ? WHERE run_id = 'g1'", (text,))
    elif column == "runs.state":
        state = json.loads(one(db, "SELECT state FROM runs WHERE run_id = 'g1'"))
        state["frame"]["n"] = value
        put(db, "UPDATE runs SET state = ? WHERE run_id = 'g1'", (json.dumps(state),))
    elif column == "steps.value":
        put(db, "UPDATE steps SET value = ? WHERE run_id = 'c1'", (text,))
    elif column == "approvals.body":
        put(db, "UPDATE approvals SET body = ? WHERE run_id = 'g1'", (text,))
    elif column == "approvals.extra":
        body = json.loads(one(db, "SELECT body FROM approvals WHERE run_id = 'g1'"))
        body["v"]["extra"] = {"attached": value}
        put(db, "UPDATE approvals SET body = ? WHERE run_id = 'g1'", (json.dumps(body),))
    elif column == "outbox.data":
        put(
            db,
            "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, ?, ?, 1e10)",
            ("Vault.opened", text),
        )
    else:
        raise AssertionError(column)


COLUMNS = [
    "runs.result",
    "runs.error",
    "runs.input",
    "runs.state",
    "steps.value",
    "approvals.body",
    "approvals.extra",
    "outbox.data",
]


@pytest.mark.parametrize("shape", ["each kind alone", "all kinds nested"])
@pytest.mark.parametrize("column", COLUMNS)
def test_hostile_values_are_read_as_data(
    db: Path, trap: Trap, log: Path, column: str, shape: str
) -> None:
    kinds = payloads(trap)
    if shape == "all kinds nested":
        _inject(db, column, [{"deep": [v]} for v in kinds.values()])
        variants = ["nested"]
    else:
        variants = list(kinds)
    for variant in variants:
        if shape != "all kinds nested":
            _inject(db, column, kinds[variant])
        for args in (
            ["status", "c1"],
            ["status", "g1"],
            ["runs"],
            ["approvals", "--status", "all"],
            ["render", "x", "--run", "c1", "-o", trap.dir / "c1.dot"],
        ):
            result = dotdo_cmd(*args, "--db", db)
            ok_or_one_line(result)
            if column not in ("approvals.body", "approvals.extra"):
                assert result.exit_code == 0, (args, result.stderr)
        trap.untouched()
    # Commands that resume, deliver and cancel, once the rows are hostile.
    ok_or_one_line(dotdo_cmd("approve", "g1/sign", "--as", "boss", *APP, "--db", db))
    ok_or_one_line(dotdo_cmd("send", "Vault.opened", "--data", "{}", *APP, "--db", db))
    ok_or_one_line(dotdo_cmd("cancel", "w1", "--db", db))
    trap.untouched()
    assert "wipe" not in ran(log)


def test_status_shows_an_unknown_model_as_stored_json(db: Path, trap: Trap) -> None:
    _inject(db, "runs.result", payloads(trap)["model"])
    result = dotdo_cmd("status", "c1", "--db", db)
    assert result.exit_code == 0, result.stderr
    assert trap.module in result.stdout and '"x":1' in result.stdout
    trap.untouched()


def test_a_hostile_local_fails_its_run_on_resume_and_nothing_else(
    db: Path, trap: Trap, log: Path
) -> None:
    _inject(db, "runs.state", payloads(trap)["dataclass"])
    result = dotdo_cmd("approve", "g1/sign", "--as", "boss", *APP, "--db", db)
    assert result.exit_code == 0, result.stderr
    assert "run g1 ended failed" in result.stdout and "not a data class" in result.stdout
    assert read(db, "g1").status == "failed"
    assert ran(log) == []  # the step after the approval never ran
    trap.untouched()


def test_an_unreadable_approval_is_refused_in_one_line(db: Path, trap: Trap) -> None:
    _inject(db, "approvals.body", payloads(trap)["dataclass"])
    listed = dotdo_cmd("approvals", "--status", "all", "--db", db)
    assert listed.exit_code == 0 and "no approvals" in listed.stdout
    decided = dotdo_cmd("approve", "g1/sign", "--as", "boss", "--db", db)
    assert decided.exit_code == 1
    assert "stored in a form dotdo cannot read" in decided.stderr
    ok_or_one_line(decided)
    cancelled = dotdo_cmd("cancel", "g1", "--db", db)
    assert cancelled.exit_code == 0, cancelled.stderr
    assert one(db, "SELECT status FROM approvals WHERE run_id = 'g1'") == "withdrawn"
    trap.untouched()


def test_an_approval_with_an_unknown_value_inside_is_still_listed_and_decided(
    db: Path, trap: Trap, log: Path
) -> None:
    _inject(db, "approvals.extra", payloads(trap)["model"])
    listed = dotdo_cmd("approvals", "--db", db)
    assert listed.exit_code == 0 and "g1/sign" in listed.stdout
    decided = dotdo_cmd("approve", "g1/sign", "--as", "boss", *APP, "--db", db)
    assert decided.exit_code == 0, decided.stderr
    assert 'run g1 completed: "opened 7"' in decided.stdout
    trap.untouched()


async def test_an_unreadable_event_does_not_stall_delivery(db: Path, trap: Trap) -> None:
    """One event row naming an unknown class used to fail every delivery batch it was in."""
    put(
        db,
        "INSERT INTO outbox(run_id, event, data, created_at) VALUES (NULL, 'Vault.other', ?, 1e10)",
        (json.dumps(payloads(trap)["dataclass"]),),
    )
    async with Engine(db).register(Vault) as engine:
        await engine.send("Vault.opened", {"ok": 1})
        assert (await engine.wait("w1", timeout=10)).result == {"ok": 1}
    trap.untouched()


async def test_an_event_with_unknown_data_reaches_its_waiter_as_stored_json(
    db: Path, trap: Trap
) -> None:
    hostile = payloads(trap)["model"]
    put(
        db,
        "INSERT INTO outbox(run_id, event, data, created_at) "
        "VALUES (NULL, 'Vault.opened', ?, 1e10)",
        (json.dumps(hostile),),
    )
    async with Engine(db).register(Vault) as engine:
        info = await engine.wait("w1", timeout=10)
    assert info.status == "completed"
    assert info.result == hostile
    trap.untouched()


# ------------------------------------------------------------------ run states and graphs
async def _approve_and_wait(db: Path, *classes: Any, secret: str | None = None) -> RunInfo:
    async with Engine(db, secret=secret).register(*classes) as engine:
        await engine.approve("g1/sign", by="boss")
        return await engine.wait("g1", timeout=10)


@pytest.mark.parametrize("method", ["wipe", "__init__", "__class__", "open_vault", "nope"])
async def test_a_state_cannot_point_compensation_at_any_method(
    db: Path, log: Path, method: str
) -> None:
    state = json.loads(one(db, "SELECT state FROM runs WHERE run_id = 'g1'"))
    state["comp"] = [["k", method, None]]
    put(db, "UPDATE runs SET state = ? WHERE run_id = 'g1'", (json.dumps(state),))
    info = await _approve_and_wait(db, Vault)
    assert info.status == "failed"
    assert "compensation stack" in str(info.error) and repr(method) in str(info.error)
    assert ran(log) == []


@pytest.mark.parametrize(
    "state",
    [
        "not json",
        "[]",
        '{"frame": []}',
        '{"frame": {}, "comp": 5}',
        '{"frame": {}, "comp": [], "attempt": "x"}',
        '{"frame": {}, "comp": [], "aliases": {"a": "missing"}}',
        '{"frame": ' * 50_000 + "{}" + "}" * 50_000,
    ],
    ids=["text", "list", "frame-list", "comp-int", "attempt-str", "alias", "deep"],
)
async def test_a_malformed_state_fails_its_run_and_the_engine_goes_on(
    db: Path, log: Path, state: str
) -> None:
    put(db, "UPDATE runs SET state = ? WHERE run_id = 'g1'", (state,))
    async with Engine(db).register(Vault) as engine:
        await engine.approve("g1/sign", by="boss")
        info = await engine.wait("g1", timeout=10)
        assert info.status == "failed" and "cannot be resumed" in str(info.error)
        await engine.send("Vault.opened", 1)  # the engine still works for other runs
        assert (await engine.wait("w1", timeout=10)).result == 1
    assert ran(log) == []


async def test_a_state_at_a_node_its_graph_lacks_fails_the_run(db: Path, log: Path) -> None:
    put(db, "UPDATE runs SET node = 'nowhere' WHERE run_id = 'g1'")
    info = await _approve_and_wait(db, Vault)
    assert info.status == "failed" and "'nowhere'" in str(info.error)
    assert ran(log) == []


def _pinned(db: Path) -> tuple[str, dict[str, Any]]:
    graph_hash = one(db, "SELECT graph_hash FROM runs WHERE run_id = 'g1'")
    return graph_hash, json.loads(one(db, "SELECT body FROM graphs WHERE hash = ?", (graph_hash,)))


def _evil(body: dict[str, Any], marker: Path) -> dict[str, Any]:
    """The graph with a statement that leaves `marker` put in front of its first block."""
    block = next(n for n in body["nodes"].values() if n["kind"] == "block")
    line = block["code"][0]["line"]
    evil = f"__import__('pathlib').Path({str(marker)!r}).write_text('pwned')"
    block["code"].insert(0, {"line": line, "src": evil})
    return body


def _edits(marker: Path) -> dict[str, Any]:
    def code(body: dict[str, Any]) -> str:
        return json.dumps(_evil(body, marker))

    def call(body: dict[str, Any]) -> str:
        step = next(n for n in body["nodes"].values() if n["kind"] == "step")
        step["call"] = f"__import__('pathlib').Path({str(marker)!r}).write_text"
        return json.dumps(body)

    def extra_field(body: dict[str, Any]) -> str:
        body["nodes"]["start"]["hook"] = "os.system"
        return json.dumps(body)

    return {
        "block code": code,
        "step call": call,
        "unknown field": extra_field,
        "not json": lambda body: "{" + json.dumps(body),
        "not a graph": lambda body: json.dumps({"$t": "module", "v": "os"}),
        "deep": lambda body: "[" * 100_000 + "]" * 100_000,
    }


@pytest.mark.parametrize("edit", list(_edits(Path("m"))))
def test_a_graph_edited_under_its_hash_never_runs(
    db: Path, log: Path, tmp_path: Path, edit: str
) -> None:
    """After a code change, the run resumes on its stored graph: an edited one is refused."""
    marker = tmp_path / "graph.marker"
    graph_hash, body = _pinned(db)
    put(db, "UPDATE graphs SET body = ? WHERE hash = ?", (_edits(marker)[edit](body), graph_hash))
    info = asyncio.run(_approve_and_wait(db, guarded_v2.Vault))
    assert info.status == "failed"
    assert isinstance(info.error, GraphIntegrityError), info.error
    assert graph_hash in str(info.error) and "'g1'" in str(info.error)
    assert not marker.exists() and ran(log) == []
    # The CLI draws a pinned graph only once it verified it, in one line otherwise.
    drawn = dotdo_cmd("render", "x", "--run", "g1", "-o", tmp_path / "g1.dot", "--db", db)
    assert drawn.exit_code == 1 and graph_hash in drawn.stderr
    ok_or_one_line(drawn)
    assert not (tmp_path / "g1.dot").exists()


async def test_an_intact_stored_graph_still_resumes_after_a_code_change(
    db: Path, log: Path
) -> None:
    """The other side of verification: versioning keeps working."""
    info = await _approve_and_wait(db, guarded_v2.Vault)
    assert info.status == "completed" and info.result == "opened 7"  # the old code's result
    assert ran(log) == ["open_vault"]


async def test_a_graph_of_another_workflow_is_refused(db: Path, log: Path) -> None:
    other = one(db, "SELECT graph_hash FROM runs WHERE run_id = 'w1'")
    put(db, "UPDATE runs SET graph_hash = ? WHERE run_id = 'g1'", (other,))
    info = await _approve_and_wait(db, guarded_v2.Vault)
    assert info.status == "failed" and isinstance(info.error, GraphIntegrityError)
    assert "is a graph of 'Vault.waiter', not of 'Vault.guarded'" in str(info.error)
    assert ran(log) == []


def _planted(db: Path, marker: Path) -> str:
    """An attacker's own graph for the workflow, under its own (correct) hash."""
    from dotdo import Graph

    _, body = _pinned(db)
    graph = Graph.from_json(json.dumps(_evil(body, marker)))
    put(
        db,
        "INSERT INTO graphs(hash, name, body, created_at) VALUES (?, ?, ?, 0)",
        (graph.hash, graph.name, graph.to_json()),
    )
    put(db, "UPDATE runs SET graph_hash = ? WHERE run_id = 'g1'", (graph.hash,))
    return graph.hash


async def test_a_planted_graph_that_does_not_compile_fails_its_run(db: Path, log: Path) -> None:
    """Without a secret a planted graph is compiled (docs/security.md); if it is not even
    Python, the run fails with a clear error and the engine goes on."""
    from dotdo import Graph

    _, body = _pinned(db)
    block = next(n for n in body["nodes"].values() if n["kind"] == "block")
    block["code"][0]["src"] = "def (:"
    graph = Graph.from_json(json.dumps(body))
    put(
        db,
        "INSERT INTO graphs(hash, name, body, created_at) VALUES (?, ?, ?, 0)",
        (graph.hash, graph.name, graph.to_json()),
    )
    put(db, "UPDATE runs SET graph_hash = ? WHERE run_id = 'g1'", (graph.hash,))
    async with Engine(db).register(guarded_v2.Vault) as engine:
        await engine.approve("g1/sign", by="boss")
        info = await engine.wait("g1", timeout=10)
        assert info.status == "failed" and "cannot be resumed" in str(info.error)
    assert ran(log) == []


@pytest.fixture
def signed_db(tmp_path: Path, log: Path) -> Path:
    path = tmp_path / "signed.db"

    async def populate() -> None:
        async with Engine(path, secret="s3cret").register(Vault) as engine:
            await engine.start(Vault.guarded, 7, run_id="g1")
            await engine.start(Vault.waiter, run_id="w1")
            await engine.idle("g1", timeout=10)

    asyncio.run(populate())
    return path


async def test_with_a_secret_a_planted_graph_is_refused(
    signed_db: Path, log: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "planted.marker"
    planted = _planted(signed_db, marker)
    info = await _approve_and_wait(signed_db, guarded_v2.Vault, secret="s3cret")
    assert info.status == "failed" and isinstance(info.error, GraphIntegrityError)
    assert planted in str(info.error) and "not signed" in str(info.error)
    assert not marker.exists() and ran(log) == []


async def test_with_a_secret_signed_graphs_resume_and_others_are_refused(
    signed_db: Path, db: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Signed by the same secret (given through the environment): resumes on the old graph.
    monkeypatch.setenv("DOTDO_SECRET", "s3cret")
    info = await _approve_and_wait(signed_db, guarded_v2.Vault)
    assert info.status == "completed" and info.result == "opened 7"
    # A run whose graph another secret signed: refused.
    monkeypatch.delenv("DOTDO_SECRET")
    async with Engine(signed_db, secret="s3cret").register(Vault) as engine:
        await engine.start(Vault.guarded, 8, run_id="g2")
        await engine.idle("g2", timeout=10)
    info = await _approve_id(signed_db, "g2", guarded_v2.Vault, secret="another")
    assert info.status == "failed" and "does not match this engine's secret" in str(info.error)
    # A database written without a secret: its graphs are unsigned, refused once one is set.
    info = await _approve_and_wait(db, guarded_v2.Vault, secret="s3cret")
    assert info.status == "failed" and "not signed" in str(info.error)
    assert ran(log) == ["open_vault"]


async def _approve_id(db: Path, run_id: str, *classes: Any, secret: str) -> RunInfo:
    async with Engine(db, secret=secret).register(*classes) as engine:
        await engine.approve(f"{run_id}/sign", by="boss")
        return await engine.wait(run_id, timeout=10)


async def test_without_a_secret_the_signature_rows_are_not_needed(db: Path, log: Path) -> None:
    """Signing is opt-in: an engine without a secret neither writes nor asks for one."""
    assert one(db, "SELECT count(*) FROM meta WHERE key LIKE 'graph-mac:%'") == 0
    info = await _approve_and_wait(db, guarded_v2.Vault)
    assert info.status == "completed"


# ------------------------------------------------------------ graphs.module names the trap
def _module_variants(trap: Trap) -> list[str]:
    return [trap.module, trap.package, f"{trap.package}.sub", "this", str(trap.dir / "x.flow")]


def _every_command(db: Path, out: Path) -> list[list[str | Path]]:
    return [
        ["status", "g1"],
        ["runs"],
        ["approvals"],
        ["render", "x", "--run", "g1", "-o", out],
        ["approve", "g1/sign", "--as", "boss"],
        ["reject", "g2/sign", "--as", "boss", "--reason", "no"],
        ["send", "Vault.opened", "--data", "{}"],
        ["cancel", "w1"],
    ]


async def _with_g2(db: Path) -> None:
    async with Engine(db).register(Vault) as engine:
        await engine.start(Vault.guarded, 9, run_id="g2")
        await engine.idle("g2", timeout=10)


@pytest.mark.parametrize("variant", range(5))
def test_no_command_imports_the_module_a_graph_row_names(
    db: Path, trap: Trap, log: Path, variant: int
) -> None:
    asyncio.run(_with_g2(db))
    put(db, "UPDATE graphs SET module = ?", (_module_variants(trap)[variant],))
    for args in _every_command(db, trap.dir / "g1.dot"):
        result = dotdo_cmd(*args, "--db", db)
        assert result.exit_code == 0, (args, result.stderr)
        trap.untouched()
    assert ran(log) == []  # without --app nothing drove the approved run on
    assert read(db, "g1").status == "waiting"


def test_no_command_imports_the_module_a_graph_row_names_in_a_fresh_process(
    db: Path, trap: Trap, tmp_path: Path
) -> None:
    """The same, as a user meets it: a subprocess started in the trap's own directory."""
    asyncio.run(_with_g2(db))
    put(db, "UPDATE graphs SET module = ?", (trap.module,))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOTDO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(trap.dir)])
    for args in _every_command(db, tmp_path / "g1.dot"):
        done = subprocess.run(
            [sys.executable, "-m", "dotdo.cli", *map(str, args), "--db", str(db)],
            cwd=trap.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (args, done.stderr)
        assert "Beautiful is better than ugly" not in done.stdout
        assert not trap.marker.exists(), args


async def test_a_worker_resume_never_imports_the_module_a_graph_row_names(
    db: Path, trap: Trap, log: Path
) -> None:
    put(db, "UPDATE graphs SET module = ?", (trap.module,))
    info = await _approve_and_wait(db, Vault)
    assert info.status == "completed" and ran(log) == ["open_vault"]
    trap.untouched()


def test_a_stored_approval_reads_back_without_the_app(db: Path) -> None:
    """The one class an approval row names is dotdo's own: no app code is needed."""

    async def go() -> Approval:
        async with Engine(db, read_only=True) as engine:
            found: Approval = await engine.get_approval("g1/sign")
            return found

    approval = asyncio.run(go())
    assert approval.status == "pending" and approval.approvers == ["boss"]
