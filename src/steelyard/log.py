"""One log line per event, `key=value` or JSON, to stderr.

Every tier logs through `log()` so operators can grep one format: the event name first, then
the fields that explain it (pool, server, peer, cause). Values with spaces are quoted.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_logger = logging.getLogger("steelyard")
_json = False
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}

_NAMES = {v: k for k, v in _LEVELS.items()}


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        level = _NAMES.get(record.levelno, record.levelname.lower())
        if _json:
            return json.dumps({"ts": ts, "level": level, "event": record.getMessage(), **fields})
        parts = [f"ts={ts}", f"level={level}", f"event={record.getMessage()}"]
        parts += [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
        return " ".join(parts)


def setup(fmt: str = "text", level: str = "info", stream: Any = None) -> None:
    """Configure the process-wide log format; safe to call again on reload."""
    global _json
    _json = fmt == "json"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(_LEVELS.get(level, logging.INFO))
    _logger.propagate = False


def log(event: str, level: str = "info", **fields: Any) -> None:
    """Log one event with its fields, e.g. `log("health_flip", pool="web", server=a, up=False)`."""
    lvl = _LEVELS.get(level, logging.INFO)
    if _logger.isEnabledFor(lvl):
        _logger.log(lvl, event, extra={"fields": fields})


def enabled(level: str) -> bool:
    return _logger.isEnabledFor(_LEVELS.get(level, logging.INFO))
