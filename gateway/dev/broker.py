"""A real single-node Apache Kafka (KRaft, combined mode) for development and tests.

No Docker: Apache publishes the broker to Maven Central, so :meth:`LocalBroker.ensure_dist`
assembles its classpath once with Maven (``gateway/dev/kafka/pom.xml``) into
``<cache_dir>/<version>/libs``. Maven writes into a temporary directory that is renamed into
place, so an interrupted download never counts. :meth:`LocalBroker.start` then writes
``server.properties``, formats the KRaft storage once (``meta.properties`` marks a formatted
directory), launches ``java … kafka.Kafka`` detached in its own session (output to
``<data_dir>/broker.log``, pid in ``<data_dir>/broker.pid``) and waits until a client can
bootstrap. Data survives restarts unless ``wipe=True``.

The same object drives fault injection in tests: :meth:`~LocalBroker.kill` (SIGKILL),
:meth:`~LocalBroker.freeze` / :meth:`~LocalBroker.thaw` (SIGSTOP / SIGCONT) and
:meth:`~LocalBroker.restart`.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from gateway.config import ENV_PREFIX, EnvOverFile, KafkaSettings
from gateway.errors import ConfigError, FatalError, GreenChannelError
from gateway.kafka.admin import Admin

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
STATE_FILE = "greenchannel-broker.json"
SERVER_JVM = "-XX:+UseG1GC -XX:MaxGCPauseMillis=20"
"""JVM options of a broker that serves load (the default): G1 and the optimising JIT."""
LEAN_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""JVM options of a short-lived or lightly loaded JVM (the test brokers, the soak's broker,
Kafka's command-line tools): the quick JIT only and the serial collector. Measured on 2 cores,
a broker's CPU to start fell from 4.4 s to 2.3 s, to create and delete the gateway's 152
partitions three times from 5.2 s to 2.1 s, and idle from ~0.2 to ~0.1 of a core; its peak
throughput is lower, so benchmarks keep :data:`SERVER_JVM`."""
SCRAM_MECHANISM = "SCRAM-SHA-512"
_START_MARKER = "=== greenchannel: broker starting"


class BrokerSettings(EnvOverFile):
    """The development broker (``greenchannel broker``, the demo, the tests).

    A development tool's settings, not the gateway's: the ``broker:`` section of the config file
    (which :func:`gateway.config.load_settings` leaves aside) and ``GREENCHANNEL_BROKER__*``
    variables (``GREENCHANNEL_BROKER__PORT=29092``), read by :func:`load_broker_settings`.
    """

    model_config = SettingsConfigDict(
        env_prefix=f"{ENV_PREFIX}BROKER__", extra="forbid", frozen=True
    )

    kafka_version: str = "4.1.1"
    port: int = Field(19092, ge=1, le=65_535)
    controller_port: int = Field(19093, ge=1, le=65_535)
    data_dir: Path = Path("var/kafka")
    cache_dir: Path = Path.home() / ".cache" / "greenchannel" / "kafka"
    heap: str = "-Xms256m -Xmx768m"
    jvm: str = SERVER_JVM
    """JVM options besides the heap (:data:`SERVER_JVM`, or :data:`LEAN_JVM` for tests)."""
    start_timeout_s: float = Field(90.0, gt=0, le=3600)
    sasl_ssl_port: int | None = Field(None, ge=1, le=65_535)
    """Also listen with SASL_SSL here: TLS with a generated development CA (``<data_dir>/tls``)
    and SCRAM-SHA-512 for the user below, created when the storage is formatted."""
    scram_username: str = "gateway"
    scram_password: SecretStr = SecretStr("dev-only-kafka-scram")


def load_broker_settings(path: Path | str | None = None) -> BrokerSettings:
    """The ``broker:`` section of the config file (``path`` or ``GREENCHANNEL_CONFIG``), under
    ``GREENCHANNEL_BROKER__*`` variables, over the defaults; ConfigError naming the bad key."""
    path = path or os.environ.get(f"{ENV_PREFIX}CONFIG")
    section: object = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the broker section of {path}: {exc}") from exc
        section = loaded.get("broker") or {} if isinstance(loaded, dict) else {}
    if not isinstance(section, dict):
        raise ConfigError(f"broker: must be a mapping in {path}")
    try:
        return BrokerSettings(**section)
    except ValidationError as exc:
        problems = "; ".join(
            f"broker.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid broker settings: {problems}") from exc


class BrokerError(FatalError):
    """The local broker could not be assembled, formatted, started or stopped."""

    reason = "broker"


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What ``greenchannel broker status`` shows."""

    running: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path


def free_ports(count: int = 2) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (held open together, then freed)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_block(count: int, rng: random.Random | None = None) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1, below the kernel's ephemeral
    range, for a process that derives ports from a base (``route --processes N`` puts member
    ``i`` on ``base + 1 + i``).

    ``free_ports`` hands out ephemeral ports, and a neighbour of one is any outgoing
    connection's to take between the check and the listen; below the range only another
    listener can, and the block starts at random so parallel test workers do not meet.
    """
    low = _ephemeral_low()
    pick = rng or random.Random()
    for _ in range(200):
        base = pick.randrange(10_000, low - count)
        if not any(port_in_use(base + i) for i in range(count)):
            return base
    raise FatalError(f"no {count} consecutive free ports on 127.0.0.1 below {low}")


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return max(low, 12_000)


def port_in_use(port: int) -> bool:
    """True when 127.0.0.1:port cannot be bound (SO_REUSEADDR, as the JVM does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def server_properties(
    settings: BrokerSettings, data_dir: Path, keystore: tuple[str, str] | None = None
) -> str:
    """``server.properties`` of a one-node combined broker+controller on loopback.

    With ``settings.sasl_ssl_port`` a SASL_SSL listener is added; ``keystore`` is the broker's
    (certificate chain PEM, unencrypted PKCS#8 key PEM), inlined as a PEM key store.
    """
    port, cport = settings.port, settings.controller_port
    listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if settings.sasl_ssl_port is not None:
        listeners += f",SASL_SSL://127.0.0.1:{settings.sasl_ssl_port}"
        protocols += ",SASL_SSL:SASL_SSL"
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": protocols,
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
    }
    if settings.sasl_ssl_port is not None:
        if keystore is None:
            raise BrokerError("a SASL_SSL listener needs the broker's certificate and key")
        lines |= _sasl_ssl_properties(*keystore)
    header = "# Written by greenchannel (gateway/dev/broker.py) on every start; edits are lost.\n"
    return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def _sasl_ssl_properties(chain_pem: str, key_pem: str) -> dict[str, str]:
    """SCRAM-SHA-512 over TLS on the SASL_SSL listener (no client certificates)."""
    prefix = "listener.name.sasl_ssl."
    return {
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"{prefix}sasl.enabled.mechanisms": SCRAM_MECHANISM,
        f"{prefix}scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        f"{prefix}ssl.keystore.type": "PEM",
        f"{prefix}ssl.keystore.certificate.chain": _escape(chain_pem),
        f"{prefix}ssl.keystore.key": _escape(key_pem),
        f"{prefix}ssl.client.auth": "none",
    }


def _escape(pem: str) -> str:
    """A multi-line PEM as one ``.properties`` value (``\\n`` escapes)."""
    return pem.strip().replace("\n", "\\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (so two processes never assemble the same dist at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("java not found: install a JRE 17+ (e.g. openjdk-17-jre-headless)")
    return java


class LocalBroker:
    """One local Kafka broker process described by :class:`BrokerSettings`."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.expanduser().resolve()
        self.dist_dir = settings.cache_dir.expanduser().resolve() / settings.kafka_version
        self._proc: subprocess.Popen[bytes] | None = None

    # --- paths and addresses ------------------------------------------------------------------

    @property
    def libs_dir(self) -> Path:
        return self.dist_dir / "libs"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        """``host:port`` clients bootstrap from."""
        return f"127.0.0.1:{self.settings.port}"

    def kafka_settings(self) -> KafkaSettings:
        """Client settings pointing at this broker."""
        return KafkaSettings(bootstrap_servers=self.bootstrap)

    @property
    def tls_dir(self) -> Path:
        """The development CA (``ca.pem``) and the broker's certificate for SASL_SSL."""
        return self.data_dir / "tls"

    def sasl_ssl_settings(self) -> KafkaSettings:
        """Client settings for the SASL_SSL listener (SCRAM user, CA-verified TLS)."""
        s = self.settings
        if s.sasl_ssl_port is None:
            raise BrokerError("this broker has no SASL_SSL listener (broker.sasl_ssl_port)")
        return KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{s.sasl_ssl_port}",
            security_protocol="SASL_SSL",
            sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=s.scram_username,
            sasl_password=s.scram_password,
            ssl_cafile=self.tls_dir / "ca.pem",
        )

    def _keystore(self) -> tuple[str, str] | None:
        """(certificate chain, key) PEMs of the broker, created with the CA on first use."""
        if self.settings.sasl_ssl_port is None:
            return None
        from gateway.dev.bureau_tls import ensure_tls  # needs the `sim` extra (cryptography)

        files = ensure_tls(self.tls_dir, client_cn=self.settings.scram_username)
        chain = files.server_cert.read_text(encoding="ascii") + files.ca.read_text("ascii")
        return chain, files.server_key.read_text(encoding="ascii")

    # --- distribution -------------------------------------------------------------------------

    def ensure_dist(self) -> Path:
        """Assemble the broker classpath from Maven Central once; returns the libs directory."""
        if self._dist_complete():
            return self.libs_dir
        with _locked(self.dist_dir / ".lock"):
            if not self._dist_complete():
                self._fetch_dist()
        return self.libs_dir

    def _dist_complete(self) -> bool:
        jar = f"kafka_2.13-{self.settings.kafka_version}.jar"
        return (self.libs_dir / jar).is_file()

    def _fetch_dist(self) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found: install Maven to assemble the local Kafka broker")
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.dist_dir))
        try:
            pom = staging / "pom.xml"
            pom.write_bytes(resources.files("gateway.dev").joinpath("kafka/pom.xml").read_bytes())
            command = [
                mvn, "-q", "-B", "-f", str(pom), f"-Dkafka.version={self.settings.kafka_version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={staging / 'libs'}",
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr)[-3000:]
                raise BrokerError(
                    f"maven could not assemble Kafka {self.settings.kafka_version}:\n{tail}"
                )
            (staging / "libs").rename(self.libs_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- java processes ------------------------------------------------------------------------

    def _java_command(
        self, main_class: str, *args: str, heap: str | None = None, jvm: str | None = None
    ) -> list[str]:
        log4j = self.data_dir / "log4j2.properties"
        return [
            _java(), *(heap or self.settings.heap).split(), *(jvm or self.settings.jvm).split(),
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs_dir}/*", main_class, *args,
        ]  # fmt: skip

    def run_tool(self, main_class: str, *args: str, timeout_s: float = 600.0) -> str:
        """Run a Kafka command-line tool class on the broker's classpath; returns its stdout."""
        self.ensure_dist()
        self._write_log4j()
        command = self._java_command(main_class, *args, heap="-Xms128m -Xmx512m", jvm=LEAN_JVM)
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if result.returncode != 0:
            raise BrokerError(
                f"{main_class} failed ({result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def _write_log4j(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = resources.files("gateway.dev").joinpath("kafka/log4j2.properties").read_bytes()
        (self.data_dir / "log4j2.properties").write_bytes(config)

    # --- storage ------------------------------------------------------------------------------

    def _state(self) -> dict[str, object]:
        path = self.data_dir / STATE_FILE
        if not path.exists():
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}

    def _format_storage(self) -> None:
        """Format the KRaft log dir once; refuse to reuse it with another controller port."""
        s = self.settings
        if (self.data_dir / "logs" / "meta.properties").exists():
            state = self._state()
            formatted_port = state.get("controller_port")
            if formatted_port not in (None, s.controller_port):
                raise BrokerError(
                    f"{self.data_dir} was formatted for controller port {formatted_port}, not "
                    f"{s.controller_port}: use the same ports or start with --wipe"
                )
            if s.sasl_ssl_port is not None and state.get("scram_user") != s.scram_username:
                raise BrokerError(
                    f"{self.data_dir} was formatted without SCRAM user {s.scram_username!r}: "
                    "start with --wipe to add it"
                )
            return
        cluster_id = self.run_tool(STORAGE_TOOL, "random-uuid").strip().splitlines()[-1]
        scram: list[str] = []
        if s.sasl_ssl_port is not None:
            user = f"name={s.scram_username},password={s.scram_password.get_secret_value()}"
            scram = ["--add-scram", f"{SCRAM_MECHANISM}=[{user}]"]
        self.run_tool(
            STORAGE_TOOL, "format", "--standalone", "-t", cluster_id,
            "-c", str(self.properties_file), *scram,
        )  # fmt: skip
        state = {"cluster_id": cluster_id, "controller_port": s.controller_port}
        if scram:
            state["scram_user"] = s.scram_username
        (self.data_dir / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    def wipe(self) -> None:
        """Delete every file of this broker (it must be stopped)."""
        if self.pid is not None:
            raise BrokerError(f"broker is running (pid {self.pid}): stop it before wiping")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the running broker started from this data dir, or None."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid  # our child (its cmdline may not show java yet)
            self._proc = None
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_broker(pid) else None

    def _is_our_broker(self, pid: int) -> bool:
        """The pid is alive (not a zombie) and runs kafka.Kafka on our properties file."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[0]
        wanted = [MAIN_CLASS.encode(), str(self.properties_file).encode()]
        return state not in ("Z", "X") and all(w in cmdline for w in wanted)

    def is_running(self) -> bool:
        return self.pid is not None

    def status(self) -> BrokerStatus:
        pid = self.pid
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.data_dir, self.log_file)

    def start(self, *, wipe: bool = False) -> str:
        """Start (or find running) the broker and wait until clients can bootstrap."""
        if wipe:
            self.stop()
            self.wipe()
        if self.pid is None:
            self._launch()
        self.wait_ready(self.settings.start_timeout_s)
        return self.bootstrap

    def _launch(self) -> None:
        ports = (self.settings.port, self.settings.controller_port, self.settings.sasl_ssl_port)
        for port in [p for p in ports if p is not None]:
            if port_in_use(port):
                raise BrokerError(f"port {port} is already in use: pick other ports (--port)")
        self.ensure_dist()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_log4j()
        self.properties_file.write_text(
            server_properties(self.settings, self.data_dir, self._keystore()), encoding="utf-8"
        )
        self.properties_file.chmod(0o600)  # holds the broker's TLS key when SASL_SSL is on
        self._format_storage()
        with self.log_file.open("ab") as log:
            log.write(f"\n{_START_MARKER} at {time.strftime('%Y-%m-%dT%H:%M:%S')} ===\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._java_command(MAIN_CLASS, str(self.properties_file)),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.data_dir, start_new_session=True,
            )  # fmt: skip
        temp = self.pid_file.with_suffix(".tmp")
        temp.write_text(f"{self._proc.pid}\n", encoding="ascii")
        temp.replace(self.pid_file)

    def wait_ready(self, timeout_s: float) -> None:
        """Poll until a KafkaAdminClient bootstraps; BrokerError with the log tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.pid is None:
                raise BrokerError(f"the broker exited during start-up:\n{self.log_tail()}")
            remaining = deadline - time.monotonic()
            try:
                with Admin(self.kafka_settings()) as admin:
                    admin.wait_ready(max(0.5, min(5.0, remaining)))
                return
            except GreenChannelError as exc:
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"broker not ready after {timeout_s:.0f} s ({exc}):\n{self.log_tail()}"
                    ) from exc

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the broker printed since its latest start."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no broker log)"
        text = text.rpartition(_START_MARKER)[2]
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> int | None:
        pid = self.pid
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        return pid

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                with suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.1)
            if not self._is_our_broker(pid):
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout_s: float = 60.0) -> bool:
        """SIGTERM, wait up to timeout_s, then SIGKILL. False when it was not running."""
        pid = self._signal(signal.SIGTERM)
        if pid is None:
            return False
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a frozen broker handles SIGTERM only once thawed
        if not self._wait_exit(pid, timeout_s):
            self.kill()
        self._forget()
        return True

    def kill(self) -> None:
        """SIGKILL the broker (a crash: no clean shutdown) and wait until it is gone."""
        pid = self._signal(signal.SIGKILL)
        if pid is not None and not self._wait_exit(pid, 30.0):
            raise BrokerError(f"broker pid {pid} survived SIGKILL")
        self._forget()

    def _forget(self) -> None:
        if self._proc is not None:  # reap our child, or Popen.__del__ warns it "still running"
            with suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5.0)
        self._proc = None
        self.pid_file.unlink(missing_ok=True)

    def freeze(self) -> None:
        """SIGSTOP: the broker hangs with its sockets open (clients see timeouts, not resets)."""
        if self._signal(signal.SIGSTOP) is None:
            raise BrokerError("broker is not running")

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self._signal(signal.SIGCONT) is None:
            raise BrokerError("broker is not running")

    def restart(self) -> str:
        """Clean stop then start on the same data; returns the bootstrap address."""
        self.stop()
        return self.start()
