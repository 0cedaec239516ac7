"""Log lines: one per event, key=value with quoting, or JSON."""

from __future__ import annotations

import io
import json

from steelyard import log as logmod


def test_text_line_quotes_values_with_spaces_and_skips_none():
    out = io.StringIO()
    logmod.setup("text", "info", stream=out)
    logmod.log("conn_error", "warn", server="127.0.0.1:80", cause="connection reset", x=None)
    line = out.getvalue().strip()
    assert line.split(" ", 1)[1] == (
        'level=warn event=conn_error server=127.0.0.1:80 cause="connection reset"'
    )


def test_json_line_and_level_filter():
    out = io.StringIO()
    logmod.setup("json", "warn", stream=out)
    logmod.log("dropped_by_level", "info")
    logmod.log("health_flip", "warn", pool="web", up=False)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "health_flip"
    assert (record["level"], record["pool"], record["up"]) == ("warn", "web", False)
    logmod.setup()
