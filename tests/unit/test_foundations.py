"""Config, escalation building, personal-data masking and the watchdog."""

from __future__ import annotations

import json
import logging
import random
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import chinese_calendar
import pytest

from gateway.config import is_allowed, load_settings
from gateway.errors import ConfigError, StuckError
from gateway.ops.logs import JsonFormatter
from gateway.ops.watchdog import Watchdog
from gateway.pii import mask_name, mask_text
from gateway.routing.escalation import escalation_id, handling_deadline_ms
from gateway.topics import Topics

pytestmark = pytest.mark.unit


def test_defaults_load_and_cover_ten_cities() -> None:
    s = load_settings()
    assert len(s.router.green_cities) == 10
    assert set(s.router.green_cities) == set(s.cities)
    assert s.cities["shenzhen"].endpoint.startswith("https://")


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cities:\n  wuhu:\n    rate_per_s: 7\n", encoding="utf-8")
    monkeypatch.setenv("GREENCHANNEL_BOOTSTRAP_SERVERS", "10.0.0.1:9092")
    monkeypatch.setenv("GREENCHANNEL_ROUTER__MAX_BATCH", "77")
    s = load_settings(cfg)
    assert s.cities["wuhu"].rate_per_s == 7
    assert s.kafka.bootstrap_servers == "10.0.0.1:9092"
    assert s.router.max_batch == 77


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("cities:\n  wuhu:\n    rate_per_s: -1\n", "cities.wuhu.rate_per_s"),
        ("cities:\n  wuhu:\n    colour: red\n", "cities.wuhu.colour"),
        ("kafka:\n  security_protocol: TELNET\n", "kafka.security_protocol"),
        ("cities:\n  wuhu:\n    endpoint: http://169.254.169.254/\n", "endpoint_allowlist"),
        ("router:\n  green_cities: [atlantis]\n", "atlantis"),
        ("cities:\n  wuhu:\n    retry: {budget_s: 900}\n", "cities.wuhu.retry.budget_s"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert key in str(info.value)


def test_dev_secret_refused_off_loopback(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "delivery:\n  endpoint_allowlist: ['12315.wuhu.gov.cn:443', '127.0.0.1:*']\n"
        "cities:\n  wuhu:\n    endpoint: https://12315.wuhu.gov.cn\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"cities\.wuhu\.credentials\.secret"):
        load_settings(cfg)


def test_secret_never_in_repr() -> None:
    s = load_settings()
    assert "dev-only-beijing-secret" not in repr(s)
    assert "dev-only-beijing-secret" not in str(s.model_dump())


def test_allowlist() -> None:
    allow = ["127.0.0.1:*", "bureau.example:443"]
    assert is_allowed("http://127.0.0.1:18101/x", allow)
    assert is_allowed("https://bureau.example/api", allow)
    assert not is_allowed("https://bureau.example:8443/api", allow)
    assert not is_allowed("http://10.0.0.1/", allow)
    assert not is_allowed("file:///etc/passwd", allow)


def test_escalation_id_is_stable_and_distinct() -> None:
    assert escalation_id("c-1", "wuhu") == escalation_id("c-1", "wuhu")
    assert escalation_id("c-1", "wuhu") != escalation_id("c-2", "wuhu")
    assert escalation_id("c-1", "wuhu") != escalation_id("c-1", "hefei")


def test_handling_deadline_skips_weekends() -> None:
    # Friday 2026-11-27 10:00 CST -> 10 working days later is Friday 2026-12-11 10:00 CST
    friday = int(datetime(2026, 11, 27, 2, 0, tzinfo=UTC).timestamp() * 1000)
    deadline = datetime.fromtimestamp(handling_deadline_ms(friday, 10) / 1000, tz=UTC)
    assert deadline == datetime(2026, 12, 11, 2, 0, tzinfo=UTC)


def test_handling_deadline_matches_a_walk_over_the_official_calendar() -> None:
    # chinese_calendar knows the State Council's arrangements up to 2026 (holidays off, make-up
    # working days on); later years are unknown to it and count Monday-Friday.
    cst = timezone(timedelta(hours=8))
    rnd = random.Random(5)
    starts = [rnd.randrange(1_600_000_000_000, 1_900_000_000_000) for _ in range(2000)]
    # the minutes around CST midnight, where the UTC and CST dates differ
    starts += [
        int(datetime(2026, 11, d, 23, 59, 59, 999000, tzinfo=cst).timestamp() * 1000)
        for d in range(20, 28)
    ]
    starts += [
        int(datetime(2026, 11, d, 0, 0, tzinfo=cst).timestamp() * 1000) for d in range(20, 28)
    ]
    for received in starts:
        for days in (1, 5, 7, 10, 15):
            local = datetime.fromtimestamp(received / 1000, tz=cst)
            remaining = days
            while remaining:
                local += timedelta(days=1)
                if local.year <= 2026:
                    remaining -= chinese_calendar.is_workday(local.date())
                else:
                    remaining -= local.weekday() < 5
            expected = received + round(
                (local - datetime.fromtimestamp(received / 1000, tz=cst)).total_seconds() * 1000
            )
            assert handling_deadline_ms(received, days) == expected, (received, days)


def test_masking() -> None:
    text = (
        "张三丰 电话13812345678 身份证11010119900307123X 邮箱zs@example.com 住北京市朝阳区建国路1号"
    )
    masked = mask_text(text, ["张三丰", "北京市朝阳区建国路1号"])
    for secret in ("张三丰", "13812345678", "11010119900307123X", "zs@example.com", "建国路1号"):
        assert secret not in masked
    assert "138****5678" in masked
    assert mask_name("李四") == "李*"


def test_json_logs_mask_personal_data() -> None:
    record = logging.makeLogRecord(
        {
            "msg": "call 13812345678 now",
            "levelno": 20,
            "levelname": "INFO",
            "city": "wuhu",
            "note": "id 11010119900307123X",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["city"] == "wuhu"
    assert "13812345678" not in line["message"] and "11010119900307123X" not in line["note"]


def test_topics_named_in_one_place() -> None:
    t = Topics("gc.")
    names = [spec.name for spec in t.all(["wuhu", "hefei"])]
    cases = 5 + 3 + 2  # case inbound, updates, cursors, state, dlq; results, receipts, dlq;
    # the results split by city (one per city)
    assert len(names) == len(set(names)) == 3 + 6 + 2 + 3 + 1 + cases
    assert {t.results_for("wuhu"), t.results_for("hefei")} <= set(names)
    store = next(spec for spec in t.all([]) if spec.name == t.schemas)
    assert store.configs == {"cleanup.policy": "compact", "retention.ms": "-1"}
    specs = {spec.name: spec for spec in t.all([])}
    assert specs[t.case_state].configs["cleanup.policy"] == "compact"
    assert specs[t.case_state].partitions == specs[t.case_updates].partitions
    assert t.city_of(t.escalations("wuhu")) == "wuhu"
    with pytest.raises(ValueError, match="not an escalation topic"):
        t.city_of(t.receipts)


def test_watchdog_fires_on_stuck_call() -> None:
    fired: list[StuckError] = []
    done = threading.Event()

    def on_stuck(error: StuckError) -> None:
        fired.append(error)
        done.set()

    dog = Watchdog(0.2, on_stuck=on_stuck, check_every_s=0.05).start()
    with dog.guard("commit_transaction"):
        assert done.wait(2.0)
    assert "commit_transaction" in str(fired[0])
    dog.stop()


def test_watchdog_quiet_for_fast_calls_and_tracks_heartbeats() -> None:
    now = [100.0]  # a fake clock: the checks run where the test says, on its time
    dog = Watchdog(0.5, on_stuck=pytest.fail, clock=lambda: now[0])
    for _ in range(5):
        with dog.guard("commit"):
            now[0] += 0.01
            assert dog.check() is None
    with dog.guard("commit"):
        now[0] += 0.5
        assert dog.check() is None  # at the deadline, not past it
        now[0] += 0.01
        assert "commit blocked for 0.5s" in str(dog.check())
    assert dog.check() is None  # the call returned
    dog.beat("router")
    now[0] += 0.2
    assert dog.heartbeat_ages() == {"router": pytest.approx(0.2)}
