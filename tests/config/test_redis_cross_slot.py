"""`redis.cross_slot`: `group` by default, `refuse` on request, anything else named and refused."""

from __future__ import annotations

import yaml

from steelyard.config.load import check_config_text
from steelyard.config.redis_model import RedisConfig

BASE = """
redis:
  proxies:
    - {listen: 127.0.0.1:19000}
  groups:
    - {id: 1, master: 127.0.0.1:7001}
"""


def test_group_by_default_and_refuse_on_request():
    assert RedisConfig.model_validate(yaml.safe_load(BASE)["redis"]).cross_slot == "group"
    text = BASE + "  cross_slot: refuse\n"
    _, found = check_config_text(text)
    assert found == []
    assert RedisConfig.model_validate(yaml.safe_load(text)["redis"]).cross_slot == "refuse"


def test_another_value_is_refused_with_its_line():
    _, found = check_config_text(BASE + "  cross_slot: allow\n")
    assert [(i.line, i.path, i.message) for i in found] == [
        (7, "redis.cross_slot", "must be one of group, refuse, got 'allow'")
    ]
