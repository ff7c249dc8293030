"""The Kafka adapter: the only package that imports kafka-python.

Owns the typed client wrappers (``clients``: consumer, transactional producer), the consumed
record types (``records``), the one-pass unpacking of fetched batches (``unpack``),
topic administration (``admin``), the workarounds for kafka-python 3.0.x (``compat``), the
Java-compatible key partitioner (``partitioner``), the fast batch append into kafka-python's
record accumulator (``append``), the one-pass read of many partitions' positions
(``positions``) and a follower of compacted topics (``follow``: the schema
store). May import: ``gateway.config``, ``gateway.errors``,
``gateway.topics`` and the standard library. Everything above sees only the types defined here.
"""
