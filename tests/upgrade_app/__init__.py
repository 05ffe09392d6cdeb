"""Releases of one app, for the upgrade tests: v1 is deployed, runs park on it, then a
compatible (v2) or a breaking (v3) release is checked against those runs."""
