"""Generated `.flow` programs, and the same programs as Python DO classes.

A program is a nested list of ops, drawn by `programs()`. `render(ops, "flow")` prints it as
`.flow` text, `render(ops, "py")` as the source of a DO subclass; both walk the ops in the same
order, so they name the same call sites (`step3`, `book4`, ...) and give the same PLAN of
outcomes. The steps of both are the functions of flow_program_steps (a .flow may bind only
public modules), re-exported here: a flow binds them with
`step work = flow_program_steps:work`, the Python twin's methods call them. They record
every execution in module-level lists that the properties read.

`render(ops, "flow", noise=rng)` also scatters text the formatter must normalise without
changing meaning (quotes, spacing, redundant parentheses, option order, comments), never
changing which line a statement is on: the graph records lines, so format(text) must keep
them for the graph hash to stay the same.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from flow_program_steps import (  # noqa: F401 - re-exported: F.EXEC, F.PLAN, F.reset, ...
    BOOKED,
    EXEC,
    NOTED,
    PLAN,
    UNDONE,
    book,
    note,
    once,
    reset,
    unbook,
    work,
)
from hypothesis import strategies as st

# ----------------------------------------------------------------------- generation
Outcome = st.sampled_from(
    [("ok", 0), ("ok", 0), ("flaky", 1), ("flaky", 2), ("fail", 0), ("flaky", 9)]
)
"""("flaky", 9) outlasts every retry policy: the step fails with its ConnectionError."""
CONDS = [
    "acc % 2 == 0",
    "acc % 3 == 1",
    "acc > 25",
    "not acc % 4 == 3",
    "acc % 5 == 0 or acc > 40",
    "acc in [4, 9, 13, 20]",
]
Cond = st.integers(0, len(CONDS) - 1)
IDS = ["work", "work_2", "book", "note", "wait", "random_2", "x"]
"""Explicit step ids (`as "id"` / step_id=): some are names the automatic naming would pick."""


def programs(depth: int = 0, in_loop: bool = False) -> st.SearchStrategy[list[Any]]:
    """Op lists: steps, sends, timers, waits, approvals, recorded values, guarded exits, and
    (two levels deep at most) if/elif/else, for, while and try/except/finally around more.
    `break`/`continue` are drawn only inside loops; every exit is guarded by a condition, so
    no block has dead code after it."""
    step = st.tuples(
        st.just("step"),
        Outcome,
        st.one_of(
            st.none(),
            st.tuples(st.just("retries"), st.integers(0, 2)),
            st.tuples(st.just("id"), st.sampled_from(IDS)),
        ),
    )
    exits = ["return", "fail", *(["break", "continue"] if in_loop else [])]
    leaf = st.one_of(
        step,
        st.tuples(st.just("book"), Outcome),
        step,
        st.tuples(st.just("once"), Outcome),
        st.tuples(st.just("send"), st.integers(0, 1)),
        st.tuples(st.sampled_from(exits), Cond),
        st.tuples(st.just("wait"), st.booleans()),
        st.tuples(st.just("approval"), st.booleans()),
        st.tuples(st.just("rec"), st.sampled_from(["random", "uuid", "now"])),
        st.tuples(st.just("sleep")),
    )
    if depth >= 2:
        return st.lists(leaf, min_size=1, max_size=2)

    def sub(loop: bool) -> st.SearchStrategy[list[Any]]:
        return st.deferred(lambda: programs(depth + 1, loop))

    handler = st.tuples(
        st.sampled_from(["PermanentError", "Error", ""]),
        st.sampled_from(["add", "msg", "fail", "reraise"]),
        st.one_of(st.just([]), sub(in_loop)),
    )
    node = st.one_of(
        leaf,
        leaf,
        st.tuples(
            st.just("if"),
            Cond,
            sub(in_loop),
            st.one_of(st.none(), sub(in_loop)),
            st.one_of(st.none(), st.tuples(Cond, sub(in_loop))),
        ),
        st.tuples(st.just("for"), st.integers(0, 2), sub(True)),
        st.tuples(st.just("while"), st.integers(1, 2), sub(True)),
        st.tuples(
            st.just("try"), sub(in_loop), st.one_of(st.none(), handler), st.none() | sub(in_loop)
        ).map(lambda t: t if t[2] or t[3] else (*t[:2], ("PermanentError", "add", []), None)),
    )
    return st.lists(node, min_size=1, max_size=3 if depth else 4)


# ------------------------------------------------------------------------ rendering
@dataclass
class Rendered:
    text: str
    plan: dict[str, tuple[str, int]]
    steps: set[str] = field(default_factory=set)


_HEADER_PY = """\
from datetime import timedelta

import _flow_programs as P
from dotdo import DO, PermanentError, compensate, step, workflow
from dotdo.dsl.flow.diagnostics import FlowFailure


class Generated(DO):
    @step(retries=3, initial_delay=0.001)
    async def work(self, sid, acc):
        return P.work(sid, acc)

    @step(retries=3, initial_delay=0.001)
    async def book(self, sid, acc):
        return await P.book(sid, acc)

    async def once(self, sid, acc):
        return await P.once(sid, acc)

    @step(retries=3, initial_delay=0.001)
    async def note(self, sid, value):
        P.note(sid, value)

    @compensate(book)
    async def unbook(self, value):
        P.unbook(value)

    @workflow
    async def wf(self, acc: int) -> int:
"""
_DECLS = {
    "work": ["retries 3", "delay 1ms"],
    "book": ["retries 3", "delay 1ms", "compensate with unbook"],
    "unbook": [],
    "once": [],
    "note": ["retries 3", "delay 1ms"],
}


class _Renderer:
    def __init__(self, lang: str, noise: random.Random | None) -> None:
        self.flow = lang == "flow"
        self.noise = noise
        self.plan: dict[str, tuple[str, int]] = {}
        self.steps: set[str] = set()
        self.ids: set[str] = set()
        self.names = 0

    # -- small pieces
    def fresh(self, prefix: str) -> str:
        self.names += 1
        return f"{prefix}{self.names}"

    def site(self, kind: str, outcome: tuple[str, int], loops: list[str]) -> str:
        """A new call site in the plan; the expression of its call id (site-iterations)."""
        name = f"{kind}{len(self.plan)}"
        self.plan[name] = outcome
        text = name + "".join(f"-{{{v}}}" for v in loops)
        if not self.flow:
            return f'f"{text}"' if loops else f'"{text}"'
        return self.quote(text)

    def quote(self, text: str) -> str:
        if self.noise is not None and self.noise.random() < 0.3:
            return f"'{text}'"
        return f'"{text}"'

    def cond(self, index: int) -> str:
        text = CONDS[index]
        if self.noise is not None:
            if self.noise.random() < 0.3:
                text = re.sub(r" (%|==|>) ", r"\1", text).replace(", ", ",")
            if self.noise.random() < 0.3:
                text = f"({text})"
        return text

    def line(self, pad: str, text: str) -> str:
        """One statement line, with a trailing comment now and then (flow noise)."""
        if self.noise is not None and self.noise.random() < 0.1:
            return f"{pad}{text}  # noted"
        return pad + text

    def use(self, name: str) -> None:
        self.steps.add(name)
        if name == "book":
            self.steps.add("unbook")

    # -- statements
    def block(self, ops: list[Any], depth: int, loops: list[str]) -> list[str]:
        lines: list[str] = []
        for op in ops:
            lines.extend(self.op(op, depth, loops))
        return lines or ["    " * depth + "pass"]

    def op(self, op: Any, depth: int, loops: list[str]) -> list[str]:
        pad, kind, flow = "    " * depth, op[0], self.flow
        inner = "    " * (depth + 1)
        if kind == "step":
            self.use("work")
            sid = self.site("step", op[1], loops)
            option, name = op[2], None
            if option is not None and option[0] == "id" and option[1] not in self.ids:
                name = option[1]
                self.ids.add(name)
            if flow:
                tail = f" retries {option[1]}" if option and option[0] == "retries" else ""
                tail += f" as {self.quote(name)}" if name else ""
                return [self.line(pad, f"acc = do work({sid}, acc){tail}")]
            if option and option[0] == "retries":
                return [f"{pad}acc = await self.do(self.work, {sid}, acc, retries={option[1]})"]
            if name:
                return [f'{pad}acc = await self.do(self.work, {sid}, acc, step_id="{name}")']
            return [f"{pad}acc = await self.work({sid}, acc)"]
        if kind in ("book", "once"):
            self.use(kind)
            sid = self.site(kind, op[1], loops)
            if flow:
                verb = "do" if kind == "book" else "try"
                return [self.line(pad, f"acc = {verb} {kind}({sid}, acc)")]
            if kind == "book":
                return [f"{pad}acc = await self.book({sid}, acc)"]
            return [f"{pad}acc = await self.try_(self.once, {sid}, acc)"]
        if kind == "send":
            if op[1] == 0:
                text = 'send "Gen.acc" {acc: acc}' if flow else 'self.send("Gen.acc", {"acc": acc})'
            else:
                text = 'send "Gen.s{acc % 3}"' if flow else 'self.send(f"Gen.s{acc % 3}")'
            return [self.line(pad, text)]
        if kind == "sleep":
            return [self.line(pad, "sleep 1ms" if flow else "await self.sleep(0.001)")]
        if kind == "wait":
            ev = self.fresh("ev")
            if flow:
                where = " where event.acc == acc" if op[1] else ""
                head = f'{ev} = wait for "Gen.acc"{where} timeout 20ms'
                test = f"{ev} == null"
            else:
                where = ', match={"acc": acc}' if op[1] else ""
                head = f'{ev} = await self.wait_for_event("Gen.acc"{where}, timeout=0.02)'
                test = f"{ev} is None"
            return [
                self.line(pad, head),
                f"{pad}if {test}:",
                f"{inner}acc = acc + 1",
                f"{pad}else:",
                f'{inner}acc = acc + {ev}.data["acc"] % 5',
            ]
        if kind == "approval":
            var, key = self.fresh("d"), self.fresh("ap")
            self.ids.add(key)
            if flow:
                who = 'approver: "boss"' if op[1] else 'approvers: ["boss"]'
                lines = [f'{pad}{var} = approval "{key}":', f'{inner}title: "check {{acc}}"']
                lines += [f"{inner}{who}", f"{inner}deadline: 5ms"]
            else:
                lines = [
                    f"{pad}{var} = await self.approval_flow.request_approval("
                    f'type="{key}", title=f"check {{acc}}", approvers=["boss"], '
                    f'deadline=timedelta(milliseconds=5), step_id="{key}")'
                ]
            return [*lines, f"{pad}acc = acc + len({var}.status)"]
        if kind == "rec":
            self.use("note")
            var = self.fresh("r")
            sid = self.site("rec", ("ok", 0), loops)
            what = op[1]
            lines = [f"{pad}{var} = {what}()" if flow else f"{pad}{var} = self.{what}()"]
            if what == "now":
                if flow:
                    lines.append(f"{pad}sleep until {var} + 1ms")
                else:
                    lines.append(f"{pad}await self.sleep_until({var} + timedelta(milliseconds=1))")
            call = f"do note({sid}, str({var}))" if flow else f"await self.note({sid}, str({var}))"
            return [*lines, self.line(pad, call)]
        if kind in ("return", "fail", "break", "continue"):
            body = {"return": "return acc", "break": "break", "continue": "continue"}.get(kind)
            if body is None:
                body = 'fail "stop at {acc}"' if flow else 'raise FlowFailure(f"stop at {acc}")'
            return [f"{pad}if {self.cond(op[1])}:", self.line(inner, body)]
        if kind == "if":
            lines = [f"{pad}if {self.cond(op[1])}:", *self.block(op[2], depth + 1, loops)]
            if op[4] is not None:
                lines.append(f"{pad}elif {self.cond(op[4][0])}:")
                lines.extend(self.block(op[4][1], depth + 1, loops))
            if op[3] is not None:
                lines.append(f"{pad}else:")
                lines.extend(self.block(op[3], depth + 1, loops))
            return lines
        if kind == "for":
            var = self.fresh("i")
            head = f"{pad}for {var} in range({op[1]}):"
            return [head, *self.block(op[2], depth + 1, [*loops, var])]
        if kind == "while":
            var = self.fresh("w")
            lines = [f"{pad}{var} = 0", f"{pad}while {var} < {op[1]}:", f"{inner}{var} = {var} + 1"]
            return lines + self.block(op[2], depth + 1, [*loops, var])
        assert kind == "try", op
        lines = [f"{pad}try:", *self.block(op[1], depth + 1, loops)]
        if op[2] is not None:
            exc, action, ops = op[2]
            var = self.fresh("e")
            if not flow:
                clause = f"except {'Exception' if exc in ('Error', '') else exc} as {var}:"
            elif exc or action == "msg":
                clause = f"except {exc or 'Error'} as {var}:"
            else:
                clause = "except:"
            lines.append(pad + clause)
            if action in ("fail", "reraise"):
                if flow:
                    text = 'fail "gave up at {acc}"' if action == "fail" else "fail"
                else:
                    text = 'raise FlowFailure(f"gave up at {acc}")' if action == "fail" else "raise"
                lines.append(inner + text)
            else:
                add = f"len(str({var}))" if action == "msg" else "1000"
                lines.append(self.line(inner, f"acc = acc + {add}"))
                lines.extend(self.block(ops, depth + 1, loops) if ops else [])
        if op[3] is not None:
            lines.append(f"{pad}finally:")
            lines.extend(self.block(op[3], depth + 1, loops))
        return lines


def render(ops: list[Any], lang: str, noise: random.Random | None = None) -> Rendered:
    """The program as `.flow` text (lang "flow") or Python source (lang "py")."""
    r = _Renderer(lang, noise)
    body = r.block(ops, 1 if lang == "flow" else 2, [])
    if lang == "py":
        return Rendered(_HEADER_PY + "\n".join([*body, "        return acc", ""]), r.plan, r.steps)
    decls = []
    for name in (n for n in _DECLS if n in r.steps):
        options = list(_DECLS[name])
        if noise is not None:
            noise.shuffle(options)
        decls.append(" ".join([f"step {name} = flow_program_steps:{name}", *options]))
    lines = [*decls, *([""] if decls else []), "workflow wf(acc: int) -> int:", *body]
    lines += ["    return acc", ""]
    return Rendered("\n".join(lines), r.plan, r.steps)
