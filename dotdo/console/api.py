"""The JSON API: everything the pages do, for chat bots and other systems.

One table (`OPERATIONS`) declares each endpoint's method, path, parameters, body and answer
models; the routes and the OpenAPI document served at /api/openapi.json are both built from
it, so the document cannot drift from the code. Callers authenticate with an API token
(`Authorization: Bearer ...`, from `dotdo users add --token`) or, from a signed-in browser,
the session cookie plus an `X-CSRF-Token` header on writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dotdo import __version__
from dotdo.console.state import STATUSES, ConsoleState, Refused
from dotdo.engine.store.interface import RunFilter

__all__ = ["api_routes", "openapi_document"]


class ErrorInfo(BaseModel):
    type: str
    message: str
    traceback: str | None = None


class ErrorOut(BaseModel):
    error: str


class RunOut(BaseModel):
    run_id: str
    workflow: str
    entity_id: str
    status: str
    node: str
    graph_hash: str
    steps_done: int
    created_at: str | None
    updated_at: str | None
    wake_at: str | None = None
    result: Any = None
    error: ErrorInfo | None = None
    input: Any = None


class StepOut(BaseModel):
    key: str
    status: str
    attempts: int
    seq: int | None
    value: Any = None
    error: ErrorInfo | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None


class DecisionOut(BaseModel):
    by: str
    at: str
    decision: Literal["approved", "rejected"]
    comment: str | None = None
    value: Any = None
    user: str | None = None


class ApprovalOut(BaseModel):
    id: str
    run_id: str
    status: str
    type: str
    title: str
    amount: float | None = None
    requested_by: str | None = None
    approvers: list[str]
    level: int
    deadline: str | None = None
    priority: str
    extra: dict[str, Any]
    decisions: list[DecisionOut]
    rejection_reason: str | None = None
    created_at: str | None = None
    waiting_on: str | None = None
    countdown: str | None = None
    step: str


class RunDetail(RunOut):
    steps: list[StepOut]
    approvals: list[ApprovalOut]


class RunsPage(BaseModel):
    runs: list[RunOut]
    next: str | None = Field(description="Pass as `after` for the next page; null at the end.")
    counts: dict[str, int]


class ApprovalList(BaseModel):
    approvals: list[ApprovalOut]


class DecideIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=4000)
    reason: str | None = Field(default=None, max_length=4000, description="Required to reject.")
    value: Any = Field(default=None, description="A cascade's human tier: the answer.")
    acting_as: str | None = Field(
        default=None,
        alias="as",
        max_length=200,
        description="The approver name to decide as (default: whose turn it is).",
    )


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    data: Any = None


class EventOut(BaseModel):
    id: int


class MeOut(BaseModel):
    name: str
    role: str
    names: list[str]


Handler = Callable[[ConsoleState, Request, Any], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    """OpenAPI form; `{approval_id}` matches ids with slashes (RUN/STEP)."""
    handler: Handler
    summary: str
    answer: type[BaseModel]
    body: type[BaseModel] | None = None
    query: tuple[tuple[str, dict[str, Any], str], ...] = ()
    role: str = "viewer"


def _state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _runs_query(request: Request) -> tuple[RunFilter, str | None, int]:
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise Refused(400, f"unknown status {status[:40]!r}: one of {', '.join(STATUSES)}")
    limit_text = params.get("limit", "50")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 200:
        raise Refused(400, "limit must be a whole number from 1 to 200")
    since = params.get("since")
    until = params.get("until")
    try:
        filters = RunFilter(
            status=status,
            workflow=params.get("workflow") or None,
            prefix=params.get("prefix") or None,
            since=float(since) if since else None,
            until=float(until) if until else None,
        )
    except ValueError:
        raise Refused(400, "since and until are Unix times in seconds") from None
    return filters, params.get("after") or None, int(limit_text)


async def list_runs(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    filters, after, limit = _runs_query(request)
    rows, cursor = await state.runs(filters, after, limit)
    counts = await state.counts(filters.workflow)
    return RunsPage.model_validate({"runs": rows, "next": cursor, "counts": counts})


async def get_run(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    return RunDetail.model_validate(await state.run(request.path_params["run_id"]))


async def cancel_run(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    caller = await state.identify(request)
    run = await state.cancel(caller, request.path_params["run_id"])
    return RunDetail.model_validate(run)


async def my_approvals(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    caller = await state.identify(request)
    person = state.require(caller)
    kind = request.query_params.get("type") or None
    return ApprovalList.model_validate({"approvals": await state.inbox(person, kind)})


async def get_approval(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    caller = await state.identify(request)
    return ApprovalOut.model_validate(
        await state.approval(caller, request.path_params["approval_id"])
    )


async def decide(state: ConsoleState, request: Request, body: Any) -> BaseModel:
    assert isinstance(body, DecideIn)
    caller = await state.identify(request)
    decided = await state.decide(
        caller,
        request.path_params["approval_id"],
        decision=body.decision,
        comment=body.comment,
        reason=body.reason,
        value=body.value,
        acting_as=body.acting_as,
    )
    return ApprovalOut.model_validate(decided)


async def send_event(state: ConsoleState, request: Request, body: Any) -> BaseModel:
    assert isinstance(body, EventIn)
    caller = await state.identify(request)
    return EventOut(id=await state.send(caller, body.name, body.data))


async def me(state: ConsoleState, request: Request, _: Any) -> BaseModel:
    caller = await state.identify(request)
    person = state.require(caller)
    return MeOut(name=person.name, role=person.role, names=list(person.names))


_STR = {"type": "string", "maxLength": 200}
_PATH_MAX = 400
OPERATIONS = (
    Operation(
        "GET",
        "/api/runs",
        list_runs,
        "Runs, newest first, one page at a time, with counts by status",
        RunsPage,
        query=(
            ("status", {"type": "string", "enum": list(STATUSES)}, "Only runs in this status"),
            ("workflow", _STR, "Only runs of this workflow (Class.method)"),
            ("prefix", _STR, "Only run ids starting with this"),
            ("since", {"type": "number"}, "Created at or after (Unix seconds)"),
            ("until", {"type": "number"}, "Created before (Unix seconds)"),
            ("after", {"type": "string", "maxLength": 400}, "The `next` of the previous page"),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size"),
        ),
    ),
    Operation("GET", "/api/runs/{run_id}", get_run, "A run with its journal", RunDetail),
    Operation(
        "POST",
        "/api/runs/{run_id}/cancel",
        cancel_run,
        "Cancel a run (operators)",
        RunDetail,
        role="operator",
    ),
    Operation(
        "GET",
        "/api/approvals",
        my_approvals,
        "The caller's inbox: approvals waiting on their names",
        ApprovalList,
        query=(("type", _STR, "Only approvals of this type (e.g. cascade)"),),
    ),
    Operation("GET", "/api/approvals/{approval_id}", get_approval, "One approval", ApprovalOut),
    Operation(
        "POST",
        "/api/approvals/{approval_id}/decide",
        decide,
        "Approve or reject (as the caller; a rejection needs a reason)",
        ApprovalOut,
        body=DecideIn,
        role="approver",
    ),
    Operation(
        "POST",
        "/api/events",
        send_event,
        "Send an event (operators)",
        EventOut,
        body=EventIn,
        role="operator",
    ),
    Operation("GET", "/api/me", me, "Who the caller is", MeOut),
)


def _check_params(op: Operation, request: Request) -> None:
    """Hold every parameter to the bounds the OpenAPI document states for it."""
    for name, value in request.path_params.items():
        if not 1 <= len(value) <= _PATH_MAX:
            raise Refused(400, f"{name} must be 1 to {_PATH_MAX} characters")
    for name, schema, _ in op.query:
        value = request.query_params.get(name)
        if value is None:
            continue
        kind = schema["type"]
        if kind == "string":
            if len(value) > schema.get("maxLength", 10_000):
                raise Refused(400, f"{name} is longer than {schema['maxLength']} characters")
            if "enum" in schema and value not in schema["enum"]:
                raise Refused(400, f"{name} must be one of {', '.join(schema['enum'])}")
            continue
        try:
            number = int(value) if kind == "integer" else float(value)
        except ValueError:
            raise Refused(
                400, f"{name} must be a{'' if kind == 'integer' else ' '} {kind}"
            ) from None
        if (kind == "number" and number != number) or number in (float("inf"), float("-inf")):
            raise Refused(400, f"{name} must be a finite number")
        low, high = schema.get("minimum"), schema.get("maximum")
        if (low is not None and number < low) or (high is not None and number > high):
            raise Refused(400, f"{name} must be from {low} to {high}")


def _endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        state = _state(request)
        _check_params(op, request)
        caller = await state.identify(request)
        state.require(caller, role="approver" if op.role == "approver" else "viewer")
        body: Any = None
        if op.method == "POST":
            state.check_csrf(caller, request.headers.get("x-csrf-token"))
            if op.body is not None:
                raw = await state.json_body(request)
                try:
                    body = op.body.model_validate(raw)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    where = ".".join(str(p) for p in first["loc"]) or "body"
                    raise Refused(400, f"{where}: {first['msg']}") from None
        answer = await op.handler(state, request, body)
        return JSONResponse(answer.model_dump(mode="json", by_alias=True))

    return endpoint


def _route_path(path: str) -> str:
    return path.replace("{approval_id}", "{approval_id:path}")


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [ErrorOut]
    for op in OPERATIONS:
        models.append(op.answer)
        if op.body is not None:
            models.append(op.body)
    pairs = [(m, "validation" if m in (DecideIn, EventIn) else "serialization") for m in models]
    refs, defs = models_json_schema(pairs, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    error = {
        "description": "Refused, with a message",
        "content": {"application/json": {"schema": refs[(ErrorOut, "serialization")]}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": _PATH_MAX},
            }
            for name in ("run_id", "approval_id")
            if "{" + name + "}" in op.path
        ]
        params += [
            {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
            for name, schema, text in op.query
        ]
        entry: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.handler.__name__,
            "parameters": params,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": refs[(op.answer, "serialization")]}},
                },
                **{code: error for code in ("400", "401", "403", "404", "409")},
            },
        }
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "dotdo console API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"token": []}],
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


api_routes = [
    Route("/api/openapi.json", openapi),
    *(Route(_route_path(op.path), _endpoint(op), methods=[op.method]) for op in OPERATIONS),
]
