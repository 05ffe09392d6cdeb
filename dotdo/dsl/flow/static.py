"""Read a Python module's source with `ast`, so `dotdo check` learns what it defines without
running a line of it.

A flow's steps must be functions defined (`def`/`async def`) in the module it names, bound
once, undecorated; its imported types must be data classes defined there (pydantic models,
dataclasses, enums, exception classes). Both are questions about the source text: which
top-level statements bind a name, what a class derives from. A name bound twice, by an
import, an assignment or a `global` statement, is not a definition that can be trusted,
so it is refused here; whatever the source cannot show (a star import, a metaclass, a
decorator) is refused too, with the reason. The loader then imports the module and checks
that the live object is the very `def` or `class` seen here (same file, same line).
"""

from __future__ import annotations

import ast
import builtins
import enum
import inspect
import os
import sys
from dataclasses import dataclass, field, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dotdo.dsl.flow.sandbox import HOST, Located, locate

__all__ = [
    "FORBIDDEN_FIELD_TYPES",
    "ClassKind",
    "FunctionInfo",
    "ModuleInfo",
    "TypeInfo",
    "class_kind",
    "forbidden_in_text",
    "host_type",
    "read_module",
]

ClassKind = Literal["model", "dataclass", "enum", "error"]

FORBIDDEN_FIELD_TYPES = frozenset(
    {
        "ImportString",
        "Callable",
        "Type",
        "type",
        "ModuleType",
        "FunctionType",
        "MethodType",
        "LambdaType",
        "BuiltinFunctionType",
        "CodeType",
        "FrameType",
    }
)
"""Field types that turn data into code: a string into an imported object (ImportString),
or that hold callables, classes or modules. A type with such a field is not plain data."""

_ROOTS: dict[str, ClassKind] = {
    "pydantic.BaseModel": "model",
    "pydantic.main.BaseModel": "model",
    "pydantic.RootModel": "model",
    "pydantic.root_model.RootModel": "model",
    "enum.Enum": "enum",
    "enum.IntEnum": "enum",
    "enum.StrEnum": "enum",
    "enum.Flag": "enum",
    "enum.IntFlag": "enum",
}
_MIXINS = frozenset(
    {"builtins.object", "builtins.str", "builtins.int", "builtins.float", "typing.Generic"}
)
_DATACLASS = frozenset({"dataclasses.dataclass", "pydantic.dataclasses.dataclass"})
_DEPTH = 16


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    line: int
    signature: inspect.Signature


@dataclass(frozen=True)
class TypeInfo:
    """An importable data class, as the source shows it."""

    name: str
    module: str
    kind: ClassKind
    line: int = 0


@dataclass
class ModuleInfo:
    """The top-level definitions of one module's source."""

    name: str
    file: Path
    package: bool
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    imports: dict[str, str] = field(default_factory=dict)
    """Local name -> the dotted name it was imported as (`BaseModel` -> `pydantic.BaseModel`)."""
    bindings: dict[str, int] = field(default_factory=dict)
    """How many statements bind each top-level name (a definition must be the only one)."""
    star: bool = False
    """`from x import *` somewhere at top level: any name may be rebound."""

    def public(self) -> list[str]:
        return [n for n in self.bindings if not n.startswith("_")]

    def function(self, name: str) -> FunctionInfo | str:
        """The function `name` defines, or why `name` is not a step this module defines."""
        node = self.functions.get(name)
        why = self._single(name, node, "function")
        if why is not None:
            return why
        assert node is not None
        if node.decorator_list:
            return (
                f"`{self.name}.{name}` is decorated; a step must be a plain function (write one "
                "that calls the decorated function)"
            )
        return FunctionInfo(name, node.lineno, signature_of(node.args))

    def data_class(self, name: str) -> TypeInfo | str:
        """The data class `name` defines, or why it is not one this module defines."""
        node = self.classes.get(name)
        why = self._single(name, node, "class")
        if why is not None:
            return why
        assert node is not None
        kind = _class_node_kind(self, node, 0)
        if isinstance(kind, str) and kind not in ("model", "dataclass", "enum", "error"):
            return kind
        return TypeInfo(name, self.name, kind, node.lineno)  # type: ignore[arg-type]

    def _single(self, name: str, node: ast.AST | None, what: str) -> str | None:
        where = f"`{self.name}`"
        if self.star:
            return f"{where} has a `from ... import *`, so what `{name}` is cannot be read"
        if node is None:
            if name in self.imports:
                return (
                    f"`{name}` is imported into {where} from `{self.imports[name]}`, not defined "
                    f"there; a flow can only use a {what} its module defines"
                )
            if name in self.bindings:
                return f"`{name}` in {where} is not a {what} definition (def/class)"
            return f"{where} has no {what} `{name}`"
        if self.bindings.get(name, 0) != 1:
            return f"`{name}` is bound more than once in {where}; it must be defined once"
        return None


# ------------------------------------------------------------------------ reading
def read_module(located: Located) -> ModuleInfo | str:
    """The module's top-level definitions, or why its source cannot be read."""
    try:
        stat = located.file.stat()
    except OSError as exc:
        return f"cannot read {located.file}: {exc.strerror or exc}"
    return _read(located.name, str(located.file), located.package, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _read(name: str, file: str, package: bool, mtime: int, size: int) -> ModuleInfo | str:
    try:
        source = Path(file).read_bytes()
        tree = ast.parse(source, filename=file)
    except (OSError, SyntaxError, ValueError) as exc:
        return f"cannot read `{name}` ({file}): {type(exc).__name__}: {exc}"
    info = ModuleInfo(name, Path(file), package)
    _collect(info, tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Global | ast.Nonlocal):
            for bound in node.names:  # a function may rebind it when called
                info.bindings[bound] = info.bindings.get(bound, 0) + 2
    return info


def _bind(info: ModuleInfo, name: str) -> None:
    info.bindings[name] = info.bindings.get(name, 0) + 1


def _collect(info: ModuleInfo, body: list[ast.stmt]) -> None:
    """Top-level bindings, into compound statements but not into functions or classes."""
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            info.functions.setdefault(stmt.name, stmt)
            _bind(info, stmt.name)
            for default in [*stmt.args.defaults, *stmt.decorator_list]:
                _walrus(info, default)
            continue
        if isinstance(stmt, ast.ClassDef):
            info.classes.setdefault(stmt.name, stmt)
            _bind(info, stmt.name)
            continue
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                local = alias.asname or alias.name.split(".")[0]
                info.imports[local] = alias.name if alias.asname else local
                _bind(info, local)
            continue
        if isinstance(stmt, ast.ImportFrom):
            base = _absolute(info, stmt.module, stmt.level)
            for alias in stmt.names:
                if alias.name == "*":
                    info.star = True
                    continue
                local = alias.asname or alias.name
                info.imports[local] = f"{base}.{alias.name}" if base else alias.name
                _bind(info, local)
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                _bind(info, node.name)  # defined inside a compound statement
                continue
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                _bind(info, node.id)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                _bind(info, node.name)
            elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                _bind(info, node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                _bind(info, node.rest)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                for alias in node.names:
                    if alias.name == "*":
                        info.star = True
                    else:
                        _bind(info, (alias.asname or alias.name).split(".")[0])


def _walrus(info: ModuleInfo, expr: ast.expr) -> None:
    for node in ast.walk(expr):
        if isinstance(node, ast.NamedExpr):
            _bind(info, node.target.id)


def _absolute(info: ModuleInfo, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    package = info.name if info.package else info.name.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, *([module] if module else [])])


# --------------------------------------------------------------------- signatures
class _Default:
    """A default value shown as its source text (the value itself is never computed)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def signature_of(args: ast.arguments) -> inspect.Signature:
    """The `inspect.Signature` a def's arguments describe, defaults shown as source."""
    P = inspect.Parameter
    params: list[inspect.Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    first_default = len(positional) - len(args.defaults)
    for i, arg in enumerate(positional):
        kind = P.POSITIONAL_ONLY if i < len(args.posonlyargs) else P.POSITIONAL_OR_KEYWORD
        default: Any = P.empty
        if i >= first_default:
            default = _Default(ast.unparse(args.defaults[i - first_default]))
        params.append(P(arg.arg, kind, default=default))
    if args.vararg:
        params.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        shown = P.empty if kw_default is None else _Default(ast.unparse(kw_default))
        params.append(P(arg.arg, P.KEYWORD_ONLY, default=shown))
    if args.kwarg:
        params.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


# ---------------------------------------------------------------------- data classes
def _qualified(info: ModuleInfo, expr: ast.expr) -> str | None:
    """The dotted name an expression in `info` refers to: `BaseModel` -> pydantic.BaseModel."""
    if isinstance(expr, ast.Subscript):
        return _qualified(info, expr.value)
    if isinstance(expr, ast.Name):
        if expr.id in info.imports:
            return info.imports[expr.id]
        if expr.id in info.bindings:
            return f"{info.name}.{expr.id}"
        if hasattr(builtins, expr.id):
            return f"builtins.{expr.id}"
        return None
    if isinstance(expr, ast.Attribute):
        base = _qualified(info, expr.value)
        return f"{base}.{expr.attr}" if base else None
    return None


def _live_host(qualname: str) -> Any:
    """An object of dotdo's own, already imported modules (reading them runs nothing)."""
    module, _, name = qualname.rpartition(".")
    loaded = sys.modules.get(module)
    return None if loaded is None else vars(loaded).get(name)


def _live_kind(value: Any) -> ClassKind | None:
    from pydantic import BaseModel

    if not isinstance(value, type):
        return None
    if issubclass(value, BaseModel):
        return "model"
    if is_dataclass(value):
        return "dataclass"
    if issubclass(value, enum.Enum):
        return "enum"
    if issubclass(value, Exception):
        return "error"
    return None


def host_type(name: str) -> TypeInfo | str:
    """`import dotdo: name`: one of dotdo's public data types (records, errors)."""
    host = sys.modules[HOST]
    if name not in getattr(host, "__all__", ()):
        return f"`dotdo` has no public type `{name}`"
    kind = _live_kind(vars(host).get(name))
    if kind is None:
        return f"`dotdo.{name}` is not a data class: a flow can import only data types"
    return TypeInfo(name, HOST, kind)


def class_kind(qualname: str, depth: int = 0) -> ClassKind | Literal["mixin"] | str:
    """What kind of data class the class at `qualname` is ("mixin" for harmless bases like
    `str`), or why that cannot be told from source."""
    if qualname in _ROOTS:
        return _ROOTS[qualname]
    if qualname in _MIXINS:
        return "mixin"
    if depth > _DEPTH:
        return f"`{qualname}` derives through too many classes to read"
    module, _, name = qualname.rpartition(".")
    if module == "builtins":
        value = getattr(builtins, name, None)
        if isinstance(value, type) and issubclass(value, Exception):
            return "error"
        return f"`{name}` is not a data-class base"
    if module.split(".")[0] == HOST:
        kind = _live_kind(_live_host(qualname))
        return kind if kind is not None else f"`{qualname}` is not a data-class base"
    for cut in range(qualname.count("."), 0, -1):
        parts = qualname.split(".")
        mod, rest = ".".join(parts[:cut]), parts[cut:]
        if len(rest) != 1:
            continue
        located = locate(mod)
        if isinstance(located, str):
            continue
        info = read_module(located)
        if isinstance(info, str):
            return info
        if rest[0] in info.classes and info.bindings.get(rest[0]) == 1 and not info.star:
            return _class_node_kind(info, info.classes[rest[0]], depth + 1)
        if rest[0] in info.imports:
            return class_kind(info.imports[rest[0]], depth + 1)
        break
    return f"cannot tell from the source what `{qualname}` is"


def _class_node_kind(info: ModuleInfo, node: ast.ClassDef, depth: int) -> ClassKind | str:
    """The kind of the class `node` defines in `info`, or why it is not a data class."""
    where = f"`{info.name}.{node.name}`"
    decorated = False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if _qualified(info, target) in _DATACLASS:
            decorated = True
        else:
            return f"{where} has the decorator `{ast.unparse(target)}`, which cannot be checked"
    for keyword in node.keywords:
        if keyword.arg is None or keyword.arg == "metaclass":
            return f"{where} sets its metaclass, which cannot be checked"
    kinds: list[ClassKind] = []
    for base in node.bases:
        qualname = _qualified(info, base)
        if qualname is None:
            return f"{where} derives from `{ast.unparse(base)}`, which cannot be read"
        kind = class_kind(qualname, depth + 1)
        if kind == "mixin":
            continue
        if kind not in ("model", "dataclass", "enum", "error"):
            return f"{where} is not a data class: {kind}"
        kinds.append(kind)  # type: ignore[arg-type]
    field_problem = _field_problem(info, node)
    if field_problem is not None:
        return field_problem
    if decorated:
        return "dataclass"
    if not kinds:
        return (
            f"{where} is a plain class; a flow imports only data classes: pydantic models, "
            "dataclasses, enums and exception classes"
        )
    return kinds[0]


def _field_problem(info: ModuleInfo, node: ast.ClassDef) -> str | None:
    for stmt in node.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        bad = _forbidden_in(stmt.annotation)
        if bad is not None:
            return (
                f"`{info.name}.{node.name}.{stmt.target.id}` is typed `{bad}` "
                f"({os.path.basename(info.file)}:{stmt.lineno}): a field that holds code, "
                "classes or modules is not data"
            )
    return None


def _forbidden_in(annotation: ast.expr) -> str | None:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None  # not a forward reference: text (a description, a Literal value)
    for node in _annotation_nodes(annotation):
        name = (
            node.id
            if isinstance(node, ast.Name)
            else node.attr
            if isinstance(node, ast.Attribute)
            else None
        )
        if name in FORBIDDEN_FIELD_TYPES:
            return name
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            inner = _forbidden_in(node)
            if inner is not None:
                return inner
    return None


def _annotation_nodes(expr: ast.expr) -> list[ast.AST]:
    """The nodes of an annotation, leaving out `Literal[...]` values (they are data)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [expr]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.Subscript):
            head = node.value
            name = head.id if isinstance(head, ast.Name) else getattr(head, "attr", None)
            todo.append(head)
            if name != "Literal":
                todo.append(node.slice)
            continue
        if isinstance(node, ast.Constant):
            continue
        if isinstance(node, ast.Call):  # metadata like Field(...): only what is called
            todo.append(node.func)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def forbidden_in_text(text: str) -> str | None:
    """`_forbidden_in` for an annotation kept as text (`from __future__ import annotations`)."""
    return _forbidden_in(ast.Constant(text))
