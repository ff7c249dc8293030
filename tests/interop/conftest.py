"""Interop tier: the gateway against clients nobody here wrote.

kcat (librdkafka; Debian package ``kafkacat``), Kafka's own Java tools run from the broker's jars
(``kafka-consumer-groups``, the console consumer) and confluent-kafka's Schema Registry client,
``AvroSerializer`` and ``AvroDeserializer`` (the ``dev`` extra). A missing tool fails the test
with the line that installs it: these tests never skip.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import pytest

from gateway.dev.broker import BrokerSettings, LocalBroker
from tests.integration.conftest import bureaus, sim, tls_dir

__all__ = ["JavaTools", "bureaus", "java_tools", "kcat", "sim", "tls_dir"]

CONSUMER_GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"


@dataclass
class JavaTools:
    """Kafka's command-line tools, run from the cached broker classpath."""

    broker: LocalBroker
    bootstrap: str

    def run(self, main_class: str, *args: str, timeout_s: float = 120.0) -> str:
        return self.broker.run_tool(main_class, *args, timeout_s=timeout_s)

    def describe_group(self, group: str) -> list[dict[str, str]]:
        """``kafka-consumer-groups --describe --group GROUP`` rows (one per partition)."""
        out = self.run(
            CONSUMER_GROUPS, "--bootstrap-server", self.bootstrap, "--describe", "--group", group
        )
        return parse_table(out, group)


def parse_table(out: str, group: str) -> list[dict[str, str]]:
    lines = [line.split() for line in out.splitlines() if line.strip()]
    header = next((cols for cols in lines if cols[:2] == ["GROUP", "TOPIC"]), None)
    assert header is not None, f"no table in kafka-consumer-groups output:\n{out}"
    return [dict(zip(header, cols, strict=False)) for cols in lines if cols[0] == group]


@pytest.fixture(scope="session")
def java_tools(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> JavaTools:
    if shutil.which("java") is None:
        pytest.fail("java is missing: apt-get install openjdk-17-jre-headless")
    settings = BrokerSettings(data_dir=tmp_path_factory.mktemp("kafka-tools"))
    return JavaTools(LocalBroker(settings), kafka_bootstrap)


@pytest.fixture(scope="session")
def kcat() -> str:
    found = shutil.which("kcat") or shutil.which("kafkacat")
    if found is None:
        pytest.fail("kcat is missing: apt-get install kafkacat (Debian package)")
    version = subprocess.run([found, "-V"], capture_output=True, text=True, check=False)
    assert version.returncode == 0, version.stderr
    return found
