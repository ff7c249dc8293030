"""Case lifecycle: the official working-day calendar, deadline rules, the case state machine,
the processes that keep each case's state, take the bureaus' updates in and report results.

Owns: ``calendar`` (working days per the State Council's holiday arrangements, make-up working
days included, from ``chinese_calendar`` plus a documented override file), ``deadlines`` (which
limit applies from which date, as configuration), ``machine`` (the allowed transitions),
``updates`` (CaseUpdate records), ``intake`` / ``keeper`` (escalations and receipts into case
updates; updates into states, exactly once), ``receiver`` / ``poller`` (case updates from the
bureaus), ``results`` (handling results to the bureaus), ``loop`` (the transactional loop).

May import: the foundations (``gateway.errors``, ``gateway.config``, ``gateway.cities``,
``gateway.topics``, ``gateway.pii``, ``gateway.sdk``), ``gateway.kafka``, ``gateway.avro``,
``gateway.ops``, ``gateway.policies``, ``gateway.deadletters``. Never ``gateway.routing``,
``gateway.delivery``, ``gateway.dev`` or ``gateway.commands``: the router imports the calendar
from here, not the other way round. One exception: ``results`` (handling results out) reuses
the delivery engine's ``gateway.delivery.city.CityDelivery``. ``calendar`` and ``deadlines`` import only the standard
library, PyYAML and ``chinese_calendar`` (they sit in the router's hot path).
"""
