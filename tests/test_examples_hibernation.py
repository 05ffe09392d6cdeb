"""Smoke tests: each hibernation example's main() runs end to end and does what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import categorize, expense, order_events, purchase, reports  # noqa: E402


async def test_expense(tmp_path: Path) -> None:
    out = await expense.main(tmp_path / "x.db")
    assert out["e1"]["status"] == "reimbursed"
    assert out["e2"] == {"status": "reimbursed", "expense": "e2", "amount": 380.0}
    assert out["e3"] == {"status": "rejected", "reason": "buy it through IT"}
    assert out["audit"] == [("dana", "approved", "within policy")]


async def test_purchase(tmp_path: Path) -> None:
    out = await purchase.main(tmp_path / "x.db")
    assert out["po-1"]["status"] == "ordered"
    assert out["po-1"]["trail"] == [f"approved by {w}" for w in purchase.CHAIN]
    assert out["po-2"]["status"] == "rejected"
    assert out["po-2"]["reason"] == "reuse the old desks"
    assert out["po-3"]["status"] == "expired"
    assert out["priorities"] == {
        "po-1/approval": "high",
        "po-2/approval": "normal",
        "po-3/approval": "normal",
    }


async def test_reports(tmp_path: Path) -> None:
    out = await reports.main(tmp_path / "x.db")
    assert out["weekly"] == ["Reports.weekly_report@2030-01-07T09:00:00Z"]
    assert out["daily"] == [
        f"Reports.daily_summary@2030-01-{d:02d}T18:00:00Z" for d in range(7, 14)
    ]
    assert out["statuses"] == {"completed"}


async def test_order_events(tmp_path: Path) -> None:
    out = await order_events.main(tmp_path / "x.db")
    assert out["handlers"] == {
        "Shop.confirm:1": "confirmation sent to ada@example.com",
        "Shop.failures:2": "Payment.failed",
        "Shop.failures:3": "Shipment.failed",
    }
    assert out["after_restart"] == 3
    assert [name for name, _ in out["outbox"]] == [
        "Order.placed",
        "Payment.failed",
        "Shipment.failed",
    ]


async def test_categorize(tmp_path: Path) -> None:
    out = await categorize.main(tmp_path / "x.db")
    assert (out["x1"].tier, out["x1"].value) == ("code", "travel")
    assert (out["x2"].tier, out["x2"].value) == ("generative", "meals")
    assert (out["x3"].tier, out["x3"].value) == ("human", "professional-services")


@pytest.mark.parametrize("name", ["expense", "categorize"])
def test_runs_as_a_script(tmp_path: Path, name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / f"{name}.py"), str(tmp_path / "s.db")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "database:" in done.stdout
