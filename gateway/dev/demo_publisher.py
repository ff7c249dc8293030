"""The demo's sample publisher: complaints at a steady rate on a thread, with a few undecodable
records among them so the router's dead-letter topic is used too."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from gateway.config import Settings
from gateway.dev.demo_options import Options
from gateway.errors import GreenChannelError
from gateway.topics import Topics

if TYPE_CHECKING:
    from gateway.avro.codec import Codec
    from gateway.kafka.clients import Producer

log = logging.getLogger("gateway.dev.demo")

JUNK = b"\x00demo: not an Avro complaint"


class Publisher:
    """Sample complaints at a steady rate, on a thread, until stopped or ``count`` are sent."""

    def __init__(self, settings: Settings, options: Options) -> None:
        from gateway.dev.samples import Pacer, SampleFactory, utc_now_ms
        from gateway.kafka.clients import Producer

        self.topic = Topics(settings.topics.prefix).complaints
        self.count = options.count
        self.junk_every = round(1 / options.junk_share) if options.junk_share > 0 else 0
        seed = options.seed if options.seed is not None else int(time.time()) % 10_000
        self.factory = SampleFactory(
            seed,
            major_share=options.major_share,
            start_ms=utc_now_ms(),
            interval_ms=max(1, round(1000 / options.rate)),
        )
        self.pacer = Pacer(options.rate)
        self.sent = self.majors = self.junk = 0
        self.error: str | None = None
        self.done = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        from gateway.avro.codec import Codec

        self.codec: Codec = Codec(settings.codec)
        self.producer: Producer = Producer(settings.kafka, linger_ms=20)
        self._thread = threading.Thread(target=self._run, name="demo-publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _more(self) -> bool:
        return not self._stop.is_set() and (self.count is None or self.sent < self.count)

    def _run(self) -> None:
        from gateway.dev.samples import MAJOR_HEADER

        futures: list[Any] = []
        try:
            while self._more():
                self.pacer.wait()
                if self.junk_every and (self.sent + 1) % self.junk_every == 0:
                    key = f"junk-{self.junk}".encode()
                    futures.append(self.producer.send(self.topic, JUNK, key=key))
                    self.junk += 1
                else:
                    sample = self.factory.next()
                    value = self.codec.encode("complaint", sample.record, self.topic)
                    futures.append(
                        self.producer.send(
                            self.topic,
                            value,
                            key=sample.record["complaint_id"].encode(),
                            headers=[(MAJOR_HEADER, b"1" if sample.major else b"0")],
                        )
                    )
                    self.majors += sample.major
                self.sent += 1
                if len(futures) >= 200:
                    self._settle(futures)
            self._settle(futures)
        except GreenChannelError as exc:
            self.error = str(exc)
            log.error("publisher stopped: %s", exc)
        finally:
            self.done.set()

    def _settle(self, futures: list[Any]) -> None:
        self.producer.flush(30.0)
        failed = [f for f in futures if f.failed()]
        futures.clear()
        if failed:
            raise GreenChannelError(f"{len(failed)} sends failed, first: {failed[0].exception!r}")

    def stop(self) -> None:
        """Stop sending and close the producer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(15.0)
        with suppress(GreenChannelError):
            self.producer.close(5.0)
        self.codec.close()
