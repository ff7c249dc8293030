"""The demo's fault scenario: which simulated bureau is flaky (5xx, then an outage at a set time)
and which rejects cases, applied to the simulator as the run goes, and a short description of a
bureau's current knobs for the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.dev.bureau_city import Faults
    from gateway.dev.bureaus import BureauSimulator

FLAKY_KNOBS: dict[str, Any] = {"error_5xx_ratio": 0.3}
"""What ``--flaky CITY`` turns on for the whole run (the outage comes on top)."""
REJECT_RATIO = 0.1
"""Share of new cases ``--rejecting CITY`` refuses ("outside jurisdiction": a dead letter)."""


@dataclass
class FaultPlan:
    """The simulator's misbehaviour over the run: a flaky city, a strict one, one outage."""

    flaky: str | None
    rejecting: str | None
    outage_at_s: float
    outage_for_s: float
    stage: int = 0
    """0 before the outage, 1 during, 2 after."""

    def apply_baseline(self, sim: BureauSimulator) -> list[str]:
        notes = []
        if self.flaky:
            sim.city(self.flaky).set_faults(**FLAKY_KNOBS)
            note = f"{self.flaky} is flaky: {FLAKY_KNOBS['error_5xx_ratio']:.0%} 5xx"
            if self.outage_for_s > 0:
                end = self.outage_at_s + self.outage_for_s
                note += f", and refuses connections from {self.outage_at_s:g}s to {end:g}s"
            notes.append(note)
        if self.rejecting:
            sim.city(self.rejecting).set_faults(reject_ratio=REJECT_RATIO)
            notes.append(
                f"{self.rejecting} refuses {REJECT_RATIO:.0%} of new cases "
                "(outside jurisdiction): dead letters"
            )
        return notes

    def tick(self, sim: BureauSimulator, elapsed_s: float) -> list[str]:
        """Start or end the outage when it is time; returns what happened."""
        if not self.flaky or self.outage_for_s <= 0:
            return []
        stamp = f"{elapsed_s:4.0f}s"
        if self.stage == 0 and elapsed_s >= self.outage_at_s:
            self.stage = 1
            sim.city(self.flaky).set_faults(outage=True, outage_mode="refuse")
            return [f"{stamp}  {self.flaky}: outage begins (connection refused)"]
        if self.stage == 1 and elapsed_s >= self.outage_at_s + self.outage_for_s:
            self.stage = 2
            sim.city(self.flaky).set_faults(outage=False)
            return [f"{stamp}  {self.flaky}: back up (the breaker recovers at its next probe)"]
        return []


def describe_faults(faults: Faults) -> str:
    """A short description of a simulated bureau's knobs for the table."""
    parts = []
    if faults.outage:
        parts.append("OUTAGE")
    if faults.hang:
        parts.append("hanging")
    if faults.error_5xx_ratio:
        parts.append(f"5xx {faults.error_5xx_ratio:.0%}")
    if faults.reject_ratio:
        parts.append(f"rejects {faults.reject_ratio:.0%}")
    if faults.busy_ratio:
        parts.append(f"busy {faults.busy_ratio:.0%}")
    if faults.latency_ms and not parts:
        parts.append(f"+{faults.latency_ms:g} ms")
    return ", ".join(parts) or "ok"
