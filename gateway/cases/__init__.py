"""Case lifecycle: the official working-day calendar, deadline rules, and (later) the case
state machine and the process that keeps each case's state.

Owns: ``calendar`` (working days per the State Council's holiday arrangements, make-up working
days included, from ``chinese_calendar`` plus a documented override file), ``deadlines`` (which
limit applies from which date, as configuration).

May import: the foundations (``gateway.errors``, ``gateway.config``, ``gateway.cities``,
``gateway.topics``, ``gateway.pii``, ``gateway.sdk``), ``gateway.kafka``, ``gateway.avro``,
``gateway.ops``, ``gateway.policies``, ``gateway.deadletters``. Never ``gateway.routing``,
``gateway.delivery``, ``gateway.dev`` or ``gateway.commands``: the router imports the calendar
from here, not the other way round. ``calendar`` and ``deadlines`` import only the standard
library, PyYAML and ``chinese_calendar`` (they sit in the router's hot path).
"""
