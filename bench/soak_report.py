"""The soak's figures as a Markdown section (printed, and written to docs/benchmarks.md)."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.soak import Soak
    from bench.soak_ledger import Verdict

HOW = """\
How: a real broker, the bureau simulator and the gateway (`greenchannel route` and
`greenchannel deliver`, or `greenchannel run` with `--mode run`), restarted by the soak as a
supervisor would, a second after each exit;
a publisher at a steady rate (15 % major complaints, 85 % of them for the ten green-channel
cities; general complaints; consultations and other call-center requests) and poison records;
faults drawn from the seed (every kind once, then at random). After the faults a drain, then
the ledger (its own read_committed consumer, its own Avro decoding, the simulator's case list)
checks: every acknowledged complaint routed exactly once or dead-lettered; every major
green-channel complaint escalated exactly once; every escalation receipted or dead-lettered;
one bureau case per escalation id, matching its receipts, none without a receipt; the router's
and the deliverer's groups with no unprocessed record behind their committed offsets. Repeated
receipts with the same case number are at-least-once delivery (the bureau answered
"duplicate"), counted but not a failure. Reproduce with the command in the heading
(`make soak SOAK_MINUTES=30`; needs root and nftables for the network cut)."""


def report(
    soak: Soak,
    verdict: Verdict,
    args: argparse.Namespace,
    took_s: float,
    errors: dict[str, Counter[str]],
) -> str:
    f = verdict.figures
    exits = {n: dict(p.exits) for n, p in soak.procs.items()}
    starts = {n: p.starts for n, p in soak.procs.items()}
    excluded = f"; excluded by --without: {sorted(args.without)}" if args.without else ""
    rows = [
        ("published (acknowledged)", f"{f['published_total']:,} {f['published']}"),
        ("sent / not acknowledged (failed or abandoned)",
         f"{soak.publisher.sent:,} / {f['publish_failed']} {dict(soak.publisher.send_errors)}, "
         f"abandoned {soak.publisher.abandoned}"),
        ("routed exactly once", f"{f['routed']:,}"),
        ("routed by topic", str(f["routed_by_topic"])),
        ("dead-lettered complaints, by reason", f"{f['dead_lettered']} {f['dead_lettered_by_reason']}"),
        ("escalations expected / seen", f"{f['escalations_expected']:,} / {f['escalations']:,}"),
        ("receipted", f"{f['receipted']:,} (receipts accepted {f['receipts_accepted']:,}, "
                      f"rejected {f['receipts_rejected']})"),
        ("receipts repeated (same case, at-least-once)", str(f["receipts_repeated"])),
        ("escalations dead-lettered, by reason",
         f"{f['escalations_dead_lettered_only']} {f['escalations_dead_lettered_by_reason']}"),
        ("bureau cases", f"{f['bureau_cases']:,}"),
        ("**lost**", f"**{f['lost_total']}**"),
        ("**duplicated**", f"**{f['duplicated_total']}**"),
        ("**stuck** (unprocessed records behind a group after the drain)",
         f"**{f['stuck_total']}** {f['stuck'] or ''}"),
        ("lag of records invisible to read_committed (not stuck)", str(f["lag_control_records_only"] or 0)),
        ("unexpected outputs", str(f["unexpected_total"])),
        ("faults injected", f"{sum(soak.injected.values())} {dict(sorted(soak.injected.items()))}"),
        ("**faults NOT injected**", f"{soak.not_injected or 'none'}{excluded}"),
        ("gateway starts / exits by code", f"{starts} / {exits}"),
    ]  # fmt: skip
    table = "| figure | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    status = "PASS" if verdict.ok and not f["stuck_total"] else "FAIL"
    problems = "".join(
        f"- {kind}: {len(keys)} (e.g. {', '.join(keys[:4])})\n"
        for kind, keys in sorted(verdict.problems.items())
    )
    findings = "".join(f"- {x}\n" for x in soak.findings)
    logs = "".join(
        f"- {name}: "
        + "; ".join(f"{n} x `{line[:160]}`" for line, n in lines.most_common(4))
        + "\n"
        for name, lines in errors.items()
    )
    cmd = (
        f"python -m bench.soak --minutes {args.minutes:g} --seed {args.seed} "
        f"--rate {args.rate:g} --mode {args.mode}"
    )
    if args.without:
        cmd += f" --without {','.join(sorted(args.without))}"
    return (
        f"### Chaos soak (`{cmd}`): **{status}**\n\n"
        f"{args.minutes:g} min of faults at {args.rate:g} complaints/s, then a drain of up to "
        f"{args.drain:.0f} s ({took_s / 60:.1f} min in all, set-up included).\n\n"
        f"{table}\n\n"
        + (f"Problems:\n\n{problems}\n" if problems else "")
        + (f"Findings:\n\n{findings}\n" if findings else "")
        + (f"Gateway error log lines (most frequent):\n\n{logs}\n" if logs else "")
        + HOW
        + "\n"
    )
