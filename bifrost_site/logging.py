"""One JSON object per log line, so logs can be shipped and queried without parsing prose.

Every line logged while an inference request is served carries its ``request_id`` (the id the
client sees in ``x-request-id``): ``request_id`` below holds it for the thread serving it.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# The id of the request this thread (or task) is serving; "" between requests.
request_id: ContextVar[str] = ContextVar("request_id", default="")
_make_record = logging.getLogRecordFactory()


def _record_with_request_id(*args: object, **kwargs: object) -> logging.LogRecord:
    """Every record made while a request is served is stamped with its id when it is made (a
    handler may format it later, on another thread)."""
    record = _make_record(*args, **kwargs)
    current = request_id.get()
    if current:
        record.request_id = current
    return record


logging.setLogRecordFactory(_record_with_request_id)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is kept.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)
