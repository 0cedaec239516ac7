"""The `steelyard` command: run | check | demo | ctl.

`run` starts the supervisor on a config file; `check` validates one like `nginx -t`; `demo` runs
the TCP balancer over three built-in backends with an embedded config; `ctl` talks to the admin
API of a running instance.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import urllib.parse
from typing import Any

from steelyard.config.load import ConfigError, load_config
from steelyard.redis.topology import ranges

TIMEOUT = 10.0  # seconds for one admin API call


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        n = len(exc.issues)
        print(f"{args.config}: {n} error{'s' if n != 1 else ''}, test failed", file=sys.stderr)
        return 1
    print(f"{args.config}: syntax is ok, test is successful")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import uvloop

    from steelyard.runtime.supervisor import run_supervisor

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return uvloop.run(run_supervisor(cfg, os.path.abspath(args.config)))


def _cmd_demo(args: argparse.Namespace) -> int:
    import uvloop

    from steelyard.demo import run_demo

    return uvloop.run(run_demo(args.port, args.admin, args.http_port))


# ctl ---------------------------------------------------------------------------------------


def _admin_address(args: argparse.Namespace) -> str:
    """`--admin`, else the config's admin.listen, else 127.0.0.1:9900."""
    if args.admin:
        return str(args.admin)
    if args.config:
        try:
            addr = load_config(args.config).admin.listen or ""
        except ConfigError as exc:
            raise SystemExit(str(exc)) from None
        if not addr:
            raise SystemExit("the config has no admin.listen")
        return addr
    return "127.0.0.1:9900"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the admin API's unix socket; the Host it sends is `localhost`."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(address: str) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the admin API at `address` (host:port, http://host:port or
    unix:/path), and how to name it in an error."""
    if address.startswith("unix:"):
        return _UnixConnection(address[len("unix:") :], TIMEOUT), address
    parts = urllib.parse.urlsplit(address if "://" in address else f"http://{address}")
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.netloc, timeout=TIMEOUT), address
    return http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT), address


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One admin API call: JSON in and out (a change must be JSON: the API refuses anything
    else), the Host the API expects, the token when there is one."""
    conn, where = _connection(_admin_address(args))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    token = args.token or os.environ.get("STEELYARD_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    if data is None and method in ("POST", "PUT", "PATCH"):
        data = b"{}"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        raise SystemExit(f"error: cannot reach the admin API at {where}: {exc}") from None
    except http.client.HTTPException as exc:
        raise SystemExit(f"error: bad answer from the admin API at {where}: {exc!r}") from None
    finally:
        conn.close()
    if resp.status >= 400:
        try:
            message = json.loads(raw).get("error", resp.reason)
        except (ValueError, AttributeError):
            message = resp.reason
        raise SystemExit(f"error: {resp.status} {message}")
    return json.loads(raw or b"null")


def _server_path(pool: str, address: str) -> str:
    return f"/api/pools/{urllib.parse.quote(pool)}/servers/{urllib.parse.quote(address, safe='')}"


def _print_pools(data: dict[str, Any]) -> None:
    head = ("POOL", "SERVER", "WEIGHT", "HEALTH", "STATE", "ACTIVE", "TOTAL", "IN", "OUT")
    rows = [head]
    for pool in data["pools"]:
        for s in pool["servers"]:
            health = s["health"] + (" (ejected)" if s.get("ejected") else "")
            weight = str(s["effective_weight"])
            if s.get("weight_override") is not None:
                weight += "*"
            rows.append(
                (
                    pool["name"],
                    s["address"] + (" (backup)" if s.get("backup") else ""),
                    weight,
                    health,
                    s["state"],
                    str(s["active"]),
                    str(s["total"]),
                    str(s["bytes_in"]),
                    str(s["bytes_out"]),
                )
            )
    _print_table(rows)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns two spaces apart, the first row being the head."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _cmd_ctl(args: argparse.Namespace) -> int:
    if args.verb == "pools":
        data = _request(args, "GET", "/api/pools")
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_pools(data)
    elif args.verb == "set-state":
        out = _request(args, "PUT", _server_path(args.pool, args.server), {"state": args.state})
        print(f"{args.pool} {args.server}: state {out['state']}")
    elif args.verb == "set-weight":
        out = _request(args, "PUT", _server_path(args.pool, args.server), {"weight": args.weight})
        print(f"{args.pool} {args.server}: weight {out['effective_weight']}")
    elif args.verb == "mysql":
        return _cmd_mysql(args)
    return 0


def _cmd_mysql(args: argparse.Namespace) -> int:
    if args.mysql_verb in ("offline", "online"):
        path = f"/api/mysql/servers/{urllib.parse.quote(args.address, safe='')}"
        out = _request(args, "PUT", path, {"state": args.mysql_verb})
        if args.json:
            print(json.dumps(out, indent=2))
            return 0
        # one line whatever the number of listeners sharing the pools
        pools = dict.fromkeys(f"pool {s['pool']} {s['state']}" for s in out["servers"])
        print(f"{out['address']}: {out['state']} ({', '.join(pools)})")
        return 0
    data = _request(args, "GET", "/api/mysql")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_mysql(data)
    return 0


def _cmd_kernel(args: argparse.Namespace) -> int:
    data = _request(args, "GET", "/api/kernel")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(data["ruleset"].rstrip())
    print()
    rows = [("SERVICE", "SERVER", "WEIGHT", "ACTIVE", "CONNECTIONS", "PACKETS", "BYTES")]
    for svc in data["services"]:
        name = f"{svc['protocol']} {svc['address']}" + (" (quorum lost)" if svc["quorum_lost"]
                                                        else "")  # fmt: skip
        for s in svc["servers"]:
            rows.append((
                name, s["address"] + (" (sorry)" if s["sorry"] else ""), str(s["weight"]),
                "yes" if s["active"] else "no", str(s["connections"]), str(s["packets"]),
                str(s["bytes"]),
            ))  # fmt: skip
    _print_table(rows)
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _print_mysql(data: dict[str, Any]) -> None:
    for i, lst in enumerate(data["listeners"]):
        if i:
            print()
        pools = f"primary {lst['primary']}" + (
            f", replicas {lst['replicas']}" if lst["replicas"] else ""
        )
        print(
            f"listener {lst['listen']} ({pools}): {_plural(lst['sessions'], 'session')}, "
            f"{_plural(lst['workers'], 'worker')} reporting"
        )
        rows = [("SERVER", "POOL", "ROLE", "HEALTH", "STATE", "LAG", "OPEN", "IDLE", "BUSY",
                 "LOGINS")]  # fmt: skip
        for s in lst["servers"]:
            role = s["role"] + {True: " ro", False: " rw", None: ""}[s["read_only"]]
            if s["lag"] is not None:
                lag = f"{s['lag']}s"
            elif s["io_running"] is False or s["sql_running"] is False:
                lag = "stopped"  # a replication thread is not running
            else:
                lag = "-"
            rows.append((
                s["address"], s["pool"], role,
                s["health"] + (" (ejected)" if s["ejected"] else ""), s["state"], lag,
                str(s["open"]), str(s["idle"]), str(s["busy"]), str(s["logins"]),
            ))  # fmt: skip
        _print_table(rows)
        c, r = lst["counters"], lst["rates"]
        print(
            f"commands: primary {c['primary']}, replica {c['replica']} ({r['commands']}/s); "
            f"errors: server {c['server_errors']}, proxy {c['proxy_errors']}; "
            f"refused {c['refused']}; pool waits {c['waits']}"
        )


def _cmd_redis_admin(args: argparse.Namespace) -> int:
    if args.verb == "slots":
        data = _request(args, "GET", "/api/redis")
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        rows = [("GROUP", "MASTER", "REPLICAS", "WEIGHT", "SLOTS", "RANGES")]
        for g in data["groups"]:
            rows.append(
                (
                    str(g["id"]),
                    g["master"],
                    ",".join(g["replicas"]) or "-",
                    str(g["weight"]),
                    str(g["slots"]),
                    g["ranges"] or "-",
                )
            )
        _print_table(rows)
        if data.get("unassigned"):
            print(f"unassigned slots: {data['unassigned']}")
    elif args.verb == "slot-map":
        print(json.dumps(_request(args, "GET", "/api/redis/slots")["slots"]))
    elif args.verb == "migrations":
        data = _request(args, "GET", "/api/redis/migrations")
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            _print_migrations(data)
    else:
        return _redis_change(args)
    return 0


def _redis_change(args: argparse.Namespace) -> int:
    verb = args.verb
    if verb == "create-group":
        body = {"id": args.id, "master": args.master, "replicas": args.replica or [],
                "weight": args.weight}  # fmt: skip
        out = _request(args, "POST", "/api/redis/groups", body)
        print(f"group {out['id']}: master {out['master']}")
    elif verb == "remove-group":
        _request(args, "DELETE", f"/api/redis/groups/{args.group}")
        print(f"group {args.group} removed")
    elif verb == "set-weight":
        _request(args, "PUT", f"/api/redis/groups/{args.group}", {"weight": args.weight})
        print(f"group {args.group}: weight {args.weight}")
    elif verb == "add-server":
        _request(args, "POST", f"/api/redis/groups/{args.group}/servers", {"address": args.address})
        print(f"group {args.group}: {args.address} added as a replica")
    elif verb == "remove-server":
        address = urllib.parse.quote(args.address, safe="")
        path = f"/api/redis/groups/{args.group}/servers/{address}"
        _request(args, "DELETE", path)
        print(f"group {args.group}: {args.address} removed")
    elif verb == "promote":
        _request(args, "POST", f"/api/redis/groups/{args.group}/promote", {"address": args.address})
        print(f"group {args.group}: {args.address} is the master")
    elif verb == "assign":
        out = _request(
            args, "POST", "/api/redis/slots/assign", {"slots": args.slots, "group": args.group}
        )
        print(f"{out['assigned']} slots assigned to group {args.group}")
    elif verb in ("migrate", "rebalance"):
        if verb == "migrate":
            out = _request(args, "POST", "/api/redis/migrate", {"slots": args.slots, "to": args.to})
        else:
            out = _request(args, "POST", "/api/redis/rebalance", {})
        print(f"{len(out['queued'])} slots queued to move")
        if args.wait:
            return _wait_moves(args)
    return 0


def _wait_moves(args: argparse.Namespace) -> int:
    """Poll until no slot is moving; 1 if the mover reports an error meanwhile."""
    import time

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        data = _request(args, "GET", "/api/redis/migrations")
        if not data["moves"]:
            print("migrations done")
            return 0
        time.sleep(0.2)
    print(f"still moving after {args.timeout}s: {len(data['moves'])} slots", file=sys.stderr)
    return 1


def _print_migrations(data: dict[str, Any]) -> None:
    by_state: dict[str, list[int]] = {}
    for m in data["moves"]:
        by_state.setdefault(f"{m['from']}->{m['to']} {m['state']}", []).append(m["slot"])
    if not by_state:
        print("no slot is moving")
    for what, slots in sorted(by_state.items()):
        print(f"{what}: {ranges(slots)}")
    p = data.get("progress")
    if p:
        print(
            f"mover: slots {p['slots']} from group {p['source']}, pass {p['passes'] + 1}, "
            f"db {p['db']}, {p['moved']}/{p['total']} keys moved"
        )
    if data.get("error"):
        print(f"last error: {data['error']}")
    for h in data.get("history", [])[-5:]:
        print(
            f"done: slots {h['slots']} from group {h['source']}: {h['moved']} keys "
            f"in {h['seconds']}s"
        )


def _admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin",
        help="admin address host:port or unix:/path (default: from -c, or 127.0.0.1:9900)",
    )
    p.add_argument("-c", "--config", help="read admin.listen from this config")
    p.add_argument("--token", help="bearer token (or STEELYARD_TOKEN)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="steelyard", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run with a config file")
    run.add_argument("-c", "--config", required=True)
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check", help="validate a config file and exit (like nginx -t)")
    check.add_argument("-c", "--config", required=True)
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser("demo", help="run TCP and HTTP balancers over built-in backends")
    demo.add_argument("--port", type=int, default=18080, help="the TCP listener's port")
    demo.add_argument(
        "--http-port", type=int, default=None, help="the HTTP listener's port (default: port+1)"
    )
    demo.add_argument("--admin", default="127.0.0.1:9900", help="admin API address")
    demo.set_defaults(func=_cmd_demo)

    ctl = sub.add_parser("ctl", help="talk to a running instance's admin API")
    _admin_args(ctl)
    verbs = ctl.add_subparsers(dest="verb", required=True)
    pools = verbs.add_parser("pools", help="list pools and servers")
    pools.add_argument("--json", action="store_true")
    st = verbs.add_parser("set-state", help="set a server's admin state")
    st.add_argument("pool")
    st.add_argument("server")
    st.add_argument("state", choices=["ready", "drain", "maint"])
    sw = verbs.add_parser("set-weight", help="set a server's weight at runtime")
    sw.add_argument("pool")
    sw.add_argument("server")
    sw.add_argument("weight", type=int)
    my = verbs.add_parser("mysql", help="MySQL listeners and their servers; offline | online")
    my.add_argument("--json", action="store_true")
    my_verbs = my.add_subparsers(dest="mysql_verb")
    for verb, text in (("offline", "no new command or connection goes to the server (drain)"),
                       ("online", "the server takes commands again (ready)")):  # fmt: skip
        sp = my_verbs.add_parser(verb, help=text)
        sp.add_argument("address", help="host:port, as in the pools")
        # SUPPRESS: `ctl mysql --json offline X` keeps the --json given before the verb
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    ctl.set_defaults(func=_cmd_ctl)

    kernel = sub.add_parser("kernel", help="the nftables virtual services of a running node")
    kernel_verbs = kernel.add_subparsers(dest="verb", required=True)
    show = kernel_verbs.add_parser("show", help="the live ruleset and per-server counters")
    _admin_args(show)
    show.add_argument("--json", action="store_true")
    kernel.set_defaults(func=_cmd_kernel)

    ra = sub.add_parser("redis-admin", help="the Redis tier's groups and slots (dashboard)")
    _admin_args(ra)
    ra_verbs = ra.add_subparsers(dest="verb", required=True)
    slots = ra_verbs.add_parser("slots", help="groups with their slot counts and ranges")
    slots.add_argument("--json", action="store_true")
    ra_verbs.add_parser("slot-map", help="the owner of every slot, as a JSON list")
    mig = ra_verbs.add_parser("migrations", help="slots moving, the mover's progress")
    mig.add_argument("--json", action="store_true")
    cg = ra_verbs.add_parser("create-group", help="a new group (its replicas follow its master)")
    cg.add_argument("--id", type=int, required=True)
    cg.add_argument("--master", required=True)
    cg.add_argument("--replica", action="append", help="a replica (repeat for more)")
    cg.add_argument("--weight", type=int, default=1)
    rg = ra_verbs.add_parser("remove-group", help="remove a group that owns no slot")
    rg.add_argument("group", type=int)
    sw = ra_verbs.add_parser("set-weight", help="a group's weight for rebalance")
    sw.add_argument("group", type=int)
    sw.add_argument("weight", type=int)
    for verb, text in (("add-server", "add a replica to a group (REPLICAOF its master)"),
                       ("remove-server", "remove a replica from a group"),
                       ("promote", "make a replica its group's master")):  # fmt: skip
        sp = ra_verbs.add_parser(verb, help=text)
        sp.add_argument("group", type=int)
        sp.add_argument("address")
    asg = ra_verbs.add_parser("assign", help="set slots' owner without moving keys")
    asg.add_argument("--slots", required=True, help="ranges such as 0-511,600")
    asg.add_argument("--group", type=int, required=True, help="0 leaves them unassigned")
    mv = ra_verbs.add_parser("migrate", help="move slots (and their keys) to a group, online")
    mv.add_argument("--slots", required=True, help="ranges such as 0-99,200")
    mv.add_argument("--to", type=int, required=True)
    rb = ra_verbs.add_parser("rebalance", help="move slots so groups own them by weight")
    for sp in (mv, rb):
        sp.add_argument("--wait", action="store_true", help="return when every move is done")
        sp.add_argument("--timeout", type=float, default=600.0)
    ra.set_defaults(func=_cmd_redis_admin)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
