"""Load the YAML config into a validated `Config`, or fail with every problem, each with its line.

`steelyard run` and `steelyard check` both come through here, so a bad file is reported the way
`nginx -t` does it: one line per problem, `file:line: key.path: message`, all problems at once
(errors are answers: a config error names the key path and the line). The steps:

1. Read and decode the file; a read or YAML syntax error is the one and only issue.
2. Compose the YAML into a node tree (SafeLoader) and walk it once: that gives the line of every
   key path, and catches duplicate keys, which PyYAML would otherwise silently resolve to the
   last value.
3. Validate with pydantic, with the model's cross-check turned off, and translate each error
   (pydantic reports all field errors at once) into a short plain-text message.
4. Run `cross_check` separately so that each cross-reference problem (unknown pool, duplicate
   listener, duplicate server) gets its own key path and line instead of one combined message.
   When step 3 failed, the cross-check still runs over what is certain, so one run shows all.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
import socket
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from steelyard.config.model import (
    SKIP_CROSS_CHECK,
    AdminConfig,
    Config,
    HttpListenerConfig,
    PoolConfig,
    ServerConfig,
    TcpListenerConfig,
    cross_check,
    format_path,
)

# A key path into the document: ('pools', 'web', 'servers', 1, 'address').
Loc = tuple[Any, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_NO_KEY = object()  # a list or mapping used as a key: construction reports it
_NAME_PATTERN = "^[A-Za-z0-9_.-]+$"  # model.Name; its pydantic message would be a bare regex


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is (key path, line) and what is wrong."""

    path: str  # `tcp[0].pool`; '' for the document itself (syntax errors, a bad top level)
    line: int | None  # 1-based; None when there is no line to point at (unreadable file)
    message: str

    def format(self, filename: str) -> str:
        """`config.yaml:12: tcp[0].pool: unknown pool 'webb'`."""
        where = filename if self.line is None else f"{filename}:{self.line}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The config file cannot be used; `issues` lists every problem found, sorted by line."""

    def __init__(self, issues: Iterable[ConfigIssue], filename: str) -> None:
        self.issues = list(issues)
        self.filename = filename
        super().__init__(self.issues, filename)

    def __str__(self) -> str:
        return "\n".join(issue.format(self.filename) for issue in self.issues)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps the error intact across processes (the supervisor may report a worker's load).
        return (type(self), (self.issues, self.filename))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem."""
    filename = os.fsdecode(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        issue = ConfigIssue("", None, f"cannot read: {e.strerror or e}")
        raise ConfigError([issue], filename) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        issue = ConfigIssue("", line, f"not UTF-8 text (byte {raw[e.start]:#04x})")
        raise ConfigError([issue], filename) from None
    return parse_config_text(text, filename)


def parse_config_text(text: str, filename: str = "<string>") -> Config:
    """Validate config text; `filename` is only used in the error messages."""
    cfg, issues = check_config_text(text)
    if issues or cfg is None:
        raise ConfigError(issues, filename)
    return cfg


def check_config_text(text: str) -> tuple[Config | None, list[ConfigIssue]]:
    """Validate config text without raising: (the config or None, issues sorted by line)."""
    try:
        cfg, issues = _check(text)
    except RecursionError:
        # The composer and the walker recurse per nesting level; no real config gets near this.
        return None, [ConfigIssue("", None, "the document is nested too deeply")]
    unique = list(dict.fromkeys(issues))  # pydantic and the cross-check can overlap
    unique.sort(key=lambda i: (i.line is None, i.line or 0))  # stable: keeps order within a line
    return (None if unique else cfg), unique


def _check(text: str) -> tuple[Config | None, list[ConfigIssue]]:
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
    except yaml.YAMLError as e:
        return None, [_yaml_issue(e, text)]
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as e:
            return None, [_yaml_issue(e, text)]
        if node is None:  # empty file, or only comments: every default
            return Config.model_validate({}), []
        walker = _Walker()
        walker.walk(node, ())
        if walker.recursive:
            return None, walker.issues
        try:
            data = loader.construct_document(node)
        except yaml.YAMLError as e:
            return None, [*walker.issues, _yaml_issue(e, text)]
    finally:
        loader.dispose()

    issues = walker.issues
    lines = walker.lines
    if data is None:  # `---` alone, or `~`: an empty document, like an empty file
        data = {}
    if not isinstance(data, dict):
        message = f"the top level must be a mapping (workers:, pools:, ...), got {_show(data)}"
        return None, [*issues, ConfigIssue("", lines[()], message)]

    cfg: Config | None
    try:
        cfg = Config.model_validate(data, context={SKIP_CROSS_CHECK: True})
    except ValidationError as e:
        cfg = None
        issues += [_pydantic_issue(err, walker) for err in e.errors(include_url=False)]
        problems = _salvaged_cross_check(data)
    else:
        problems = cross_check(cfg) + _host_checks(cfg)
    for loc, message in problems:
        issues.append(ConfigIssue(walker.format(loc), _line(loc, lines), message))
    return cfg, issues


# --- YAML: syntax errors, lines, duplicate keys ------------------------------------------------


def _yaml_issue(e: yaml.YAMLError, text: str) -> ConfigIssue:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        problem, context = e.problem or "", e.context or ""
        if problem.startswith("but ") and context:
            # "expected a single document in the stream, but found another document"
            message = f"{context}, {problem}"
        else:
            message = problem or context or "invalid YAML"
            if context and problem and e.context_mark:
                # "while parsing a flow mapping" -> "in the flow mapping that starts at line 3"
                where = re.sub(r"^while \w+ (an? )?", "in the ", context)
                message += f" ({where} that starts at line {e.context_mark.line + 1})"
        if "'\\t'" in problem:
            message += " (indent with spaces, not tabs)"
        elif problem == "mapping values are not allowed here":
            message += " (quote a value that contains ': ')"
        return ConfigIssue("", mark.line + 1 if mark else None, f"YAML syntax error: {message}")
    if isinstance(e, yaml.reader.ReaderError):  # a control character, or bad UTF-8 bytes
        line = text[: e.position].count("\n") + 1
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        return ConfigIssue("", line, f"YAML syntax error: character {char} is not allowed")
    return ConfigIssue("", None, f"YAML error: {e}")


class _Walker:
    """One pass over the composed YAML tree: key path -> line, duplicate keys, recursive aliases.

    For a mapping entry the line is the key's; for a sequence item, the item's. An alias is not
    walked again: errors inside it point at the key that holds the alias, which is what the
    operator wrote at that place (and it keeps alias-heavy files linear).
    """

    def __init__(self) -> None:
        self.lines: dict[Loc, int] = {}
        self.key_text: dict[Loc, str] = {}  # as written: `yes`, where PyYAML's key is True
        self.issues: list[ConfigIssue] = []
        self.recursive = False
        self._seen: set[int] = set()
        self._open: set[int] = set()  # nodes on the current path, to catch `&a [*a]`
        self._keys = yaml.constructor.SafeConstructor()

    def walk(self, node: yaml.Node, path: Loc) -> None:
        if not path:
            self.lines[()] = node.start_mark.line + 1
        if id(node) in self._open:
            self.recursive = True
            line = node.start_mark.line + 1
            self.issues.append(
                ConfigIssue(format_path(path), line, "an alias refers to the node that contains it")
            )
            return
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                self._mapping(node, path)
            elif isinstance(node, yaml.SequenceNode):
                for i, item in enumerate(node.value):
                    self.lines[(*path, i)] = item.start_mark.line + 1
                    self.walk(item, (*path, i))
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Loc) -> None:
        first_line: dict[Any, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key is _NO_KEY:
                continue
            sub = (*path, key)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.issues.append(
                    ConfigIssue(
                        format_path(sub),
                        line,
                        f"duplicate key {key_node.value!r} (first at line {first_line[key]})",
                    )
                )
                # PyYAML keeps the last value; forget the lines of the first one's contents.
                for stale in [p for p in self.lines if p[: len(sub)] == sub]:
                    del self.lines[stale]
            else:
                first_line[key] = line
            self.lines[sub] = line
            self.key_text[sub] = key_node.value
            self.walk(value_node, sub)
        for merged in merges:
            self._merge(merged, path, set(first_line))

    def _merge(self, node: yaml.Node, path: Loc, explicit: set[Any]) -> None:
        # `<<: *defaults` (or a list of them): keys written out here win over merged ones, and
        # earlier merged maps win over later ones, so only fill in what is not there yet.
        # The merged maps themselves were walked where they are defined.
        maps = node.value if isinstance(node, yaml.SequenceNode) else [node]
        for m in maps:
            if not isinstance(m, yaml.MappingNode):
                continue  # construction reports a bad merge
            for key_node, value_node in m.value:
                if key_node.tag == _MERGE_TAG:
                    self._merge(value_node, path, explicit)
                    continue
                key = self._key(key_node)
                if key is not _NO_KEY and key not in explicit and (*path, key) not in self.lines:
                    self.lines[(*path, key)] = key_node.start_mark.line + 1
                    self.key_text[(*path, key)] = key_node.value

    def format(self, path: Loc) -> str:
        """`format_path`, with keys that YAML read as non-text (yes, 2) shown as written."""
        shown = [
            self.key_text.get(path[: n + 1], part) if not isinstance(part, str) else part
            for n, part in enumerate(path)
        ]
        return format_path(tuple(shown))

    def _key(self, node: yaml.Node) -> Any:
        """The key as PyYAML will construct it (so `1` is an int, `yes` is True), or _NO_KEY."""
        if not isinstance(node, yaml.ScalarNode):
            return _NO_KEY
        try:
            key = self._keys.construct_object(node)
            hash(key)
        except Exception:
            # A scalar the resolver took for a timestamp but is not a date, and the like:
            # construction reports it; the text still locates it.
            return node.value
        return key


def _line(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """Line of the deepest prefix of `loc` present in the document."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


# --- pydantic errors -> plain text ---------------------------------------------------------------


def _pydantic_issue(err: ErrorDetails, walker: _Walker) -> ConfigIssue:
    lines = walker.lines
    loc = tuple(err["loc"])
    if err["type"] == "invalid_key" and loc:
        loc = (*loc[:-1], err.get("input"))  # pydantic puts a None key in the loc as 'None'
    # pydantic adds steps that are not keys ('[key]', 'function-after[...]', union tags); keep
    # the steps that exist in the document, plus the absent key itself for a missing field.
    path: Loc = ()
    for part in loc:
        if (*path, part) in lines:
            path = (*path, part)
    line = lines.get(path, lines.get(()))
    if err["type"] == "missing" and loc:
        path = (*path, loc[-1])
    message = _message(err, path)
    is_key = bool(loc) and loc[-1] == "[key]"
    if err["type"] == "invalid_key" or (is_key and err["type"] == "string_type"):
        written, read = walker.key_text.get(path), _show(err.get("input"))
        if written is not None and written != read:
            message = f"keys must be text, and YAML reads {written} as {read} (put it in quotes)"
        else:
            message = f"keys must be text, got {read} (put it in quotes)"
    elif is_key and not message.startswith("bad name"):
        message = f"bad key: {message}"
    return ConfigIssue(walker.format(path), line, message)


def _message(err: ErrorDetails, path: Loc) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    value = err.get("input")
    got = _show(value)
    if kind == "extra_forbidden":
        key = path[-1] if path else value
        message = f"unknown key {key!r}"
        model = _model_at(path[:-1])
        if model is not None and isinstance(key, str):
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
        return message
    if kind == "missing":
        return "field required"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in ("int_parsing", "int_type", "float_parsing", "float_type"):
        return f"expected a number, got {got}"
    if kind == "int_from_float":
        return f"expected a whole number, got {got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"expected true or false, got {got}"
    if kind == "string_type":
        hint = " (put it in quotes)" if isinstance(value, int | float | bool) else ""
        return f"expected text, got {got}{hint}"
    if kind in ("literal_error", "enum"):
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        message = f"must be one of {', '.join(choices)}, got {got}"
        close = difflib.get_close_matches(str(value), choices, n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
        return message
    bounds = {
        "greater_than_equal": ("ge", "at least"),
        "greater_than": ("gt", "above"),
        "less_than_equal": ("le", "at most"),
        "less_than": ("lt", "below"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        return f"must be {words} {ctx.get(key)}, got {got}"
    if kind == "too_short":
        n = ctx.get("min_length")
        return f"needs at least {n} {'entry' if n == 1 else 'entries'}"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == _NAME_PATTERN:
            return f"bad name {got}: use only letters, digits, '_', '.' and '-'"
        return f"{got} does not match {ctx.get('pattern')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value), got {got}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list, got {got}"
    if kind == "invalid_key":
        return f"keys must be text, got {got} (put it in quotes)"
    message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message[:1].lower() + message[1:]


def _show(value: object) -> str:
    """A YAML value the way an operator wrote it, for `got ...`."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(str(value))  # dates and the like


def _model_at(path: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at `path`, to suggest its keys."""
    tp: Any = Config
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """`Annotated[X, ...]` and `X | None` -> X."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


# --- cross-check of a config that did not validate -----------------------------------------------

_PLACEHOLDER = "\0invalid"  # no valid name, address or pool name can contain NUL
_M = typing.TypeVar("_M", bound=BaseModel)


def _salvaged_cross_check(data: dict[Any, Any]) -> list[tuple[Loc, str]]:
    """`cross_check` over what is certain in a config that failed validation.

    Each item that `cross_check` reads (admin, each pool and server, each tcp listener) is
    validated on its own. For an item that fails, the fields `cross_check` reads are taken as
    written when no error touches them (an unknown key next to them does not make a listen
    address doubtful) and replaced by a placeholder that matches nothing when one does, so
    that no problem is reported that is only a knock-on effect of another error. Items are
    never dropped, so list indices, and with them key paths, stay those of the document.
    Keep in step with `cross_check`: the fields it reads are listed here.
    """
    raw_pools = data.get("pools", {})
    if not isinstance(raw_pools, dict):
        return []  # every pool reference would look unknown
    counter = itertools.count()
    placeholders: list[Loc] = [("pools", _PLACEHOLDER)]

    def address() -> str:
        return f"[{_PLACEHOLDER}{next(counter)}]:1"

    def name() -> str:
        return f"{_PLACEHOLDER}{next(counter)}"

    def salvage(model: type[_M], raw: object, loc: Loc, needs: dict[str, Any]) -> _M:
        try:
            return model.model_validate(raw, context={SKIP_CROSS_CHECK: True})
        except ValidationError as e:
            # Errors about the item as a whole (admin's token rule) leave its fields certain.
            touched = {err["loc"][0] for err in e.errors() if err["loc"]}
        fields: dict[str, Any] = {}
        for field, placeholder in needs.items():
            info = model.model_fields[field]
            if isinstance(raw, dict) and field not in raw and not info.is_required():
                value = info.get_default(call_default_factory=True)
            else:
                value = raw.get(field) if isinstance(raw, dict) else None
            if field in touched or not isinstance(value, str):
                value = placeholder() if callable(placeholder) else placeholder
                placeholders.append((*loc, field))
            fields[field] = value
        return model.model_construct(**fields)

    admin = salvage(AdminConfig, data.get("admin", {}), ("admin",), {"listen": None})
    pools: dict[str, PoolConfig] = {}
    for pool_name, raw in raw_pools.items():
        if not isinstance(pool_name, str):
            continue
        pool = _valid(PoolConfig, raw)
        if pool is None:
            raw_servers = raw.get("servers") if isinstance(raw, dict) else None
            servers = [
                salvage(ServerConfig, s, ("pools", pool_name, "servers", j), {"address": address})
                for j, s in enumerate(raw_servers if isinstance(raw_servers, list) else [])
            ]
            pool = PoolConfig.model_construct(servers=servers)
        pools[pool_name] = pool
    pools[_PLACEHOLDER] = PoolConfig.model_construct(servers=[])
    raw_http = data.get("http", [])
    http = [
        salvage(
            HttpListenerConfig,
            raw,
            ("http", i),
            {"name": name, "listen": address},
        )
        for i, raw in enumerate(raw_http if isinstance(raw_http, list) else [])
    ]
    for listener in http:
        listener.routes = []  # route checks need a valid listener
    raw_tcp = data.get("tcp", [])
    tcp = [
        salvage(
            TcpListenerConfig,
            raw,
            ("tcp", i),
            {"name": name, "listen": address, "pool": _PLACEHOLDER},
        )
        for i, raw in enumerate(raw_tcp if isinstance(raw_tcp, list) else [])
    ]
    cfg = Config.model_construct(admin=admin, pools=pools, tcp=tcp, http=http)
    return [
        (loc, message)
        for loc, message in cross_check(cfg)
        if not any(loc[: len(p)] == p for p in placeholders)
    ]


def _host_checks(cfg: Config) -> list[tuple[Loc, str]]:
    """What the config names on this host: files that must load (certificates, as `nginx -t`
    checks them) and network interfaces that must exist (VRRP)."""
    from steelyard.core.tls import check_files

    problems: list[tuple[Loc, str]] = []
    for i, listener in enumerate(cfg.http):
        if listener.tls is not None:
            for j, message in check_files(listener.tls):
                problems.append((("http", i, "tls", "certs", j), message))
    for i, mysql_listener in enumerate(cfg.mysql.listeners if cfg.mysql else []):
        if mysql_listener.tls is not None:
            for j, message in check_files(mysql_listener.tls):
                problems.append((("mysql", "listeners", i, "tls", "certs", j), message))
    for i, inst in enumerate(cfg.vrrp.instances if cfg.vrrp else []):
        try:
            socket.if_nametoindex(inst.interface)
        except OSError:
            problems.append((
                ("vrrp", "instances", i, "interface"),
                f"no interface {inst.interface!r} on this host: its virtual IPs "
                f"{', '.join(inst.virtual_ips)} would have nowhere to go",
            ))  # fmt: skip
    held = _host_addresses() if cfg.virtual_services else set()
    vips = {a for inst in cfg.vrrp.instances for a in inst.addresses()} if cfg.vrrp else set()
    for i, vs in enumerate(cfg.virtual_services):
        if vs.vip not in vips and vs.vip not in held:
            problems.append((
                ("virtual_services", i, "address"),
                f"{vs.vip} is neither a VRRP virtual IP nor an address of this host's interfaces: "
                "no packet for it would reach this node",
            ))  # fmt: skip
    return problems


def _host_addresses() -> set[str]:
    """The IPv4 addresses on this host's interfaces (`ip -4 addr`)."""
    from steelyard.vrrp.netif import addresses

    return addresses()


def _valid(model: type[_M], raw: object) -> _M | None:
    try:
        return model.model_validate(raw, context={SKIP_CROSS_CHECK: True})
    except ValidationError:
        return None


__all__ = [
    "ConfigError",
    "ConfigIssue",
    "check_config_text",
    "load_config",
    "parse_config_text",
]
