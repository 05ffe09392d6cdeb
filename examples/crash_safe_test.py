"""A pytest file to copy: prove a workflow survives a crash at every durable boundary.

Run it with `pytest examples/crash_safe_test.py`. The `crash_safe` fixture comes from the
dotdo.testing.crashcheck plugin, enabled by the `pytest_plugins` line below (or in your
conftest.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dotdo.testing import BOUNDARIES, Approve, Expire, VirtualClock
from dotdo.testing.crashcheck import CrashSafe

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.orders import SAMPLE, Orders  # noqa: E402
from examples.purchase import ORDERS, Purchasing  # noqa: E402

pytest_plugins = ["dotdo.testing.crashcheck"]


async def test_process_order_is_crash_safe(crash_safe: CrashSafe) -> None:
    report = await crash_safe(Orders.process_order, SAMPLE)
    # Every boundary of the run was crashed at, and each resumed run ended like a clean one.
    assert report.points_checked == report.total_points
    assert report.boundaries_seen == set(BOUNDARIES)
    # A crash while the try_ email was in flight fails it (StepInterrupted); it is never resent.
    assert all(case.interrupted == ("send_email",) for case in report.interrupted)


async def test_purchase_approval_is_crash_safe(crash_safe: CrashSafe) -> None:
    # The manager approves, the director never answers: the 7-day deadline passes (instantly,
    # on the virtual clock) and the order is escalated. Each crashed run gets the same answers.
    report = await crash_safe(
        Purchasing.request_purchase,
        ORDERS[0],
        clock=VirtualClock(),
        respond=[Approve(comment="fine by me"), Expire()],
    )
    assert report.reference.result["status"] == "expired"
    assert report.points_checked == report.total_points
