"""One bureau call against the hostile bureau: peak RSS and wall time (issue 9, findings 4, 5).

    python -m bench.http_bounds huge             # a 50 MB answer with Content-Length
    python -m bench.http_bounds huge-undeclared  # a 50 MB answer read until the bureau closes
    python -m bench.http_bounds trickle          # 300 bytes, one every 100 ms (30 s)

City settings are the defaults (``timeout_s`` 5 s; where the code has them, ``deadline_s``
15 s and ``max_answer_bytes`` 1 MiB), so the same command measures older code too.
"""

from __future__ import annotations

import resource
import sys
import time

from gateway.config import CitySettings
from gateway.http import HttpTransport
from gateway.sdk import BureauRequest
from tests.hostile import answers_kit as kit


def main(mode: str) -> None:
    bureau = kit.HostileBureau().start()
    path = kit.PROFILES["beijing"].path
    settings = CitySettings.model_validate({"endpoint": bureau.endpoint, "timeout_s": 5.0})
    transport = HttpTransport("beijing", settings, ["127.0.0.1:*"])
    transport.send(BureauRequest("POST", path, {"X-Idempotency-Key": "warm-up"}, b"{}"))
    behaviours = {
        "huge": kit.huge_body(50 << 20),
        "huge-undeclared": kit.huge_body(50 << 20, declare=False),
        "trickle": kit.trickle_body(0.1, length=300),
    }
    bureau.script("k", behaviours[mode])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.monotonic()
    try:
        answer = transport.send(BureauRequest("POST", path, {"X-Idempotency-Key": "k"}, b"{}"))
        result = f"answer of {len(answer.body)} bytes"
    except Exception as exc:
        result = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{mode}: {result[:100]}; {elapsed:.1f} s; "
        f"peak RSS {before:.0f} -> {after:.0f} MiB (+{after - before:.0f})"
    )
    transport.close()
    bureau.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "huge")
