"""Delivery: escalations to the city bureaus.

Owns the poll/pause/resume/commit engine (``engine``), per-city lanes that only schedule
their records (per-key order, concurrency, pacing: ``lane``) on one shared pool of worker
threads (``workers``), the one component that turns a record's finished
attempt into its receipt or dead letter (``outcomes``), one city's attempt under its
policies (``city``), record conversion (``convert``), the commit points (``offsets``) and the
liveness Protocol it reports progress to (``liveness``). May import the foundations,
``gateway.kafka``, ``gateway.avro``, ``gateway.ops``, ``gateway.policies``,
``gateway.deadletters.headers``, ``gateway.http`` and ``gateway.sdk``; never
``gateway.routing``.
"""
