"""What the workflow compiler rejects: each case raises CompileError at class creation, with
the user's file, 1-based line and column of the offending code, and a hint."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from pathlib import Path

import pytest

from dotdo import CompileError

_counter = itertools.count()

_HEADER = """\
import asyncio
from dotdo import DO, step, workflow

COUNTER = 0


def f(*args, **kwargs):
    return 1


async def agen():
    yield 1


class ctx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None


"""

_CLASS = """\
class W(DO):
    @step(retries=0)
    async def st(self, *args):
        return 1

"""


def _source(method: str, *, nested: bool) -> str:
    """A module whose class W holds `method` (dedented text starting at its decorator)."""
    body = _CLASS + textwrap.indent(textwrap.dedent(method).strip("\n"), "    ") + "\n"
    if not nested:
        return _HEADER + body
    # The same class inside a function (deeper indentation, closure cells).
    return (
        _HEADER
        + "def make():\n    x = 1\n    y = [x]\n\n"
        + textwrap.indent(body, "    ")
        + "    return W\n\n\nmake()\n"
    )


def _load(tmp_path: Path, source: str) -> None:
    name = f"_dotdo_compile_case_{next(_counter)}"
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)


def compile_error(tmp_path: Path, method: str, *, nested: bool = False) -> tuple[CompileError, str]:
    source = _source(method, nested=nested)
    with pytest.raises(CompileError) as info:
        _load(tmp_path, source)
    return info.value, source


def position(source: str, needle: str, nth: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the nth occurrence of `needle` in `source`.

    A `»` inside the needle marks the exact spot, e.g. `retries=»n` points at `n`.
    """
    shift = needle.find("»")
    if shift >= 0:
        needle = needle.replace("»", "")
    start = -1
    for _ in range(nth):
        start = source.index(needle, start + 1)
    start += max(shift, 0)
    before = source[:start]
    line = before.count("\n") + 1
    col = start - (before.rfind("\n") + 1) + 1
    return line, col


def assert_at(err: CompileError, tmp_path: Path, source: str, needle: str, nth: int = 1) -> None:
    """The error names this file and the needle's line and column; a hint is checked apart."""
    line, col = position(source, needle, nth)
    assert Path(err.file).parent == tmp_path
    assert Path(err.file).name.startswith("_dotdo_compile_case_")
    assert (err.line, err.col) == (line, col), f"{err} (expected {line}:{col} at {needle!r})"
    assert str(err).startswith(f"{err.file}:{line}:{col}: ")


def assert_hint(err: CompileError) -> None:
    assert err.hint, f"no hint in: {err}"
    assert str(err).endswith(f" (hint: {err.hint})")


# --------------------------------------------------------------- one case per construct

CASES: dict[str, tuple[str, str, str]] = {
    # name: (method source, needle marking the reported position, words in the message)
    "await_in_list_comprehension": (
        """
        @workflow
        async def wf(self, xs):
            ys = [await self.do(f, x) for x in xs]
            return ys
        """,
        "await self.do(f, x)",
        "comprehension",
    ),
    "durable_call_in_generator_expression": (
        """
        @workflow
        async def wf(self, xs):
            return sum(await self.st(x) for x in xs)
        """,
        "await self.st(x)",
        "comprehension",
    ),
    "step_call_inside_lambda": (
        """
        @workflow
        async def wf(self):
            return await self.do(lambda: self.st(1))
        """,
        "self.st(1)",
        "lambda",
    ),
    "await_in_right_operand_of_and": (
        """
        @workflow
        async def wf(self, ok):
            if ok and await self.do(f):
                return 1
        """,
        "await self.do(f)",
        "and",
    ),
    "await_in_right_operand_of_or": (
        """
        @workflow
        async def wf(self, ok):
            x = await self.st(1) or await self.st(2)
            return x
        """,
        "await self.st(2)",
        "or",
    ),
    "await_in_conditional_expression_branch": (
        """
        @workflow
        async def wf(self, ok):
            x = 1 if ok else await self.st(2)
            return x
        """,
        "await self.st(2)",
        "conditional",
    ),
    "with_block_around_durable_await": (
        """
        @workflow
        async def wf(self):
            with ctx() as c:
                await self.do(f, c)
        """,
        "with ctx()",
        "with",
    ),
    "async_with_block_around_durable_await": (
        """
        @workflow
        async def wf(self):
            await self.st(0)
            async with ctx() as c:
                await self.do(f, c)
        """,
        "async with",
        "with",
    ),
    "async_for": (
        """
        @workflow
        async def wf(self):
            async for item in agen():
                await self.do(f, item)
        """,
        "async for",
        "async for",
    ),
    "match_with_await": (
        """
        @workflow
        async def wf(self, x):
            match x:
                case 1:
                    await self.do(f)
                case _:
                    pass
        """,
        "match x",
        "match",
    ),
    "except_star_with_await": (
        """
        @workflow
        async def wf(self):
            try:
                await self.do(f)
            except* ValueError:
                pass
        """,
        "try:",
        "except*",
    ),
    "nested_async_def_containing_await": (
        """
        @workflow
        async def wf(self):
            async def inner():
                await self.do(f)
            await self.st(1)
        """,
        "async def inner",
        "nested",
    ),
    "nested_def_calling_a_step": (
        """
        @workflow
        async def wf(self):
            def inner():
                return self.st(1)
            return inner
        """,
        "def inner",
        "nested",
    ),
    "global_statement": (
        """
        @workflow
        async def wf(self):
            global COUNTER
            COUNTER += 1
            await self.st(COUNTER)
        """,
        "global COUNTER",
        "global",
    ),
    "await_of_non_durable_coroutine": (
        """
        @workflow
        async def wf(self):
            await self.st(1)
            await asyncio.sleep(1)
        """,
        "await asyncio.sleep(1)",
        "await",
    ),
    "await_of_non_durable_coroutine_in_expression": (
        """
        @workflow
        async def wf(self):
            x = 1 + await asyncio.sleep(0, 1)
            return x
        """,
        "await asyncio.sleep(0, 1)",
        "await",
    ),
    "await_of_plain_async_method": (
        """
        async def helper(self):
            return 1

        @workflow
        async def wf(self):
            return await self.helper()
        """,
        "await self.helper()",
        "await",
    ),
    "step_called_without_await": (
        """
        @workflow
        async def wf(self):
            self.st(1)
        """,
        "self.st(1)",
        "await",
    ),
    "do_called_without_await": (
        """
        @workflow
        async def wf(self):
            x = self.do(f, 1)
            return x
        """,
        "self.do(f, 1)",
        "await",
    ),
    "send_used_as_expression": (
        """
        @workflow
        async def wf(self):
            result = self.send("Order.placed", {"id": 1})
            return result
        """,
        "self.send(",
        "send",
    ),
    "non_literal_step_id": (
        """
        @workflow
        async def wf(self, name):
            await self.do(f, step_id=name)
        """,
        "step_id=»name",
        "step_id",
    ),
    "f_string_step_id": (
        """
        @workflow
        async def wf(self, i):
            await self.do(f, step_id=f"charge-{i}")
        """,
        'f"charge-{i}"',
        "step_id",
    ),
    "non_literal_retries": (
        """
        @workflow
        async def wf(self, n):
            await self.do(f, retries=n)
        """,
        "retries=»n",
        "retries",
    ),
    "retries_on_try_": (
        """
        @workflow
        async def wf(self):
            await self.try_(f, retries=2)
        """,
        "self.try_(",
        "retries",
    ),
    "backoff_on_try_": (
        """
        @workflow
        async def wf(self):
            await self.try_(f, timeout=3, backoff=2.0)
        """,
        "self.try_(",
        "backoff",
    ),
    "class_defined_inside_workflow": (
        """
        @workflow
        async def wf(self):
            class Local:
                pass
            await self.do(f, Local)
        """,
        "class Local",
        "class",
    ),
    "super_call": (
        """
        @workflow
        async def wf(self):
            await self.st(1)
            return super().__init__
        """,
        "super()",
        "super",
    ),
    "now_with_arguments": (
        """
        @workflow
        async def wf(self):
            await self.st(1)
            t = self.now(1)
            return t
        """,
        "self.now(1)",
        "now",
    ),
    "sleep_with_two_arguments": (
        """
        @workflow
        async def wf(self):
            await self.sleep(1, 2)
        """,
        "self.sleep(1, 2)",
        "sleep",
    ),
    "do_without_a_function": (
        """
        @workflow
        async def wf(self):
            await self.do()
        """,
        "self.do()",
        "do",
    ),
}


@pytest.mark.parametrize("nested", [False, True], ids=["module", "in_function"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unsupported_construct_position(tmp_path: Path, case: str, nested: bool) -> None:
    method, needle, words = CASES[case]
    err, source = compile_error(tmp_path, method, nested=nested)
    assert_at(err, tmp_path, source, needle)
    assert words.lower() in err.message.lower()


@pytest.mark.parametrize("case", sorted(CASES))
def test_unsupported_construct_has_hint(tmp_path: Path, case: str) -> None:
    method, _, _ = CASES[case]
    err, _ = compile_error(tmp_path, method)
    assert_hint(err)


def test_nonlocal_statement(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            nonlocal x
            x = await self.st(1)
        """,
        nested=True,
    )
    assert_at(err, tmp_path, source, "nonlocal x")
    assert_hint(err)
    assert "nonlocal" in err.message


def test_two_call_sites_with_the_same_step_id(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            await self.do(f, step_id="charge")
            await self.do(f, 2, step_id="charge")
        """,
    )
    first, second = (position(source, '"charge"', n) for n in (1, 2))
    assert (err.line, err.col) in (first, second)
    other = first if (err.line, err.col) == second else second
    assert "charge" in err.message
    assert err.hint is not None and str(other[0]) in err.hint
    assert str(err).startswith(f"{err.file}:{err.line}:{err.col}: ")


def test_same_step_id_on_do_and_try_(tmp_path: Path) -> None:
    err, _ = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self, c):
            if c:
                await self.try_(f, step_id="x")
            else:
                await self.do(f, step_id="x")
        """,
    )
    assert "'x'" in err.message


def test_plain_def_workflow(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        def wf(self):
            return 1
        """,
    )
    decorator = position(source, "@workflow")
    definition = position(source, "def wf")
    assert (err.line, err.col) in (decorator, definition)
    assert "async def" in str(err)
    assert err.hint
    assert str(err).startswith(f"{err.file}:{err.line}:{err.col}: ")


def test_error_position_in_a_deeply_nested_statement(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self, xs):
            for x in xs:
                try:
                    if x:
                        await self.st(x)
                    else:
                        y = [await self.st(v) for v in x]
                finally:
                    pass
        """,
        nested=True,
    )
    assert_at(err, tmp_path, source, "await self.st(v)")


def test_error_on_a_continuation_line(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self, ok):
            total = (
                await self.st(1)
                + (1 if ok else await self.st(2))
            )
            return total
        """,
    )
    assert_at(err, tmp_path, source, "await self.st(2)")


def test_compile_error_is_a_dotdo_error() -> None:
    from dotdo import DotdoError

    err = CompileError("boom", file="x.py", line=3, col=4, hint="do this")
    assert isinstance(err, DotdoError)
    assert str(err) == "x.py:3:4: boom (hint: do this)"
    assert (err.file, err.line, err.col, err.hint, err.message) == ("x.py", 3, 4, "do this", "boom")


def test_inline_class_in_test_function_reports_this_file() -> None:
    """inspect.getsource also works for classes defined inside a test function."""
    from dotdo import DO, workflow

    with pytest.raises(CompileError) as info:

        class Inline(DO):
            @workflow
            async def wf(self) -> None:
                await asyncio_sleep_alias(1)  # noqa: F821

    err = info.value
    assert Path(err.file) == Path(__file__)
    line, col = _this_file_position("await asyncio_sleep_alias(1)")
    assert (err.line, err.col) == (line, col)


def _this_file_position(needle: str) -> tuple[int, int]:
    return position(Path(__file__).read_text(), needle)


# ------------------------------------------------------ regressions of fixed core bugs


# Regression: durable op inside a lambda in a plain statement is not rejected (self.now() there
# runs unrecorded)
def test_recorded_call_inside_lambda_in_plain_statement(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            stamp = lambda: self.now()
            await self.st(1)
            return stamp
        """,
    )
    assert_at(err, tmp_path, source, "self.now()")
    assert_hint(err)


# Regression: a nested def inside an if/for calling a durable op is not rejected (only a def at
# the top level of the body is checked)
def test_nested_def_in_if_calling_a_durable_op(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self, ok):
            if ok:
                def helper():
                    return self.uuid()
            await self.st(1)
        """,
    )
    assert_at(err, tmp_path, source, "def helper")
    assert_hint(err)


# Regression: `async for` with no await in its body is not rejected at class creation; it fails
# later with SyntaxError when the engine builds the program
def test_async_for_without_await_in_body(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            out = []
            async for item in agen():
                out.append(item)
            await self.st(out)
        """,
    )
    assert_at(err, tmp_path, source, "async for")
    assert_hint(err)


# Regression: `async with` with no await in its body is not rejected at class creation; it fails
# later with SyntaxError when the engine builds the program
def test_async_with_without_await_in_body(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            async with ctx():
                y = 1
            await self.st(y)
        """,
    )
    assert_at(err, tmp_path, source, "async with")
    assert_hint(err)


# Regression: an async comprehension (no await node) is not rejected at class creation; it fails
# later with SyntaxError when the engine builds the program
def test_async_comprehension(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            xs = [x async for x in agen()]
            await self.st(xs)
        """,
    )
    assert_at(err, tmp_path, source, "[x async for")
    assert_hint(err)


# Regression: `yield` made the workflow an async generator; the compiler accepted it.
def test_yield_in_workflow(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            await self.st(1)
            yield 1
        """,
    )
    assert_at(err, tmp_path, source, "yield 1", nth=2)  # the first is in agen()
    assert_hint(err)


# Regression: policy literals are not type-checked (`retries='2'` compiles, then the engine hits
# a TypeError on the first failure and the run hangs in 'running')
def test_policy_literal_of_the_wrong_type(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            await self.do(f, retries="2")
        """,
    )
    assert_at(err, tmp_path, source, '"2"')
    assert_hint(err)


# Regression: CompileError.col counts UTF-8 bytes (ast col_offset), not characters, so a
# non-ASCII character earlier on the line shifts it
def test_column_counts_characters_not_bytes(tmp_path: Path) -> None:
    err, source = compile_error(
        tmp_path,
        """
        @workflow
        async def wf(self):
            x = ["é", await asyncio.sleep(1)]
        """,
    )
    assert_at(err, tmp_path, source, "await asyncio.sleep(1)")
    assert_hint(err)


# Regression: a workflow whose source has a line less indented than its `def` (a triple-quoted
# string) raises IndentationError from textwrap.dedent+ast.parse
def test_workflow_with_unindented_string_continuation_compiles(tmp_path: Path) -> None:
    source = _source(
        '''
        @workflow
        async def wf(self):
            q = """
        select 1"""
            await self.st(q)
            return q
        ''',
        nested=False,
    )
    # Put the string's second line at column 0, as an editor would keep it.
    source = source.replace("\n    select 1", "\nselect 1")
    assert "\nselect 1" in source
    _load(tmp_path, source)  # must not raise


def test_workflow_without_source_file() -> None:
    """A class made by exec() has no source file to lower: a clear error, not a crash."""
    from dotdo import DO, workflow

    source = "class X(DO):\n    @workflow\n    async def wf(self):\n        return 1\n"
    with pytest.raises(CompileError) as info:
        exec(compile(source, "<string>", "exec"), {"DO": DO, "workflow": workflow})
    err = info.value
    assert err.file == "<string>"
    assert err.line == 2
    assert str(err).startswith("<string>:2:")
    assert_hint(err)
