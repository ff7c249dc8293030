"""Only the optional compiled parts (the key hash, the Avro reader); everything else is in
pyproject.toml.

``optional=True``: where there is no C compiler (or no Python headers) the build goes on
without them: ``gateway.kafka.partitioner`` hashes in Python and ``gateway.avro.reader`` reads
in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway.kafka._murmur2", ["gateway/kafka/_murmur2.c"], optional=True),
        Extension("gateway.avro._readvm", ["gateway/avro/_readvm.c"], optional=True),
    ]
)
