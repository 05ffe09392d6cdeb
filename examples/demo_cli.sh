#!/usr/bin/env bash
# `make demo`, part two: a purchase order hibernates on a three-level approval chain; the
# approvers decide from the command line, and the last decision, given the run's code with
# --app, drives the run to its end. (Without --app the CLI records the decision and leaves
# the run due for `dotdo worker --app examples.purchase`: it never imports code a row names.)
set -euo pipefail
cd "$(dirname "$0")/.."
DOTDO="${DOTDO:-.venv/bin/dotdo}"
export DOTDO_DB=out/demo-cli.db
mkdir -p out
rm -f out/demo-cli.db out/demo-cli.db-wal out/demo-cli.db-shm

echo "--- dotdo run: the purchase order asks for approval and hibernates"
"$DOTDO" run examples.purchase:Purchasing.request_purchase --run-id po-demo \
  --input '{"po": {"id": "po-demo", "item": "laptops", "amount": 12500, "requester": "ada"}}'
echo "--- dotdo approvals: what waits on the manager"
"$DOTDO" approvals --as manager
echo "--- dotdo approve, level by level"
"$DOTDO" approve po-demo/approval --as manager --comment "fits the budget"
"$DOTDO" approve po-demo/approval --as director
"$DOTDO" approve po-demo/approval --as vp --app examples.purchase
echo "--- dotdo status"
"$DOTDO" status po-demo
