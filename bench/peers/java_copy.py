"""The Java copy (JavaCopy.java): compiled once per run with ``javac`` against the local broker's
jars (``LocalBroker.ensure_dist``, cached under ~/.cache/greenchannel/kafka), so it runs on
exactly the Kafka client the broker ships."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.peers import Job, Prepared, Unavailable
from gateway.dev.broker import BrokerError, BrokerSettings, LocalBroker

SOURCE = Path(__file__).with_name("JavaCopy.java")


def prepare(tmp: Path) -> Prepared:
    """Compile the class into ``tmp``."""
    javac, java = shutil.which("javac"), shutil.which("java")
    if javac is None or java is None:
        raise Unavailable("javac/java not on PATH (a JDK 17+, e.g. openjdk-17-jdk-headless)")
    try:
        libs = LocalBroker(BrokerSettings()).ensure_dist()
    except BrokerError as exc:
        raise Unavailable(f"no Kafka jars: {exc}") from exc
    classes = tmp / "java-classes"
    classpath = f"{classes}:{libs}/*"
    result = subprocess.run(
        [javac, "-d", str(classes), "-cp", f"{libs}/*", str(SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise Unavailable(f"javac failed: {result.stderr[-500:]}")

    def start(job: Job) -> subprocess.Popen[bytes]:
        command = [
            java,
            "-cp",
            classpath,
            "JavaCopy",
            job.bootstrap,
            job.source,
            job.sink,
            job.group,
        ]
        with (job.tmp / f"{job.group}.log").open("ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    clients = sorted(p.name for p in libs.glob("kafka-clients-*.jar"))
    version = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    runtime = version.stderr.splitlines()[0] if version.stderr else "java"
    return Prepared(start, f"{', '.join(clients)} on {runtime}")
