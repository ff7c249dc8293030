"""Green Channel, the runtime.

Foundations (import nothing else of the gateway): ``errors`` (the error taxonomy), ``config``
(typed settings), ``cities`` (the green-channel cities), ``topics`` (topic names and specs),
``pii`` (the masker), ``sdk`` (what a connector imports), ``httpd`` (the request handler of
the servers bureaus call; standard library only), ``varint`` (zig-zag varints, for Kafka
records and Avro alike). Above them, by role: ``kafka`` (the
only importer of kafka-python), ``avro``, ``ops``, ``policies``, ``deadletters``, ``http``
(bounded bureau calls), ``routing``, ``delivery``; then ``app`` (wires a process),
``supervisor`` (the member processes of one ``run``/``route``: configuration and ``ops`` only)
and the command line (``cli``, ``commands``). ``dev`` holds the development tools and is never
imported by the runtime. ``tests/unit/test_layers.py`` checks these rules.
"""
