"""Delivery: escalations to the city bureaus.

Owns the poll/pause/resume/commit engine (``engine``), per-city lanes that schedule workers
(``lane``), one city's attempt under its policies (``city``), record conversion (``convert``)
and the commit points (``offsets``). May import the foundations, ``gateway.kafka``,
``gateway.avro``, ``gateway.ops``, ``gateway.policies``, ``gateway.deadletters.headers``,
``gateway.http`` and ``gateway.sdk``; never ``gateway.routing``.
"""
