"""Avro: schemas, encoding and decoding.

Owns the codec (single-object and Confluent framing, ``codec``), the compiled readers
(``reader``), the schema compatibility rules (``schema_rules``), the schema registry client
(``registry``) and where the ``.avsc`` files are found (``schemas_path``). May import the
foundations (``gateway.config``, ``gateway.errors``, ``gateway.cities``) and fastavro; never
Kafka, delivery or routing.
"""
