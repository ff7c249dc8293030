"""Avro: schemas, encoding and decoding.

Owns the codec (single-object and Confluent framing, ``codec``), the compiled readers
(``reader``), the schema compatibility rules (``schema_rules``), the schema registry client and
subject naming strategies (``registry``), the schema store of upstream writer schemas
(``store``; fed by :mod:`gateway.kafka.follow`, wired in :mod:`gateway.app`) and where the
``.avsc`` files are found (``schemas_path``). May import the
foundations (``gateway.config``, ``gateway.errors``, ``gateway.cities``) and fastavro; never
Kafka, delivery or routing.
"""
