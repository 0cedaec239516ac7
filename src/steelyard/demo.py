"""`steelyard demo`: the TCP and HTTP balancers over three built-in backends, no config file.

The backends are tiny HTTP servers in this process that answer with their own name, so `curl`
through the listener shows the balancing, and the admin API shows health and counters. Stopping
one backend (or draining it with `steelyard ctl`) shows health checks and admin state at work.
"""

from __future__ import annotations

import asyncio
import tempfile

from steelyard.config.load import parse_config_text
from steelyard.runtime.supervisor import Supervisor

DEMO_CONFIG = """
workers: 1
admin: {{listen: "{admin}"}}
store: {{kind: embedded, path: "{store}"}}
pools:
  demo:
    balance: round_robin
    health: {{kind: http, path: /health, interval: 1s, timeout: 500ms, rise: 2, fall: 2}}
    passive: {{consecutive_failures: 3, eject_for: 10s}}
    slow_start: 5s
    servers:
      - {{address: "127.0.0.1:{p1}", weight: 2, zone: a}}
      - {{address: "127.0.0.1:{p2}", weight: 1, zone: b}}
      - {{address: "127.0.0.1:{p3}", weight: 1, zone: b, backup: true}}
tcp:
  - {{name: demo, listen: "127.0.0.1:{port}", pool: demo}}
http:
  - name: demo-http
    listen: "127.0.0.1:{http_port}"
    access_log: {{path: "{store}/access.log"}}
    routes:
      - {{path: /ping, return: {{status: 200, body: "pong\\n"}}}}
      - {{path: /old, redirect: {{status: 301, location: "http://$host/"}}}}
      - {{path: /limited, pool: demo, limit_req: {{rate: 2/s, burst: 2}}}}
      - {{path: /, pool: demo, set_response_headers: {{X-Served-By: steelyard}}}}
"""


async def _backend(name: str, port: int) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                keep = b"connection: close" not in head.lower()
                port = writer.get_extra_info("sockname")[1]
                body = f"hello from {name} (port {port})\n".encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    + f"Content-Length: {len(body)}\r\n".encode()
                    + (b"" if keep else b"Connection: close\r\n")
                    + b"\r\n"
                    + body
                )
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def run_demo(
    port: int = 18080, admin: str = "127.0.0.1:9900", http_port: int | None = None
) -> int:
    http_port = port + 1 if http_port is None else http_port
    # Backends take free ephemeral ports, so the demo never collides with what runs here.
    backends = [await _backend(f"backend-{i + 1}", 0) for i in range(3)]
    ports = [b.sockets[0].getsockname()[1] for b in backends]
    store = tempfile.mkdtemp(prefix="steelyard-demo-")
    text = DEMO_CONFIG.format(
        admin=admin,
        store=store,
        port=port,
        http_port=http_port,
        p1=ports[0],
        p2=ports[1],
        p3=ports[2],
    )
    cfg = parse_config_text(text, "<demo>")
    sup = Supervisor(cfg, None)
    await sup.start()
    print(
        f"""
steelyard demo: a TCP load balancer on 127.0.0.1:{port} and an HTTP one on 127.0.0.1:{http_port}
over three built-in backends
  backend-1 127.0.0.1:{ports[0]} weight 2, backend-2 127.0.0.1:{ports[1]} weight 1,
  backend-3 127.0.0.1:{ports[2]} (backup: used only when both others are down)

Try, in another terminal:
  for i in $(seq 6); do curl -s http://127.0.0.1:{port}/; done     # 2:1 round robin (TCP)
  curl -si http://127.0.0.1:{http_port}/                               # HTTP, X-Forwarded-*
  curl -s http://127.0.0.1:{http_port}/ping                            # answered by steelyard
  for i in $(seq 5); do curl -s -o /dev/null -w "%{{http_code}} " \
      http://127.0.0.1:{http_port}/limited; done; echo                  # 429 past the burst
  tail {store}/access.log                                             # access log
  .venv/bin/steelyard ctl --admin {admin} pools                       # health, weights, counters
  .venv/bin/steelyard ctl --admin {admin} set-state demo 127.0.0.1:{ports[0]} drain
  .venv/bin/steelyard ctl --admin {admin} set-weight demo 127.0.0.1:{ports[1]} 5
  curl -s http://{admin}/metrics | grep steelyard_server               # Prometheus
Ctrl-C stops (connections drain first).
""",
        flush=True,
    )
    await sup.wait()
    for b in backends:
        b.close()
    return 0
