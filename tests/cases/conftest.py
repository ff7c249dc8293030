"""Fixtures of the case tests: the bureau simulator on ephemeral ports (shared with the
integration tier)."""

from tests.integration.conftest import bureaus, sim, tls_dir

__all__ = ["bureaus", "sim", "tls_dir"]
