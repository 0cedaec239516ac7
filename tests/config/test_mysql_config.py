"""The `mysql:` config: TLS files checked as `steelyard check` checks them, bad values named by
their key path and line."""

from __future__ import annotations

from steelyard.config.load import check_config_text

BASE = """pools:
  primary: {servers: [{address: 127.0.0.1:3306}]}
mysql:
  listeners:
    - listen: 127.0.0.1:6033
      users: [{name: app, password: pw}]
      backend_user: app
      primary: primary
"""


def issues(extra: str) -> list[str]:
    _, found = check_config_text(BASE + extra)
    return [f"{i.line}: {i.path}: {i.message}" for i in found]


def test_tls_files_that_do_not_load_are_reported(tmp_path):
    found = issues(f"      tls: {{certs: [{{cert: {tmp_path}/no.crt, key: {tmp_path}/no.key}}]}}\n")
    assert any("mysql.listeners[0].tls.certs[0]: cannot load" in f for f in found), found
    assert all(not f.startswith("None:") for f in found), found


def test_tls_settings_are_checked():
    found = issues("      tls: {certs: [], required: maybe}\n")
    assert any("mysql.listeners[0].tls.certs" in f for f in found), found
    assert any("mysql.listeners[0].tls.required" in f for f in found), found


def test_a_plain_listener_is_valid():
    assert issues("") == []


def test_timeouts_and_limits_have_the_peers_defaults():
    from steelyard.config.load import parse_config_text

    cfg = parse_config_text(BASE)
    (lst,) = cfg.mysql.listeners
    assert (lst.login_timeout, lst.idle_timeout, lst.max_prepared_stmt_count) == (
        10.0, 28800.0, 1024,
    )  # fmt: skip
    assert lst.backend_tls is None
    found = issues("      login_timeout: 0s\n      max_prepared_stmt_count: 0\n")
    assert any("mysql.listeners[0].login_timeout" in f for f in found), found
    assert any("mysql.listeners[0].max_prepared_stmt_count" in f for f in found), found


def test_backend_tls_files_and_pairs_are_checked(tmp_path):
    found = issues(f"      backend_tls: {{ca: {tmp_path}/no-ca.pem}}\n")
    assert any("mysql.listeners[0].backend_tls.ca" in f and "no such file" in f for f in found), (
        found
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    found = issues(f"      backend_tls: {{ca: {ca}, cert: {ca}}}\n")
    assert any("cert and key go together" in f for f in found), found
    assert issues(f"      backend_tls: {{ca: {ca}, verify: false}}\n") == []
