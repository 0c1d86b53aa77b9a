"""`GET /metrics`: Prometheus' text format, behind a bearer token once auth is on.

The figures hold no patient data (counts, times, lags), yet they say which resource types a
deployment holds and how busy it is, so the endpoint fails closed like every other path: with
auth on it answers only a scraper presenting `FHIR_METRICS_TOKEN` (Prometheus'
`authorization: {credentials: ...}`), and 401 when no token is configured. With auth off
(dev mode) it is open, as everything else is then.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.observability.metrics import CONTENT_TYPE, Metrics

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


def _refused(why: str) -> Response:
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "login", "diagnostics": why}]}
    return Response(orjson.dumps(outcome), status_code=401, media_type="application/fhir+json",
                    headers=_CHALLENGE)


def metrics_endpoint(metrics: Metrics, *, auth_enabled: bool,
                     token: str | None) -> Callable[[Request], Awaitable[Response]]:
    expected = f"Bearer {token}".encode() if token else None

    async def endpoint(request: Request) -> Response:
        if auth_enabled or expected is not None:
            if expected is None:
                return _refused("GET /metrics needs FHIR_METRICS_TOKEN set on the server while auth is on")
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _refused("GET /metrics needs the metrics bearer token (FHIR_METRICS_TOKEN)")
        body = await metrics.render(request.app.state.services)
        return Response(body, media_type=CONTENT_TYPE)

    return endpoint
