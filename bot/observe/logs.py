"""Logging setup: structlog JSON lines (or a readable console format on a terminal), secrets masked.

Records from stdlib `logging.getLogger(...)` loggers and from structlog loggers go through one formatter, so
both come out in the same format and both are redacted.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bot.observe.redact import Redactor

_OURS = "_arbbot_observe_handler"


class RedactProcessor:
    """A structlog processor masking secrets in every value of the event dict (the rendered traceback too)."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        return {key: self._redactor.value(value) for key, value in event_dict.items()}


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.processors.StackInfoRenderer(),
        # Tracebacks become text here, before redaction; a pretty renderer would print frame locals unmasked.
        structlog.processors.format_exc_info,
    ]


def setup_logging(
    json: bool | None = None,
    level: int | str = logging.INFO,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route stdlib and structlog logging to `stream` (stderr): JSON lines, or console lines on a terminal.

    `json=None` picks JSON unless `stream` is a terminal. Every value in `secrets`, and any password in a
    `scheme://user:password@` URL, is written as `***`. Calling again replaces the handler installed before.
    Return the installed handler.
    """
    out = stream if stream is not None else sys.stderr
    as_json = not _isatty(out) if json is None else json
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=_isatty(out), exception_formatter=structlog.dev.plain_traceback)
    )
    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            RedactProcessor(Redactor(secrets)),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    return handler


def setup_role_logging(log_format: str, verbose: bool, secrets: Iterable[str] = ()) -> logging.Handler:
    """`setup_logging` as a role's command wants it: `daemon.log_format` (auto, json or console), INFO with
    `verbose` else WARNING, the role's secrets redacted."""
    as_json = None if log_format == "auto" else log_format == "json"
    return setup_logging(json=as_json, level=logging.INFO if verbose else logging.WARNING, secrets=secrets)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named `name` (key-value events: `log.info("connected", venue="okx")`)."""
    return structlog.stdlib.get_logger(name)


def _isatty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False
