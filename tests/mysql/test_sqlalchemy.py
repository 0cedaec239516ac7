"""SQLAlchemy 2 through the proxy, with its two MySQL drivers: the ORM in transactions (which
stay on the primary and roll back as they should), its connection pool checking connections in
and out (ROLLBACK on return, pre-ping), and plain reads on the replicas in AUTOCOMMIT mode."""

from __future__ import annotations

import pytest
from sqlalchemy import String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fixtures.mysql_client import connect
from fixtures.procs import wait_for


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


@pytest.mark.parametrize("driver", ["pymysql", "mysqlconnector"])
def test_orm_transactions_and_pooled_connections(proxy, driver):
    port, primary, replicas, _ = proxy
    db = f"sa_{driver}"
    primary.sql(f"DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}")
    wait_for(lambda: connect(port), what="the proxy accepting logins").close()
    url = f"mysql+{driver}://app:proxy-secret@127.0.0.1:{port}/{db}"
    engine = create_engine(url, pool_size=2, pool_pre_ping=True)
    Base.metadata.create_all(engine)
    with Session(engine) as s, s.begin():
        s.add_all([Item(id=i, name=f"item {i}") for i in range(1, 6)])
    with Session(engine) as s:
        s.add(Item(id=99, name="never"))
        s.flush()  # written inside the transaction, and seen by it
        assert s.scalar(select(func.count()).select_from(Item)) == 6
        assert s.scalar(text("SELECT @@server_id")) == 1  # a transaction is the primary's
        s.rollback()
    for _ in range(6):  # the pool lends its connections again and again
        with Session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Item)) == 5
            assert s.get(Item, 3).name == "item 3"
    assert primary.sql(f"SELECT COUNT(*) FROM {db}.items").strip() == "5"
    engine.dispose()

    # AUTOCOMMIT: plain reads go to the replicas, once they have the rows
    for r in replicas:
        r.wait_for(primary)
    reader = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=2)
    servers = set()
    with reader.connect() as conn:
        assert conn.scalar(text("SELECT name FROM items WHERE id = 5")) == "item 5"
        for _ in range(8):
            servers.add(conn.scalar(text("SELECT @@server_id")))
    assert servers == {2, 3}
    reader.dispose()
