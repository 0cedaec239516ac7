"""FUNCTION, SCRIPT and CONFIG through the proxy: each subcommand sent where it must run (every
group's master, one of them, or every server) and the answers merged as one Redis would give.

A key's slot may live on any group, and moves between them, so the libraries (FUNCTION LOAD)
and cached scripts (SCRIPT LOAD) a client loads must be on every master: FCALL and EVALSHA are
then routed by their keys like any other keyed command. With `read_from_replicas`, scripts go
to the replicas serving reads too (a replica does not get its master's script cache; it does
get its functions). Each script loaded is reported to the supervisor (`report`), which keeps
its body so a master added or promoted later gets it too (see `library`).

CONFIG GET is answered by one master. CONFIG SET and CONFIG RESETSTAT change every server (the
replicas too) and need `allow_fanout`, as KEYS does; CONFIG SET of a parameter that would cut
the proxy off its servers or point their files elsewhere is refused (REFUSED_CONFIG).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from steelyard.log import log
from steelyard.redis import merge, resp
from steelyard.redis.dispatch import Decision, not_supported

if TYPE_CHECKING:
    from steelyard.redis.backend import BackendConn
    from steelyard.redis.session import ClientSession

Merge = Callable[[list[bytes]], bytes]

# Where each subcommand runs, and how the answers become one.
EVERY_MASTER: dict[str, Merge] = {
    "function|load": merge.same,
    "function|delete": merge.same,
    "function|flush": merge.same,
    "function|restore": merge.same,
    "function|list": merge.libraries,
    "function|stats": merge.function_stats,
    "function|kill": merge.kill,
    "script|kill": merge.kill,
}
# The script cache: masters, and the replicas serving reads (EVALSHA_RO may run there).
SCRIPT_CACHE: dict[str, Merge] = {
    "script|load": merge.same,
    "script|exists": merge.exists,
    "script|flush": merge.same,
}
# Asked while a script may run: the shared connection to a busy server waits behind the script
# (a client's FCALL), so these go on a connection of their own, closed once answered.
OWN_CONNECTION = frozenset({"function|kill", "script|kill", "function|stats"})
ONE_MASTER = frozenset(
    {"function|dump", "function|help", "script|help", "config|help", "config|get"}
)
EVERY_SERVER = frozenset({"config|set", "config|resetstat"})  # with allow_fanout only

# CONFIG SET parameters refused through the proxy: they would lock the proxy and the dashboard
# out of a server (its port, address, password, TLS, or its replication's), let a replica take
# writes, or make a server read or write files elsewhere. Redis 7.0 refuses some itself (dir
# and dbfilename while enable-protected-configs is no, its default; the files are immutable),
# but port, bind, requirepass, masterauth, replica-read-only and the TLS files may be set.
REFUSED_CONFIG = frozenset(
    {"port", "tls-port", "bind", "bind-source-addr", "unixsocket", "unixsocketperm",
     "requirepass", "masterauth", "masteruser", "replica-read-only", "slave-read-only",
     "protected-mode", "dir", "dbfilename", "appendfilename", "appenddirname", "logfile",
     "pidfile", "aclfile", "enable-protected-configs", "enable-debug-command",
     "enable-module-command", "tls-cert-file", "tls-key-file", "tls-ca-cert-file",
     "tls-ca-cert-dir", "tls-client-cert-file", "tls-client-key-file", "tls-dh-params-file",
     "tls-key-file-pass", "tls-client-key-file-pass", "tls-auth-clients", "tls-replication"}
)  # fmt: skip


def run(session: ClientSession, argv: list[bytes], decision: Decision) -> None:
    """Carry out one FUNCTION / SCRIPT / CONFIG subcommand for `session`."""
    name = decision.name
    fe = session.fe
    router = fe.router
    masters = sorted(set(router.masters.values()))
    if not masters:
        session.answer(resp.error("ERR no group to run it on: the cluster has no group"))
        return
    command = resp.encode_command(argv)
    fanout = EVERY_MASTER.get(name)
    if fanout is not None:
        gather(session, masters, command, fanout, own=name in OWN_CONNECTION)
    elif name in SCRIPT_CACHE:
        servers = masters
        if fe.cfg.read_from_replicas:
            servers = sorted({*masters, *(r for rs in router.readers.values() for r in rs)})
        done = _report_load(session, argv) if name in ("script|load", "script|flush") else None
        gather(session, servers, command, SCRIPT_CACHE[name], done)
    elif name in ONE_MASTER:
        session.to(masters[0], command)(session.reserve())
    elif name in EVERY_SERVER:
        if not fe.redis.allow_fanout:
            session.answer(resp.error(not_supported(name) + " (allow_fanout is off)"))
            return
        if name == "config|set":
            refused = [p for p in argv[2::2] if p.decode("latin-1").lower() in REFUSED_CONFIG]
            if refused:
                parameter = refused[0].decode("utf-8", "replace")
                log("redis_config_refused", "warn", peer=session.peer, parameter=parameter)
                session.answer(
                    resp.error(
                        f"ERR CONFIG SET failed (possibly related to argument '{parameter}') - "
                        "not allowed through the proxy"
                    )
                )
                return
        servers = sorted({*masters, *(r for rs in router.replicas.values() for r in rs)})
        gather(session, servers, command, merge.same)
    else:
        session.answer(resp.error(not_supported(name)))


def gather(
    session: ClientSession,
    servers: list[str],
    command: bytes,
    merge_fn: Merge,
    done: Callable[[bytes], None] | None = None,
    own: bool = False,
) -> None:
    """`command` to each server (`own`: on a connection of its own each); once all have
    answered, `merge_fn` of every answer (errors included: a merge decides what they mean)
    fills the client's place in its FIFO."""
    fill = session.reserve()
    parts: list[bytes] = [b""] * len(servers)
    left = [len(servers)]

    def part(index: int) -> Callable[[bytes], None]:
        def answered(raw: bytes) -> None:
            parts[index] = raw
            left[0] -= 1
            if left[0] == 0:
                try:
                    reply = merge_fn(parts)
                except (ValueError, IndexError) as exc:  # a reply not shaped as Redis 7's
                    log("redis_merge_failed", "error", command=command[:64], cause=str(exc))
                    reply = resp.error(f"ERR the servers' answers could not be merged: {exc}")
                if done is not None:
                    done(reply)
                fill(reply)

        return answered

    for i, address in enumerate(servers):
        if own:
            conn = session.fe.backends.private(address, session.db, session.protocol)
            conn.send(command, _then_close(conn, part(i)))
        else:
            session.to(address, command)(part(i))


def _then_close(conn: BackendConn, answered: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def done(raw: bytes) -> None:
        answered(raw)
        conn.fail("answered")  # one command per connection

    return done


def _report_load(session: ClientSession, argv: list[bytes]) -> Callable[[bytes], None]:
    """After a SCRIPT LOAD (or FLUSH) every server took: tell the supervisor, which keeps the
    bodies for masters added or promoted later."""
    report = session.fe.report

    def done(reply: bytes) -> None:
        if report is None or merge.is_error(reply):
            return
        if argv[1].lower() == b"load":
            report({"t": "redis_script", "body": argv[2].decode("latin-1")})
        else:
            report({"t": "redis_script", "flush": True})

    return done
