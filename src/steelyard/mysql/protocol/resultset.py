"""Reading a text result set (the proxy's own queries: health checks, replication lag), sans-IO.

The data path never decodes rows; this is for the few queries the proxy runs itself, such as
`SELECT 1` and `SHOW SLAVE STATUS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from steelyard.mysql.protocol.wire import Cursor


@dataclass
class ResultSet:
    columns: list[str] = field(default_factory=list)
    rows: list[list[bytes | None]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, bytes | None]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def column_name(payload: bytes) -> str:
    """The `name` of a ColumnDefinition41: catalog, schema, table, org_table, then name."""
    c = Cursor(payload)
    for _ in range(4):
        c.lenenc_str()
    return (c.lenenc_str() or b"").decode("utf-8", "replace")


def text_row(payload: bytes, columns: int) -> list[bytes | None]:
    c = Cursor(payload)
    return [c.lenenc_str() for _ in range(columns)]
