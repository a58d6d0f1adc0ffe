#!/bin/sh
# Regenerate the screenshots of the dashboard's operations pages (docs/dashboard/ops-*.png)
# and the measured crash-to-page latency (docs/dashboard/tree-crash-latency.json): runs their
# Playwright tests (headless Chromium) with NETSUKE_DASHBOARD_SHOTS pointing at docs/dashboard.
# Rerunnable: each run overwrites the files. Usage: scripts/dashboard_ops_shots.sh
set -eu
cd "$(dirname "$0")/.."
NETSUKE_DASHBOARD_SHOTS="$PWD/docs/dashboard" .venv/bin/pytest -q -p no:cacheprovider \
    tests/api/test_dashboard_tree.py tests/api/test_dashboard_ops.py tests/api/test_dashboard_tasks.py \
    tests/api/test_dashboard_cluster.py tests/cluster/test_cluster_page.py
ls -1 docs/dashboard/ops-*.png
cat docs/dashboard/tree-crash-latency.json
