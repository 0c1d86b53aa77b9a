"""Interceptors: named hook points, ordered by number, where cross-cutting rules plug in.

`hooks.py` declares every hook point once; built-in interceptors (validation first, then
SMART scopes, Consent, audit and provenance) live beside it, one module each.
"""

from interceptors.hooks import Change, HookKind, HookRegistry, Pointcut, hook

__all__ = ["Change", "HookKind", "HookRegistry", "Pointcut", "hook"]
