"""Interceptors: the cross-cutting rules that plug into the hook points.

The hook vocabulary (hook points, `@hook`, the registry) is `fhir_server.hooks`, below
storage; `registry.py` builds every interceptor once, in the one order table, and freezes
the registry. Built-in interceptors (validation first, then SMART scopes, Consent,
provenance, the outbox and audit) live beside it, one module each.
"""
