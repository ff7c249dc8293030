"""Only the optional compiled parts (the key hash, the Avro reader, Kafka record batches);
everything else is in pyproject.toml.

``optional=True``: where there is no C compiler (or no Python headers) the build goes on
without them: ``gateway.kafka.partitioner`` hashes, ``gateway.avro.reader`` reads and
``gateway.kafka.unpack`` / ``gateway.kafka.append`` decode and encode records in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway.kafka._murmur2", ["gateway/kafka/_murmur2.c"], optional=True),
        Extension("gateway.avro._readvm", ["gateway/avro/_readvm.c"], optional=True),
        Extension("gateway.kafka._records", ["gateway/kafka/_records.c"], optional=True),
    ]
)
