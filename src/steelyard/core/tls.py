"""TLS contexts: a listener's certificates chosen by SNI, and the client context for servers
(HTTP listeners and upstreams, MySQL listeners).

The first certificate is the default (clients without SNI, or with a name no certificate
covers, as nginx's default server). Names come from each certificate's subjectAltName DNS
entries (or its CN when it has none); `*.example.com` covers one label.
"""

from __future__ import annotations

import ssl

from steelyard.config.tls_model import TlsConfig


def _names(cert_path: str) -> list[str]:
    info = ssl._ssl._test_decode_cert(cert_path)  # type: ignore[attr-defined]
    names = [v.lower() for k, v in info.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in info.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    names.append(value.lower())
    return names


def _context(cert: str, key: str, min_version: str, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def lookup(table: dict[str, ssl.SSLContext], name: str) -> ssl.SSLContext | None:
    name = name.lower().rstrip(".")
    ctx = table.get(name)
    if ctx is None and "." in name:
        ctx = table.get("*." + name.split(".", 1)[1])
    return ctx


def server_context(cfg: TlsConfig, alpn: list[str] | None = None) -> ssl.SSLContext:
    """The listener's context; its SNI callback swaps in the matching certificate's. `alpn`:
    the application protocols offered (none for protocols without ALPN, as MySQL)."""
    contexts = [_context(c.cert, c.key, cfg.min_version, alpn or []) for c in cfg.certs]
    table: dict[str, ssl.SSLContext] = {}
    for c, ctx in zip(cfg.certs, contexts, strict=True):
        for name in _names(c.cert):
            table.setdefault(name, ctx)
    default = contexts[0]

    def pick(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        if name:
            ctx = lookup(table, name)
            if ctx is not None and ctx is not default:
                sock.context = ctx

    default.sni_callback = pick
    return default


def client_context(
    verify: bool, ca: str | None = None, alpn: list[str] | None = None,
    cert: str | None = None, key: str | None = None,
) -> ssl.SSLContext:  # fmt: skip
    """`cert` and `key`: a client certificate shown to servers that ask for one."""
    ctx = ssl.create_default_context(cafile=ca)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


def check_files(cfg: TlsConfig) -> list[tuple[int, str]]:
    """(index, problem) for each certificate that does not load (for `steelyard check`)."""
    problems = []
    for i, c in enumerate(cfg.certs):
        try:
            _context(c.cert, c.key, cfg.min_version, [])
        except ssl.SSLError as exc:
            problems.append((i, f"cannot load {c.cert} / {c.key}: {exc.reason or exc}"))
        except OSError as exc:
            problems.append((i, f"cannot load {c.cert} / {c.key}: {exc.strerror or exc}"))
    return problems
