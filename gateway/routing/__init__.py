"""Routing: classify each complaint into the pyramid (``rules``), build escalations for the
green-channel cities (``escalation``) and run the transactional route loop (``router``).

May import the foundations, ``gateway.kafka``, ``gateway.avro``, ``gateway.ops`` and
``gateway.deadletters.headers``; never ``gateway.delivery``.
"""
