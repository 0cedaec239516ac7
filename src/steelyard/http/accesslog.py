"""The access log: one line per request, nginx `combined` plus upstream fields, or JSON.

`combined` is nginx's format followed by the fields nginx users add for a proxy:

    127.0.0.1 - - [25/Nov/2026:22:10:30 +0000] "GET / HTTP/1.1" 200 3 "-" "curl/7.88.1"
        rt=0.002 uct=0.000 uht=0.002 ua="127.0.0.1:8081" us="200" rid=... route="0:web"

Lines are buffered and written with one `write` per flush (at most every 100 ms, or at 64 KiB),
so logging costs no syscall per request; the file is opened with O_APPEND, so the lines of
several workers never interleave within a line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from steelyard.log import log

FLUSH_BYTES = 64 * 1024
FLUSH_DELAY = 0.1


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class AccessLog:
    def __init__(
        self,
        path: str,
        fmt: str,
        call_later: Callable[[float, Callable[[], None]], object],
    ) -> None:
        self.path = path
        self.format = fmt
        self._call_later = call_later
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._stamp_second = -1
        self._stamp = ""
        self._failing = False

    def _time_local(self) -> str:
        now = int(time.time())
        if now != self._stamp_second:  # strftime once per second, not per request
            self._stamp_second = now
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
        return self._stamp

    def write(self, fields: dict[str, object]) -> None:
        if self.format == "json":
            fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
            line = json.dumps(fields, separators=(",", ":"))
        else:
            line = self._combined(fields)
        data = line.encode("utf-8", "replace") + b"\n"
        self._buf.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._call_later(FLUSH_DELAY, self._timed_flush)

    def _combined(self, f: dict[str, object]) -> str:
        def dash(v: object) -> str:
            return "-" if v is None or v == "" else str(v)

        def secs(v: object) -> str:
            return "-" if v is None else f"{v:.3f}"

        return (
            f'{f["remote_addr"]} - - [{self._time_local()}] "{_quote(str(f["request"]))}" '
            f'{f["status"]} {f["body_bytes_sent"]} "{_quote(dash(f["referer"]))}" '
            f'"{_quote(dash(f["user_agent"]))}" rt={secs(f["request_time"])} '
            f"uct={secs(f['upstream_connect_time'])} uht={secs(f['upstream_header_time'])} "
            f'ua="{dash(f["upstream_addr"])}" us="{dash(f["upstream_status"])}" '
            f'rid={dash(f["request_id"])} route="{dash(f["route"])}"'
        )

    def _timed_flush(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
            self._failing = False
        except OSError as exc:
            # A full disk must not take the proxy down; say so once per failing spell.
            if not self._failing:
                self._failing = True
                log("access_log_error", "error", path=self.path, cause=os.strerror(exc.errno or 0))

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
