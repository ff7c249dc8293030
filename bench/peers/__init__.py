"""The peers bench/route.py measures the router against: what a user would pick instead.

Each peer module has ``prepare(tmp)``, which raises :class:`Unavailable` when its tool is
missing (the benchmark then says it skipped that contender, and why) and otherwise returns a
:class:`Prepared`: a function starting one run as its own process from a :class:`Job`, and
what it runs on (versions, for the report):

* ``java_copy``: Kafka's own Java client, a transactional copy (``JavaCopy.java``);
* ``confluent_pipe``: confluent-kafka (librdkafka), the same transactional copy;
* ``quix_route``: a Quix Streams exactly-once app doing the router's routing.

The copies read the input topic and write every record, unchanged, to ``Job.sink``; the Quix
app writes to the router's own output topics.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gateway.topics import Topics

REPO = Path(__file__).resolve().parent.parent.parent


class Unavailable(Exception):
    """A contender's tool is missing here; the message says which and how to get it."""


@dataclass(frozen=True)
class Job:
    """One run of one contender: where it reads and writes, its consumer group, its scratch."""

    bootstrap: str
    topics: Topics
    sink: str
    group: str
    tmp: Path

    @property
    def source(self) -> str:
        return self.topics.complaints


class Prepared(NamedTuple):
    start: Callable[[Job], subprocess.Popen[bytes]]
    version: str
    """What it runs on, e.g. ``confluent-kafka 2.16.1, librdkafka 2.16.1``."""


def python_module(
    job: Job, module: str, args: list[str], python: str = sys.executable
) -> subprocess.Popen[bytes]:
    """``python -m module args`` from the repository, its output to ``<tmp>/<group>.log``."""
    with (job.tmp / f"{job.group}.log").open("ab") as log:
        return subprocess.Popen(
            [python, "-m", module, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
