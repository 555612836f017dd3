"""Observability of the daemon: health and metrics over HTTP, heartbeats on Redis, JSON logs.

- `http.ObserveServer`: `/healthz` (alive), `/readyz` (every registered check passes, else 503 with reasons as
  JSON) and `/metrics` (Prometheus text) on one port, loopback by default (8787). `checks` has the Redis and
  feed-freshness checks.
- `metrics.Metrics`: a private Prometheus registry whose `arbbot_*` metrics are read from the components'
  own counters at scrape time (`add_feeds`, `add_engine`, `add_publisher`, `add_risk`, `add_trader`,
  `add_heartbeat`, `add_drift`, `add_queue`, `add_rejections`), so the hot path does no extra work.
- `drift.DriftTracker`: model score vs realised outcome of executed trades (`arbbot_model_calibration_gap`).
- `heartbeat.HeartbeatPublisher`: a `heartbeat` message on `arb:heartbeat:{role}` every few seconds; a Redis
  error skips a beat (counted), never stops it.
- `logs.setup_logging`: structlog JSON lines (a readable console format on a terminal) for stdlib and
  structlog loggers alike, with secrets and URL passwords masked (`redact.Redactor`).
"""

from bot.observe.checks import feeds_fresh, redis_ping
from bot.observe.drift import DriftStats, DriftTracker, follow_outcomes
from bot.observe.heartbeat import HeartbeatPublisher
from bot.observe.http import DEFAULT_HOST, DEFAULT_PORT, Check, ListenError, ObserveServer
from bot.observe.logs import setup_logging, setup_role_logging
from bot.observe.metrics import Metrics
from bot.observe.redact import Redactor

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Check",
    "DriftStats",
    "DriftTracker",
    "HeartbeatPublisher",
    "ListenError",
    "Metrics",
    "ObserveServer",
    "Redactor",
    "feeds_fresh",
    "follow_outcomes",
    "redis_ping",
    "setup_logging",
    "setup_role_logging",
]
