"""The config loader: a valid file loads; every kind of mistake is reported with path and line.

Each test writes a real file and asserts the exact (path, line, message) the operator would see,
because those three are the contract of `steelyard check`.
"""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from steelyard.config.load import (
    ConfigError,
    ConfigIssue,
    check_config_text,
    load_config,
    parse_config_text,
)
from steelyard.config.model import Config

FULL = """\
workers: 2
admin: {listen: 127.0.0.1:9900, token: null}
store: {kind: embedded, path: ./steelyard-data}
pools:
  web:
    balance: round_robin
    protect_threshold: 0
    health: {kind: tcp, interval: 2s, timeout: 1s, rise: 2, fall: 3}
    servers:
      - {address: 127.0.0.1:8081, weight: 5, zone: a}
      - {address: 127.0.0.1:8082, weight: 1, backup: true}
  api:
    balance: least_conn
    health:
      kind: http
      interval: 500ms
      path: /healthz
      expect_status: 200-299
    servers:
      - address: 10.0.0.1:80
      - address: 10.0.0.2:80
        weight: 3
tcp:
  - {name: front, listen: 0.0.0.0:9000, pool: web}
  - name: api
    listen: 0.0.0.0:9001
    pool: api
    connect_timeout: 250ms
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def issues(tmp_path: Path, text: str) -> list[tuple[str, int | None, str]]:
    """Load `text` from a file, expecting it to fail; the issues as (path, line, message)."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return [(i.path, i.line, i.message) for i in info.value.issues]


# --- valid files ---------------------------------------------------------------------------------


def test_full_config_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.workers == 2
    assert cfg.admin.listen == "127.0.0.1:9900"
    assert cfg.store.kind == "embedded"
    web = cfg.pools["web"]
    assert web.health is not None and (web.health.interval, web.health.timeout) == (2.0, 1.0)
    assert [(s.address, s.weight, s.zone, s.backup) for s in web.servers] == [
        ("127.0.0.1:8081", 5, "a", False),
        ("127.0.0.1:8082", 1, None, True),
    ]
    api = cfg.pools["api"]
    assert api.balance == "least_conn"
    assert api.health is not None and api.health.interval == 0.5
    assert api.health.path == "/healthz"
    assert [(s.address, s.weight) for s in api.servers] == [("10.0.0.1:80", 1), ("10.0.0.2:80", 3)]
    assert [(t.name, t.listen, t.pool) for t in cfg.tcp] == [
        ("front", "0.0.0.0:9000", "web"),
        ("api", "0.0.0.0:9001", "api"),
    ]
    assert cfg.tcp[1].connect_timeout == 0.25


def test_path_may_be_a_str_or_pathlike(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    assert load_config(str(path)) == load_config(path)


@pytest.mark.parametrize("text", ["", "\n", "# nothing here yet\n", "---\n"])
def test_empty_file_is_all_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(write(tmp_path, text)) == Config()


def test_parse_config_text() -> None:
    cfg = parse_config_text(FULL)
    assert cfg.pools["web"].servers[0].weight == 5
    with pytest.raises(ConfigError) as info:
        parse_config_text("workers: 0\n")
    assert str(info.value) == "<string>:1: workers: workers must be between 1 and 256"
    with pytest.raises(ConfigError) as info:
        parse_config_text("workers: 0\n", "demo.yaml")
    assert str(info.value).startswith("demo.yaml:1: workers:")


def test_check_config_text_does_not_raise() -> None:
    cfg, found = check_config_text(FULL)
    assert cfg is not None and found == []
    cfg, found = check_config_text("wrokers: 2\n")
    assert cfg is None
    assert found == [ConfigIssue("wrokers", 1, "unknown key 'wrokers' (did you mean 'workers'?)")]


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    text = """\
    defaults: &health {kind: tcp, interval: 2s}
    """
    # An anchor has to live under a real key; extension keys are not part of the contract.
    assert issues(tmp_path, text) == [("defaults", 1, "unknown key 'defaults'")]
    cfg = parse_config_text(
        textwrap.dedent("""\
        pools:
          web:
            health: &health {kind: tcp, interval: 2s}
            servers: [{address: 10.0.0.1:1}]
          api:
            health: {<<: *health, interval: 5s}
            servers: [{address: 10.0.0.2:1}]
        """)
    )
    assert cfg.pools["api"].health is not None
    assert (cfg.pools["api"].health.kind, cfg.pools["api"].health.interval) == ("tcp", 5.0)


# --- formatting ----------------------------------------------------------------------------------


def test_issue_format() -> None:
    issue = ConfigIssue("tcp[0].pool", 12, "unknown pool 'webb'")
    assert issue.format("config.yaml") == "config.yaml:12: tcp[0].pool: unknown pool 'webb'"
    assert ConfigIssue("", 3, "oops").format("c.yaml") == "c.yaml:3: oops"
    assert ConfigIssue("", None, "cannot read").format("c.yaml") == "c.yaml: cannot read"
    assert ConfigIssue("workers", None, "bad").format("c.yaml") == "c.yaml: workers: bad"


def test_config_error_str_and_pickle() -> None:
    err = ConfigError([ConfigIssue("a", 1, "x"), ConfigIssue("b", 2, "y")], "c.yaml")
    assert str(err) == "c.yaml:1: a: x\nc.yaml:2: b: y"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.issues, copy.filename, str(copy)) == (err.issues, err.filename, str(err))


# --- one test per kind of error ------------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.issues == [ConfigIssue("", None, "cannot read: No such file or directory")]
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.issues[0].message == "cannot read: Is a directory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"workers: 1\nadmin: {token: caf\xe9}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.issues == [ConfigIssue("", 2, "not UTF-8 text (byte 0xe9)")]


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert issues(tmp_path, "- workers: 1\n- tcp: []\n") == [
        ("", 1, "the top level must be a mapping (workers:, pools:, ...), got a list")
    ]
    assert issues(tmp_path, "workers\n") == [
        ("", 1, "the top level must be a mapping (workers:, pools:, ...), got 'workers'")
    ]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = """\
    workers: 1
    listne: 0.0.0.0:80
    wrokers: 2
    """
    assert issues(tmp_path, text) == [
        ("listne", 2, "unknown key 'listne'"),
        ("wrokers", 3, "unknown key 'wrokers' (did you mean 'workers'?)"),
    ]


def test_unknown_nested_key_points_at_the_key(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
    tcp:
      - name: front
        listne: 0.0.0.0:9000
        pool: web
    """
    assert issues(tmp_path, text) == [
        ("tcp[0].listen", 5, "field required"),
        ("tcp[0].listne", 6, "unknown key 'listne' (did you mean 'listen'?)"),
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        balance: first
    """
    assert issues(tmp_path, text) == [("pools.web.servers", 2, "field required")]


def test_wrong_type(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers:
          - address: 127.0.0.1:8081
            weight: abc
          - {address: 127.0.0.1:8082, weight: 1.5, backup: maybe, zone: 1}
    """
    assert issues(tmp_path, text) == [
        ("pools.web.servers[0].weight", 5, "expected a number, got 'abc'"),
        ("pools.web.servers[1].weight", 6, "expected a whole number, got 1.5"),
        ("pools.web.servers[1].zone", 6, "expected text, got 1 (put it in quotes)"),
        ("pools.web.servers[1].backup", 6, "expected true or false, got 'maybe'"),
    ]


def test_empty_value_and_wrong_shape(tmp_path: Path) -> None:
    text = """\
    admin: [127.0.0.1:9900]
    pools:
      web:
        servers:
          - address: 127.0.0.1:8081
            weight:
    tcp: {name: front}
    """
    assert issues(tmp_path, text) == [
        ("admin", 1, "expected a mapping (key: value), got a list"),
        ("pools.web.servers[0].weight", 6, "expected a number, got an empty value"),
        ("tcp", 7, "expected a list, got a mapping"),
    ]


def test_out_of_range(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        protect_threshold: 1.5
        servers: []
    tcp:
      - {name: front, listen: 0.0.0.0:9000, pool: web, retries: -1}
    """
    assert issues(tmp_path, text) == [
        ("pools.web.protect_threshold", 3, "must be at most 1.0, got 1.5"),
        ("pools.web.servers", 4, "needs at least 1 entry"),
        ("tcp[0].retries", 6, "must be at least 0, got -1"),
    ]


def test_bad_choice_suggests_the_closest(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        balance: leastconn
        servers: [{address: 127.0.0.1:8081}]
    """
    assert issues(tmp_path, text) == [
        (
            "pools.web.balance",
            3,
            "must be one of round_robin, least_conn, random_two, source_hash, hash, maglev,"
            " first, got 'leastconn' (did you mean 'least_conn'?)",
        )
    ]


def test_bad_duration(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        health:
          interval: 5 parsecs
          timeout: 2
        servers: [{address: 127.0.0.1:8081}]
    """
    assert issues(tmp_path, text) == [
        (
            "pools.web.health.interval",
            4,
            "bad duration '5 parsecs': use a number with a unit, like 500ms, 2s or 1m",
        ),
        (
            "pools.web.health.timeout",
            5,
            "bad duration 2: use a number with a unit, like 500ms, 2s or 1m",
        ),
    ]


def test_bad_address(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers:
          - address: 127.0.0.1
          - address: 127.0.0.1:70000
    tcp:
      - {name: front, listen: 9000, pool: web}
    """
    assert issues(tmp_path, text) == [
        ("pools.web.servers[0].address", 4, "address '127.0.0.1' must be host:port"),
        ("pools.web.servers[1].address", 5, "address '127.0.0.1:70000' has a bad port"),
        (
            "tcp[0].listen",
            7,
            "expected an address host:port, like 127.0.0.1:8080, got 9000",
        ),
    ]


def test_bad_pool_name(tmp_path: Path) -> None:
    text = """\
    pools:
      web pool:
        servers: [{address: 127.0.0.1:8081}]
    """
    assert issues(tmp_path, text) == [
        ("pools['web pool']", 2, "bad name 'web pool': use only letters, digits, '_', '.' and '-'")
    ]


def test_key_that_yaml_reads_as_a_boolean(tmp_path: Path) -> None:
    assert issues(tmp_path, "workers: 1\nyes: 2\n") == [
        ("yes", 2, "keys must be text, and YAML reads yes as true (put it in quotes)")
    ]


def test_unknown_pool(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
    tcp:
      - name: front
        listen: 0.0.0.0:9000
        pool: webb
    """
    assert issues(tmp_path, text) == [("tcp[0].pool", 7, "unknown pool 'webb'")]


def test_duplicate_listen_address(tmp_path: Path) -> None:
    text = """\
    admin: {listen: 127.0.0.1:9900}
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
    tcp:
      - {name: a, listen: 0.0.0.0:9000, pool: web}
      - {name: b, listen: 0.0.0.0:9000, pool: web}
      - {name: c, listen: 127.0.0.1:9900, pool: web}
    """
    assert issues(tmp_path, text) == [
        ("tcp[1].listen", 7, "0.0.0.0:9000 is already used by tcp[0].listen"),
        ("tcp[2].listen", 8, "127.0.0.1:9900 is already used by admin.listen"),
    ]


def test_default_admin_listen_counts_too(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
    tcp:
      - {name: a, listen: 127.0.0.1:9900, pool: web}
    """
    assert issues(tmp_path, text) == [
        ("tcp[0].listen", 5, "127.0.0.1:9900 is already used by admin.listen")
    ]


def test_duplicate_listener_name(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
    tcp:
      - {name: front, listen: 0.0.0.0:9000, pool: web}
      - name: front
        listen: 0.0.0.0:9001
        pool: web
    """
    assert issues(tmp_path, text) == [("tcp[1].name", 6, "duplicate listener name 'front'")]


def test_duplicate_server(tmp_path: Path) -> None:
    text = """\
    pools:
      web:
        servers:
          - address: 127.0.0.1:8081
          - address: 127.0.0.1:8082
          - address: 127.0.0.1:8081
            weight: 3
    """
    assert issues(tmp_path, text) == [
        (
            "pools.web.servers[2].address",
            6,
            "server 127.0.0.1:8081 is listed twice (first at pools.web.servers[0])",
        )
    ]


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = """\
    workers: 1
    pools:
      web:
        servers: [{address: 127.0.0.1:8081}]
        balance: first
        balance: maglev
    workers: 2
    """
    assert issues(tmp_path, text) == [
        ("pools.web.balance", 6, "duplicate key 'balance' (first at line 5)"),
        ("workers", 7, "duplicate key 'workers' (first at line 1)"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            "workers: 1\npools:\n  web: {servers: [{address: a:1}]\ntcp: []\n",
            4,
            "YAML syntax error: expected ',' or '}', but got '<scalar>'"
            " (in the flow mapping that starts at line 3)",
        ),
        (
            "workers: 1\nadmin:\n\tlisten: a:1\n",
            3,
            "YAML syntax error: found character '\\t' that cannot start any token"
            " (indent with spaces, not tabs)",
        ),
        (
            "workers: 1\nadmin:\n  token: a: b\n",
            3,
            "YAML syntax error: mapping values are not allowed here"
            " (quote a value that contains ': ')",
        ),
        (
            "workers: 1\n---\nworkers: 2\n",
            2,
            "YAML syntax error: expected a single document in the stream,"
            " but found another document",
        ),
    ],
)
def test_yaml_syntax_error(tmp_path: Path, text: str, line: int, message: str) -> None:
    assert issues(tmp_path, text) == [("", line, message)]


def test_recursive_alias(tmp_path: Path) -> None:
    assert issues(tmp_path, "workers: 1\ntcp: &a [*a]\n") == [
        ("tcp[0]", 2, "an alias refers to the node that contains it")
    ]


def test_admin_off_loopback_needs_a_token(tmp_path: Path) -> None:
    text = """\
    workers: 1
    admin:
      listen: 0.0.0.0:9900
    """
    assert issues(tmp_path, text) == [
        ("admin", 2, "admin.token is required when admin.listen is not a loopback address")
    ]
    assert load_config(write(tmp_path, "admin: {listen: 0.0.0.0:9900, token: s3cret}\n"))
    assert load_config(write(tmp_path, "admin: {listen: 'localhost:9900'}\n"))
    assert load_config(write(tmp_path, "admin: {listen: '[::1]:9900'}\n"))


def test_several_errors_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = """\
    workers: 1
    tcp:
      - {name: front, listen: 0.0.0.0:9000, pool: webb}
      - {name: front, listen: 0.0.0.0:9000, pool: web, retries: many}
      - {name: back, listen: 0.0.0.0:9001, pool: web}
    pools:
      web:
        balance: round_robin
        servers:
          - {address: 127.0.0.1:8081, weight: abc}
          - {address: 127.0.0.1:8082}
          - {address: 127.0.0.1:8082}
        health: {interval: soon}
    log_levl: debug
    """
    assert issues(tmp_path, text) == [
        ("tcp[0].pool", 3, "unknown pool 'webb'"),
        ("tcp[1].retries", 4, "expected a number, got 'many'"),
        ("tcp[1].name", 4, "duplicate listener name 'front'"),
        ("tcp[1].listen", 4, "0.0.0.0:9000 is already used by tcp[0].listen"),
        ("pools.web.servers[0].weight", 10, "expected a number, got 'abc'"),
        (
            "pools.web.servers[2].address",
            12,
            "server 127.0.0.1:8082 is listed twice (first at pools.web.servers[1])",
        ),
        (
            "pools.web.health.interval",
            13,
            "bad duration 'soon': use a number with a unit, like 500ms, 2s or 1m",
        ),
        ("log_levl", 14, "unknown key 'log_levl' (did you mean 'log_level'?)"),
    ]


def test_cross_check_of_an_invalid_item_uses_only_what_is_certain(tmp_path: Path) -> None:
    # tcp[1] is invalid, but its name and listen address are fine: both clash with tcp[0].
    # tcp[2]'s address is bad, so it is not also reported as a second user of 0.0.0.0:9000.
    # The pool with a bad server still exists for the listeners' references.
    text = """\
    pools:
      web:
        servers: [{address: 127.0.0.1:8081, weight: -1}]
    tcp:
      - {name: front, listen: 0.0.0.0:9000, pool: web}
      - {name: front, listen: 0.0.0.0:9000, pool: web, backlog: 0}
      - {name: back, listen: 0.0.0.0:99000, pool: web}
      - {name: admin, listen: 0.0.0.0:9901, pool: web}
    admin: {listen: 0.0.0.0:9901, tokn: x}  # invalid, and the listen address still counts
    """
    assert issues(tmp_path, text) == [
        ("pools.web.servers[0].weight", 3, "must be at least 0, got -1"),
        ("tcp[1].backlog", 6, "must be at least 1, got 0"),
        ("tcp[1].name", 6, "duplicate listener name 'front'"),
        ("tcp[1].listen", 6, "0.0.0.0:9000 is already used by tcp[0].listen"),
        ("tcp[2].listen", 7, "address '0.0.0.0:99000' has a bad port"),
        ("tcp[3].listen", 8, "0.0.0.0:9901 is already used by admin.listen"),
        ("admin.tokn", 9, "unknown key 'tokn' (did you mean 'token'?)"),
    ]


def test_model_still_guards_programmatic_construction() -> None:
    data = {
        "pools": {"web": {"servers": [{"address": "10.0.0.1:1"}]}},
        "tcp": [{"name": "front", "listen": "0.0.0.0:9000", "pool": "webb"}],
    }
    with pytest.raises(ValidationError, match="unknown pool 'webb'"):
        Config.model_validate(data)
    dup = {"pools": {"web": {"servers": [{"address": "10.0.0.1:1"}, {"address": "10.0.0.1:1"}]}}}
    with pytest.raises(ValidationError, match=r"server 10\.0\.0\.1:1 is listed twice"):
        Config.model_validate(dup)
