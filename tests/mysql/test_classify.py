"""Statement classification: routes, session effects and pinning markers, from the text."""

from __future__ import annotations

import pytest

from steelyard.mysql.classify import Route, Tx, classify

PRIMARY, REPLICA = Route.PRIMARY, Route.REPLICA


@pytest.mark.parametrize(
    ("sql", "route"),
    [
        ("SELECT * FROM t WHERE id = 1", REPLICA),
        ("  select 1", REPLICA),
        ("/* a comment */ SELECT 1", REPLICA),
        ("-- a line comment\nSELECT 1", REPLICA),
        ("# hash comment\nSELECT 1", REPLICA),
        ("SHOW TABLES", REPLICA),
        ("EXPLAIN SELECT * FROM t", REPLICA),
        ("EXPLAIN UPDATE t SET a = 1", PRIMARY),
        ("WITH x AS (SELECT 1) SELECT * FROM x", REPLICA),
        ("SELECT * FROM t FOR UPDATE", PRIMARY),
        ("select * from t lock in share mode", PRIMARY),
        ("SELECT * FROM t FOR SHARE", PRIMARY),
        ("SELECT a INTO @x FROM t", PRIMARY),
        ("SELECT LAST_INSERT_ID()", PRIMARY),
        ("SELECT FOUND_ROWS()", PRIMARY),
        ("SELECT NEXT VALUE FOR seq", PRIMARY),
        ("SELECT 'FOR UPDATE', \"GET_LOCK(\" FROM t", REPLICA),  # markers inside literals
        ("SELECT `for update` FROM t", REPLICA),
        ("/*master*/ SELECT 1", PRIMARY),
        ("/* master */SELECT 1", PRIMARY),
        ("/*slave*/ SELECT 1", REPLICA),
        ("/*slave*/ UPDATE t SET a = 1", PRIMARY),  # a hint never sends a write to a replica
        ("INSERT INTO t VALUES (1)", PRIMARY),
        ("UPDATE t SET a = 1 WHERE id = 2", PRIMARY),
        ("CREATE TABLE t (id INT)", PRIMARY),
        ("CALL proc()", PRIMARY),
        ("", PRIMARY),
    ],
)
def test_routes(sql, route):
    assert classify(sql.encode()).route is route


def test_transactions_and_session_changes():
    assert classify(b"BEGIN").tx is Tx.BEGIN
    assert classify(b"start transaction read only").tx is Tx.BEGIN
    assert classify(b"COMMIT").tx is Tx.END and classify(b"rollback").tx is Tx.END
    assert classify(b"ROLLBACK TO SAVEPOINT s1").tx is Tx.NONE
    assert classify(b"SET autocommit = 0").autocommit is False
    assert classify(b"set @@session.autocommit=ON").autocommit is True
    assert classify(b"SET SESSION autocommit := 1").autocommit is True
    assert classify(b"USE shop").database == "shop"
    assert classify(b"use `my db`;").database == "my db"
    s = classify(b"SET NAMES utf8mb4")
    assert s.sets and s.pins is None and s.route is PRIMARY
    assert classify(b"SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").sets


@pytest.mark.parametrize(
    ("sql", "why"),
    [
        ("CREATE TEMPORARY TABLE tmp (id INT)", "a temporary table"),
        ("SELECT GET_LOCK('job', 10)", "GET_LOCK"),
        ("SET @uid = 5", "a user variable"),
        ("SELECT @uid", "a user variable"),
        ("INSERT INTO t VALUES (@uid)", "a user variable"),
        ("LOCK TABLES t WRITE", "LOCK TABLES"),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", "SQL_CALC_FOUND_ROWS"),
        ("PREPARE s FROM 'SELECT 1'", "a text PREPARE"),
    ],
)
def test_what_pins_a_session(sql, why):
    s = classify(sql.encode())
    assert s.pins == why and s.route is PRIMARY


def test_what_does_not_pin_and_what_unpins():
    for sql in (b"SELECT @@version", b"SELECT 'a@b.com'", b"SET @@session.sql_mode = ''",
                b"SELECT * FROM `user@host`"):  # fmt: skip
        assert classify(sql).pins is None, sql
    assert classify(b"UNLOCK TABLES").unpins
    assert classify(b"DROP TEMPORARY TABLE tmp").unpins
    assert classify(b"SELECT RELEASE_ALL_LOCKS()").unpins


def test_unbounded_writes():
    assert classify(b"DELETE FROM t").unbounded_write
    assert classify(b"UPDATE t SET a = 1").unbounded_write
    assert not classify(b"UPDATE t SET a = 1 WHERE id = 1").unbounded_write
    assert not classify(b"DELETE FROM t WHERE 1").unbounded_write
    assert classify(b"UPDATE t SET note = 'WHERE' ").unbounded_write  # not fooled by a literal


def test_statements_differing_in_literals_share_one_cache_entry():
    from steelyard.mysql.classify import _classify

    classify(b"SELECT c FROM t WHERE id=1 AND name='x'")
    before = _classify.cache_info()
    st = classify(b"SELECT c FROM t WHERE id=987 AND name='other'")
    after = _classify.cache_info()
    assert (after.hits, after.misses) == (before.hits + 1, before.misses)
    assert st.route is Route.REPLICA
    # values that matter are read from the statement's own text
    assert classify(b"SET autocommit=0").autocommit is False
    assert classify(b"SET autocommit=1").autocommit is True
    assert classify(b"USE db2").database == "db2"


def test_a_huge_set_is_cached_by_its_first_4_kib():
    """SET and USE are cached by their own text: beyond 4 KiB, that text would pin up to
    max_allowed_packet per entry in a cache every client shares (4096 x 64 MiB)."""
    from steelyard.mysql.classify import _classify

    head = b"SET @a='" + b"x" * 5000
    classify(head + b"1'")
    before = _classify.cache_info()
    st = classify(head + b"2'")  # differs only past 4 KiB: the same entry
    after = _classify.cache_info()
    assert (after.hits, after.misses) == (before.hits + 2, before.misses)
    assert st.keyword == "SET"
    assert classify(b"USE `db3`").database == "db3"
    assert classify(b"SELECT @'quoted'").pins == "a user variable"
    assert classify(b"SELECT 'FOR UPDATE', 1").route is Route.REPLICA
    # without quotes too
    classify(b"SELECT c FROM sbtest1 WHERE id=10")
    before = _classify.cache_info()
    assert classify(b"SELECT c FROM sbtest1 WHERE id=4242").route is Route.REPLICA
    assert _classify.cache_info().hits == before.hits + 1
    assert classify(b"SELECT id FROM t1 WHERE id=1 FOR UPDATE").route is Route.PRIMARY
    assert classify(b"SELECT GET_LOCK(@l1, 10)").pins == "GET_LOCK"


@pytest.mark.parametrize(
    ("sql", "parts"),
    [
        ("SELECT 1; DELETE FROM t", ["SELECT 1", " DELETE FROM t"]),
        ("SELECT 1;", ["SELECT 1"]),
        ("SELECT ';', \";\", `a;b` FROM t", ["SELECT ';', \";\", `a;b` FROM t"]),
        ("SELECT 1 -- ;\n; SELECT 2", ["SELECT 1 -- ;\n", " SELECT 2"]),
        ("SELECT 1 # ;\n", ["SELECT 1 # ;\n"]),
        ("SELECT 1 /* ; */", ["SELECT 1 /* ; */"]),
        ("SELECT 1--;", ["SELECT 1--"]),  # `--` without a space is two minuses
        ("SELECT 1 /*!; DELETE FROM t */", ["SELECT 1    ", " DELETE FROM t   "]),
        ("/*M!100000 DELETE FROM t*/", ["           DELETE FROM t  "]),
        ("SELECT 'it''s;'; SELECT 2", ["SELECT 'it''s;'", " SELECT 2"]),
        ("SELECT 'unterminated; DELETE FROM t", ["SELECT 'unterminated; DELETE FROM t"]),
        (" ; ;SELECT 1", ["SELECT 1"]),
    ],
)
def test_split_reads_statements_as_the_server_does(sql, parts):
    from steelyard.mysql.split import split

    assert split(sql.encode()) == [p.encode() for p in parts]


def test_backslashes_are_read_both_ways():
    """`'\\'` closes a literal under NO_BACKSLASH_ESCAPES: the statements hidden that way
    count too (the session may have set that sql_mode, even in the same text)."""
    from steelyard.mysql.split import split

    sql = b"SELECT '\\'; DELETE FROM t; -- '"
    assert split(sql) == [sql]
    assert split(sql, backslash=False) == [b"SELECT '\\'", b" DELETE FROM t"]
    assert classify(sql).several and classify(sql).unbounded_write


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; DELETE FROM t",
        "SELECT 1; UPDATE t SET a = 1",
        "/*!DELETE FROM t*/",
        "SELECT 1 /*!; DELETE FROM t */",
        "DELETE FROM t /* WHERE */",
        "DELETE FROM t -- WHERE\n",
        "SELECT '\\'; DELETE FROM t; -- '",
        "DELETE FROM t ORDER BY '\\'' WHERE 1 -- '",  # no WHERE under NO_BACKSLASH_ESCAPES
    ],
)
def test_the_firewall_sees_every_statement(sql):
    st = classify(sql.encode())
    assert st.unbounded_write and st.route is PRIMARY and st.keyword in ("DELETE", "UPDATE")


def test_multi_statements_route_and_pin_by_all_their_statements():
    reads = classify(b"SELECT 1; SELECT 2")
    assert reads.route is REPLICA and reads.several and reads.pins is None and not reads.dirties
    write = classify(b"SELECT 1; INSERT INTO t VALUES (1)")
    assert write.route is PRIMARY and write.pins is None and not write.dirties
    for sql in (b"SELECT 1; USE other", b"SELECT 1; SET time_zone = '+01:00'", b"SELECT 1; BEGIN",
                b"SELECT 1; CREATE TEMPORARY TABLE x (a INT)", b"SELECT 1; CALL p()"):  # fmt: skip
        st = classify(sql)
        assert st.route is PRIMARY and st.pins and st.dirties, sql
    assert classify(b"SELECT 1; SET @x = 1").pins == "a user variable"
    # one statement and a trailing semicolon: still one, its session effects followed
    assert classify(b"USE shop;").database == "shop" and not classify(b"USE shop;").several
    assert classify(b"SET NAMES utf8mb4;").sets


@pytest.mark.parametrize(
    "sql",
    ["CALL p()", "EXECUTE IMMEDIATE 'SET @a = 1'", "EXECUTE s", "DO RELEASE_LOCK('x')",
     "HANDLER t OPEN", "XA START 'x'", "SET @a = 1", "PREPARE s FROM 'SELECT 1'",
     "CREATE TEMPORARY TABLE x (a INT)", "SELECT /* it's */ @x := 5, 'a'",
     "SET SESSION session_track_state_change = OFF", ""],
)  # fmt: skip
def test_what_leaves_state_the_session_does_not_follow(sql):
    assert classify(sql.encode()).dirties


@pytest.mark.parametrize(
    "sql",
    ["SELECT 1", "INSERT INTO t VALUES (1)", "SET NAMES utf8", "USE db", "BEGIN", "COMMIT",
     "LOCK TABLES t READ", "UNLOCK TABLES", "SELECT GET_LOCK('a', 1)", "SET autocommit = 0"],
)  # fmt: skip
def test_what_the_session_follows_itself(sql):
    assert not classify(sql.encode()).dirties
