"""Dead letters: the ``gc-dlq-*`` header contract (``headers``) and, above it, the operator's
list / show / replay tool (``replay``).

``headers`` may import only the foundations; the router and the deliverer use it to write dead
letters. ``replay`` may import ``gateway.kafka``, ``gateway.avro`` and ``gateway.policies``.
"""
