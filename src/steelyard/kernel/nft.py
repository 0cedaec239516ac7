"""Running `nft`: a script applied in one transaction (`nft -f -`), or a listing read back.

nftables has a netlink API, but its rules are compiled to bytecode by libnftables: the `nft`
program is the supported way in, and with `-f` a whole script is one atomic transaction.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from typing import Any


class NftError(Exception):
    """nft refused (its own message), or is missing."""


def path() -> str:
    """Where `nft` is; NftError naming what to install when it is not on PATH."""
    found = shutil.which("nft")
    if found is None:
        raise NftError("the nft program is missing: install nftables (apt-get install nftables)")
    return found


async def run(*args: str, script: str | None = None) -> str:
    """`nft ARGS` with `script` on stdin; its output. NftError with nft's message on failure."""
    proc = await asyncio.create_subprocess_exec(
        path(), *args,
        stdin=asyncio.subprocess.PIPE if script is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(script.encode() if script is not None else None)
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or f"nft exited {proc.returncode}"
        if "Operation not permitted" in message:
            message = f"missing CAP_NET_ADMIN (run as root, or grant it): {message}"
        raise NftError(message)
    return out.decode(errors="replace")


async def apply(script: str) -> None:
    await run("-f", "-", script=script)


async def listing(table: str) -> tuple[dict[str, tuple[int, int]], int]:
    """The named counters of `ip TABLE` (name -> (packets, bytes)) and how many rules it has."""
    doc: dict[str, Any] = json.loads(await run("-j", "list", "table", "ip", table))
    counters: dict[str, tuple[int, int]] = {}
    rules = 0
    for item in doc.get("nftables", []):
        if (c := item.get("counter")) is not None:
            counters[c["name"]] = (int(c.get("packets", 0)), int(c.get("bytes", 0)))
        elif "rule" in item:
            rules += 1
    return counters, rules
