"""What every admin route needs to read a request and word a refusal: a JSON object body
checked for its keys, and an exception's message as the operator should read it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Refuse = Callable[[int, str], Exception]  # (status, message) -> the API's error


def json_object(body: bytes, keys: frozenset[str], usage: str, error: Refuse) -> dict[str, Any]:
    """A PUT/POST body that must be a JSON object with no other keys than `keys`; else
    error(400, reason), the reason ending with `usage`."""
    if not body.strip():
        raise error(400, f"empty body: {usage}")
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise error(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise error(400, f"body is a JSON {type(data).__name__}: {usage}")
    unknown = sorted(set(data) - keys)
    if unknown:
        raise error(400, f"unknown key(s) {', '.join(map(repr, unknown))}: {usage}")
    return data


def message(exc: Exception) -> str:
    # str(KeyError('x')) is "'x'"; the first argument is the message we mean.
    return str(exc.args[0]) if exc.args else type(exc).__name__
