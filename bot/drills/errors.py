"""Count what the roles hosted in a drill's own process log at ERROR: a task that died, a handler that raised.

The roles turn every bad input into a counted rejection (logged at WARNING at most); an ERROR record means
something escaped that handling, which the drills count as a crash.
"""

from __future__ import annotations

import logging
from types import TracebackType

WATCHED = ("bot", "strategies")
KEPT = 5


class ErrorCounter(logging.Handler):
    """A handler on the `bot` and `strategies` loggers counting ERROR (and worse) records; `with` attaches it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < KEPT:
            self.first.append(f"{record.name}: {record.getMessage()}"[:300])

    def __enter__(self) -> ErrorCounter:
        for name in WATCHED:
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for name in WATCHED:
            logging.getLogger(name).removeHandler(self)


class WarningCounter(logging.Handler):
    """Count WARNING records of one logger (e.g. a full queue saying that it drops), only those whose message
    contains `containing` when it is given."""

    def __init__(self, logger: str, containing: str | None = None) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self._logger = logger
        self._containing = containing

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.WARNING and (
            self._containing is None or self._containing in record.getMessage()
        ):
            self.count += 1

    def __enter__(self) -> WarningCounter:
        logging.getLogger(self._logger).addHandler(self)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        logging.getLogger(self._logger).removeHandler(self)


class LoopErrors(logging.Handler):
    """Take over the `asyncio` logger's ERROR records (exceptions raised in event-loop callbacks) and count them.

    ccxt.pro parses frames in a callback: a frame that is not JSON raises there, is logged by asyncio, and stops
    that client's reader (the weakness the feeds work around by reconnecting). Those are `from_ccxt`; any other
    is `other` and is a crash of ours. While attached they are counted here instead of printed.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.from_ccxt = 0
        self.other: list[str] = []
        self._propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        if _raised_in_ccxt(record):
            self.from_ccxt += 1
        else:
            self.other.append(record.getMessage()[:300])

    def __enter__(self) -> LoopErrors:
        logger = logging.getLogger("asyncio")
        self._propagate = logger.propagate
        logger.addHandler(self)
        logger.propagate = False
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        logger = logging.getLogger("asyncio")
        logger.removeHandler(self)
        logger.propagate = self._propagate


def _raised_in_ccxt(record: logging.LogRecord) -> bool:
    if record.exc_info is None or record.exc_info[2] is None:
        return False
    tb: TracebackType | None = record.exc_info[2]
    while tb is not None:
        if "/ccxt/" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False
