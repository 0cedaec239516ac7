"""The test topology itself: a primary and two replicas that replicate by GTID and refuse
writes, as the MySQL tier's tests assume."""

from __future__ import annotations

import pymysql
import pytest

from fixtures.mariadb import PASSWORD, USER


def test_replicas_follow_the_primary_and_are_read_only(replication):
    primary, *replicas = replication
    primary.sql("CREATE DATABASE fixture_check; CREATE TABLE fixture_check.t (id INT PRIMARY KEY);"
                "INSERT INTO fixture_check.t VALUES (1), (2);")  # fmt: skip
    for r in replicas:
        r.wait_for(primary)
        assert r.sql("SELECT COUNT(*) FROM fixture_check.t").strip() == "2"
        conn = pymysql.connect(host="127.0.0.1", port=r.port, user=USER, password=PASSWORD,
                               cursorclass=pymysql.cursors.DictCursor)  # fmt: skip
        with conn.cursor() as c:
            c.execute("SHOW SLAVE STATUS")
            status = c.fetchone()
        assert status["Using_Gtid"] == "Slave_Pos" and status["Slave_SQL_Running"] == "Yes"
        with conn.cursor() as c, pytest.raises(pymysql.err.OperationalError) as refused:
            c.execute("INSERT INTO fixture_check.t VALUES (3)")
        assert refused.value.args[0] == 1290  # ER_OPTION_PREVENTS_STATEMENT (read_only)
        conn.close()
