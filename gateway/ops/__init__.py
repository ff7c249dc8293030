"""Operations: what SREs see of a running process.

Owns every Prometheus metric (``metrics``, the one module that defines them, against an
injected registry), the observer events business code emits (``observer``), the ``/metrics``,
``/healthz`` and ``/readyz`` endpoint (``health``), liveness from progress (``liveness``: the
registry every loop reports progress to, read by ``/healthz``), structured logs (``logs``) and the watchdog
that turns a stuck blocking call into an exit (``watchdog``). May import the foundations and
prometheus-client; never the loops it observes.
"""
