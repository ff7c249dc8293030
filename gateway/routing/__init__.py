"""Routing: classify each complaint into the pyramid (``rules``), build escalations for the
green-channel cities (``escalation``), know what the broker will refuse (``limits``: the output
topics' ``max.message.bytes``, record sizes) and run the transactional route loop (``router``).

May import the foundations, ``gateway.kafka``, ``gateway.avro``, ``gateway.ops`` and
``gateway.deadletters.headers``; never ``gateway.delivery``.
"""
