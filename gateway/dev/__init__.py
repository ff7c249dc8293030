"""Development tools, apart from the runtime: the real-broker harness (``broker``), the bureau
simulator (``bureaus``, ``bureau_*``), the demo (``demo*``), the dev schema registry
(``registry``), sample complaints (``samples``, ``sample_data``), the connector conformance
kit (``conformance``) and the generated table of ``docs/configuration.md`` (``config_ranges``).

The runtime (``gateway`` outside this package) never imports it; the layer contract test
(``tests/unit/test_layers.py``) keeps it so. Some tools need the ``sim`` extra
(``pip install 'greenchannel[sim]'``); the CLI says so when it is missing.
"""
