"""``greenchannel dlq list | show | replay``: inspect dead letters and replay them (gateway/deadletters/replay.py).

Every command reads the whole dead-letter topic of a stage (``--stage escalations``, the
default, or ``complaints``) up to its end offsets at start. Output masks personal data;
``show --reveal`` is the only way to see it, and says so on stderr.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from gateway.avro.codec import Codec
from gateway.commands.common import settings_from
from gateway.config import Settings
from gateway.deadletters.headers import iso
from gateway.deadletters.replay import (
    DEFAULT_MAX_REPLAYS,
    STAGES,
    DeadLetter,
    Decision,
    Filter,
    ReplayReport,
    Stage,
    dlq_topic,
    known_pii,
    mask_record,
    masked_key,
    parse_when,
    plan,
    replay,
    scan,
)
from gateway.errors import DecodeError
from gateway.kafka.clients import Producer
from gateway.pii import mask_text
from gateway.topics import Topics

F = TypeVar("F", bound=Callable[..., Any])
_COLUMNS = ("DLQ", "TIME (UTC)", "STAGE", "CITY", "REASON", "STATUS", "ATTEMPTS", "REPLAYS", "KEY")


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """``--since`` / ``--until``: ISO 8601 (naive = UTC) or a relative age such as ``2h``."""
    if value is None:
        return None
    try:
        return parse_when(value, int(time.time() * 1000))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _common(func: F) -> F:
    options = [
        click.option(
            "--stage",
            type=click.Choice(STAGES),
            default="escalations",
            show_default=True,
            help="Which dead-letter topic: the deliverer's (escalations) or the router's.",
        ),
        click.option(
            "--timeout",
            "timeout_s",
            type=float,
            default=60.0,
            show_default=True,
            help="Seconds to read the dead-letter topic.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filters(func: F) -> F:
    options = [
        click.option("--city", "cities", multiple=True, help="Only this city (repeatable)."),
        click.option("--reason", "reasons", multiple=True, help="Only this reason (repeatable)."),
        click.option("--since", callback=_when, default=None, help="From (ISO 8601 or e.g. 2h)."),
        click.option(
            "--until", callback=_when, default=None, help="Before (ISO 8601 or e.g. 30m)."
        ),
        click.option("--source-topic", default=None, help="Only dead letters from this topic."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _filter(
    cities: tuple[str, ...],
    reasons: tuple[str, ...],
    since: int | None,
    until: int | None,
    source_topic: str | None,
) -> Filter:
    return Filter(frozenset(cities), frozenset(reasons), since, until, source_topic)


def _read(settings: Settings, stage: Stage, timeout_s: float) -> list[DeadLetter]:
    topic = dlq_topic(Topics(settings.topics.prefix), stage)
    return sorted(
        scan(settings.kafka, topic, timeout_s=timeout_s),
        key=lambda x: (x.time_ms, x.partition, x.offset),
    )


@click.group("dlq")
def dlq() -> None:
    """Dead letters: list, show and replay them to where they came from."""


# --- list ----------------------------------------------------------------------------------------


def _cells(letter: DeadLetter) -> tuple[str, ...]:
    status = "" if letter.http_status is None else str(letter.http_status)
    return (
        letter.position,
        iso(letter.time_ms, precision="s"),
        letter.stage,
        letter.city or "-",
        letter.reason,
        status or "-",
        str(letter.attempts),
        str(letter.replay_count),
        masked_key(letter.key),
    )


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@dlq.command("list")
@_common
@_filters
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the latest N.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_cmd(
    ctx: click.Context,
    stage: Stage,
    timeout_s: float,
    cities: tuple[str, ...],
    reasons: tuple[str, ...],
    since: int | None,
    until: int | None,
    source_topic: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List dead letters, oldest first.

    One row each: position in the dead-letter topic (PARTITION:OFFSET), time, stage, city,
    reason, last HTTP status, attempts, replay count and the key (personal data masked).
    """
    settings = settings_from(ctx)
    selected = _filter(cities, reasons, since, until, source_topic)
    letters = [x for x in _read(settings, stage, timeout_s) if selected.matches(x)]
    if limit is not None:
        letters = letters[-limit:]
    if as_json:
        for letter in letters:
            click.echo(json.dumps(letter.row(), ensure_ascii=False))
        return
    if letters:
        _table([_COLUMNS, *(_cells(x) for x in letters)])
    click.echo(
        f"{len(letters)} dead letter(s) in {dlq_topic(Topics(settings.topics.prefix), stage)}"
    )


# --- show ----------------------------------------------------------------------------------------


def _position(text: str) -> tuple[int | None, int]:
    part, sep, offset = text.partition(":")
    try:
        return (int(part), int(offset)) if sep else (None, int(part))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected OFFSET or PARTITION:OFFSET") from None


def _find(letters: list[DeadLetter], text: str) -> DeadLetter:
    partition, offset = _position(text)
    found = [x for x in letters if x.offset == offset and partition in (None, x.partition)]
    if not found:
        raise click.ClickException(f"no dead letter at {text}")
    if len(found) > 1:
        where = ", ".join(x.position for x in found)
        raise click.ClickException(f"offset {offset} is in several partitions ({where}): use P:O")
    return found[0]


@dlq.command("show")
@_common
@click.argument("position")
@click.option("--reveal", is_flag=True, help="Show personal data unmasked (logged on stderr).")
@click.pass_context
def show_cmd(
    ctx: click.Context, stage: Stage, timeout_s: float, position: str, reveal: bool
) -> None:
    """Show one dead letter: every header and the decoded record.

    POSITION is PARTITION:OFFSET (or OFFSET when only one partition has it). Personal data is
    masked unless --reveal.
    """
    settings = settings_from(ctx)
    letter = _find(_read(settings, stage, timeout_s), position)
    if reveal:
        click.echo(
            "warning: --reveal prints personal data (PIPL): do not copy it into tickets or chats",
            err=True,
        )
    record: dict[str, Any] | None = None
    kind, problem = "", ""
    try:
        decoded = Codec(settings.codec).decode(letter.value)
        record, kind = decoded.record, decoded.kind
    except DecodeError as exc:
        kind, problem = "undecodable", f"{exc.reason}: {exc}"
    known = known_pii(record or {})
    click.echo(f"dead letter {letter.topic} {letter.position} ({len(letter.value)} bytes)")
    click.echo(
        f"key: {_shown(letter.key.decode('utf-8', 'replace') if letter.key else '', reveal, known)}"
    )
    click.echo("headers:")
    for name, value in letter.headers:
        click.echo(f"  {name}: {_shown(value.decode('utf-8', 'replace'), reveal, known)}")
    if record is None:
        click.echo(f"value: cannot decode ({problem}); first bytes {letter.value[:16].hex()}")
        return
    shown = record if reveal else mask_record(record, known)
    note = "" if reveal else ", personal data masked"
    click.echo(f"record ({kind}{note}):")
    click.echo(json.dumps(shown, ensure_ascii=False, indent=2, default=str))


def _shown(text: str, reveal: bool, known: list[str | None]) -> str:
    return text if reveal else mask_text(text, known)


# --- replay --------------------------------------------------------------------------------------


def _progress(decision: Decision, status: str) -> None:
    letter = decision.letter
    count = letter.replay_count
    if decision.replay:
        where = f"-> {decision.target}  replay-count {count}->{count + 1}"
    else:
        where = f"({decision.skip})  replay-count {count}"
    click.echo(
        f"{status:<12} {letter.position:<9} {letter.city or '-':<10} {letter.reason:<16} "
        f"key {masked_key(letter.key)}  {where}"
    )


def _summary(report: ReplayReport) -> None:
    verb = "would replay" if report.dry_run else "replayed"
    click.echo(f"{verb} {sum(report.replayed.values())}")
    for (city, reason), n in sorted(report.replayed.items()):
        click.echo(f"  {city or '-':<12} {reason:<24} {n}")
    if report.skipped:
        parts = ", ".join(f"{why} {n}" for why, n in sorted(report.skipped.items()))
        click.echo(f"skipped {sum(report.skipped.values())}: {parts}")
    if report.failed:
        click.echo(f"failed {len(report.failed)}", err=True)


@dlq.command("replay")
@_common
@_filters
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; send nothing.")
@click.option(
    "--max-replays",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_REPLAYS,
    show_default=True,
    help="Loop guard: skip dead letters already replayed this many times.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def replay_cmd(
    ctx: click.Context,
    stage: Stage,
    timeout_s: float,
    cities: tuple[str, ...],
    reasons: tuple[str, ...],
    since: int | None,
    until: int | None,
    source_topic: str | None,
    dry_run: bool,
    max_replays: int,
    yes: bool,
) -> None:
    """Replay dead letters to the topic they came from.

    Republishes the original key, value and headers with gc-replay-count + 1, each city paced
    at its configured rate; skips records already replayed --max-replays times (loop guard)
    and earlier dead letters of a record that failed again. Exit status 1 if a send failed.
    """
    settings = settings_from(ctx)
    topics = Topics(settings.topics.prefix)
    decisions = plan(
        _read(settings, stage, timeout_s),
        _filter(cities, reasons, since, until, source_topic),
        stage=stage,
        topics=topics,
        cities=settings.cities.keys(),
        max_replays=max_replays,
    )
    wanted = sum(1 for d in decisions if d.replay)
    if wanted and not dry_run and not yes:
        click.confirm(
            f"Replay {wanted} dead letter(s) from {dlq_topic(topics, stage)}?", abort=True
        )
    limits = {c: (cs.rate_per_s, cs.burst) for c, cs in settings.cities.items()}
    producer = None if dry_run or not wanted else Producer(settings.kafka, linger_ms=0)
    try:
        report = replay(
            decisions,
            producer or _NoSender(),
            limits=limits,
            dry_run=dry_run,
            progress=_progress,
        )
    finally:
        if producer is not None:
            producer.close()
    _summary(report)
    if not report.ok:
        ctx.exit(1)


class _NoSender:
    """Stands in for the producer when nothing is to be sent."""

    def send_and_wait(self, topic: str, value: bytes, **_: Any) -> None:
        raise AssertionError("a dry run sends nothing")
