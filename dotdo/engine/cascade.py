"""Cascade bookkeeping: reading a tier's answer and deciding whether the cascade is done.

Pure functions, shared by the interpreter (where each tier is a durable step and the human
tier hibernates) and by plain-Python runs of the same workflow.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dotdo.engine.models import CascadeResult

__all__ = ["HUMAN", "conclude", "human_reviewers", "read_answer", "run_cascade_plain"]

HUMAN = "human"


def human_reviewers(value: Any) -> list[str]:
    """Who answers the human tier: `"human": "finance"` or `"human": ["ana", "finance"]`
    names reviewers or groups (as `approvers=` does; a chain decides in order); anything
    else (`lambda: None`, the usual placeholder) waits on the approver name "human"."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value):
        return list(value)
    return [HUMAN]


def read_answer(raw: Any) -> tuple[Any, float]:
    """A tier answers `(value, confidence)`, `{"value", "confidence"}` or an object with both."""
    if isinstance(raw, tuple) and len(raw) == 2:
        return raw[0], float(raw[1])
    if isinstance(raw, dict) and "confidence" in raw:
        return raw.get("value"), float(raw["confidence"])
    if hasattr(raw, "confidence"):
        return getattr(raw, "value", raw), float(raw.confidence)
    raise TypeError(
        "a cascade tier must return (value, confidence), a dict with 'value' and "
        f"'confidence', or an object with .confidence; got {type(raw).__name__}"
    )


def conclude(
    task: str, candidates: list[tuple[str, Any, float]], threshold: float, *, final: bool
) -> CascadeResult | None:
    """The result once a candidate reaches the threshold, or (when `final`) the best one."""
    confidences = {tier: conf for tier, _, conf in candidates}
    for tier, value, conf in candidates:
        if conf >= threshold:
            return CascadeResult(
                task=task, value=value, tier=tier, confidence=conf, confidences=confidences
            )
    if not final:
        return None
    if not candidates:
        return CascadeResult(task=task, accepted=False, confidences=confidences)
    tier, value, conf = max(candidates, key=lambda c: c[2])
    return CascadeResult(
        task=task, value=value, tier=tier, confidence=conf, confidences=confidences, accepted=False
    )


async def run_cascade_plain(
    task: str, tiers: dict[str, Callable[[], Any]], threshold: float
) -> CascadeResult:
    candidates: list[tuple[str, Any, float]] = []
    for name, fn in tiers.items():
        if name == HUMAN:
            continue
        raw = fn()
        if inspect.isawaitable(raw):
            raw = await raw
        value, conf = read_answer(raw)
        candidates.append((name, value, conf))
        done = conclude(task, candidates, threshold, final=False)
        if done is not None:
            return done
    result = conclude(task, candidates, threshold, final=True)
    assert result is not None
    return result
