"""The `redis:` config: the issue's example is valid; mistakes name their key and line."""

from __future__ import annotations

import pytest
import yaml

from steelyard.config.load import check_config_text
from steelyard.config.redis_model import RedisConfig

EXAMPLE = """
redis:
  proxies:
    - {listen: 127.0.0.1:19000, auth: null, backend_auth: null, read_from_replicas: false}
  groups:
    - {id: 1, master: 127.0.0.1:7001, replicas: [127.0.0.1:7101], weight: 1}
    - {id: 2, master: 127.0.0.1:7002}
"""


def messages(text: str) -> list[str]:
    _, found = check_config_text(text)
    return [f"{i.line}: {i.path}: {i.message}" for i in found]


def test_the_example_is_valid():
    _, found = check_config_text(EXAMPLE)
    assert found == []
    redis = RedisConfig.model_validate(yaml.safe_load(EXAMPLE)["redis"])
    assert [g.id for g in redis.groups] == [1, 2]
    assert redis.groups[1].replicas == [] and redis.groups[1].weight == 1
    assert redis.allow_fanout is False and redis.databases == 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (EXAMPLE.replace("id: 2", "id: 1"), "redis.groups: group id 1 is used twice"),
        (EXAMPLE.replace("7002", "7101"), "127.0.0.1:7101 is in group 1 and in group 2"),
        (EXAMPLE.replace("id: 2", "id: 10000"), "redis.groups[1].id"),
        (EXAMPLE.replace("weight: 1", "weight: 0"), "redis.groups[0].weight"),
        (EXAMPLE.replace("master: 127.0.0.1:7002", "master: redis-2:7002"), "must be an IP"),
        (EXAMPLE.replace("read_from_replicas", "read_from_replica"), "did you mean"),
        (EXAMPLE + "  auto_failover: true\n  sentinel: {addresses: [127.0.0.1:26379]}\n",
         "use auto_failover or sentinel, not both"),
        ("admin: {listen: 127.0.0.1:19000}\n" + EXAMPLE,
         "redis.proxies[0].listen: 127.0.0.1:19000 is already used by admin.listen"),
    ],
)  # fmt: skip
def test_errors(text, expected):
    found = messages(text)
    assert any(expected in f for f in found), found
    assert all(not f.startswith("None:") for f in found), found
