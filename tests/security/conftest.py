"""Fixtures of the security tier: the bureau simulator on ephemeral ports, real TLS (the
integration tier's ``tls_dir`` and ``bureaus``: one simulator per test module)."""

from __future__ import annotations

from tests.integration.conftest import bureaus, tls_dir

__all__ = ["bureaus", "tls_dir"]
