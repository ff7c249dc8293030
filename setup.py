"""Only the optional compiled key hash; everything else is in pyproject.toml.

``optional=True``: where there is no C compiler (or no Python headers) the build goes on
without it and ``gateway.kafka.partitioner`` hashes in Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gateway.kafka._murmur2", ["gateway/kafka/_murmur2.c"], optional=True),
    ]
)
