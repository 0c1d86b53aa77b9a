"""The hot route, matched first: `GET|HEAD [base]/Type/id`, the read.

FastAPI's table (api/routes.py) matches routes one by one and runs its request handler
around each endpoint (included-router dispatch, dependency solving): a profile of reads put
that at about a sixth of the server's CPU per read. This plain Starlette route serves the
same handler for the one path shape that is unambiguously a read: a type name and a
FHIR id (`[A-Za-z0-9\\-.]{1,64}`, so `_history`, `_search` and `$operation` never match it).
Anything else (an invalid id included) falls through to the table, as before. Errors go
through the same exception handlers (they are the application's, found in the scope).
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.routing import Route as StarletteRoute

from fhir_server.api.routes import ROUTES


def install_read_fast_path(app: FastAPI, prefix: str) -> None:
    # The generic read (not a type's own read route, such as /OperationDefinition/{id}).
    read = next(r for r in ROUTES if r.interaction == "read" and r.path == "/{type}/{id}")
    route = StarletteRoute(f"{prefix}/{{type}}/{{id}}", read.bound(), methods=list(read.methods),
                           include_in_schema=False, name="read:fast")
    # Types with a read route of their own keep it (the table matches them).
    own = sorted(r.path.split("/")[1] for r in ROUTES
                 if r.interaction == "read" and r.path != "/{type}/{id}" and r.path.count("/") == 2)
    not_own = "".join(rf"(?!{re.escape(t)}/)" for t in own)
    route.path_regex = re.compile(
        rf"^{re.escape(prefix)}/{not_own}(?P<type>[A-Z][A-Za-z]{{0,63}})/(?P<id>[A-Za-z0-9\-.]{{1,64}})$")
    app.router.routes.insert(0, route)
