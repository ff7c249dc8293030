"""Policies as values, shared by delivery and dead-letter replay.

Owns the token bucket (``ratelimit``), the circuit breaker (``breaker``) and the tenacity retry
policy built once per city from config (``retry``). Pure and clock-injectable; may import only
the foundations (``gateway.config``, ``gateway.errors``) and tenacity.
"""
