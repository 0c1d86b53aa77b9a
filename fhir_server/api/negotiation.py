"""Content negotiation: which format a client gets and which it may send. JSON only.

FHIR's `_format` overrides `Accept`. XML is answered 406 (response) or 415 (request body)
with an OperationOutcome that says this server speaks JSON only.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhir_server.errors import NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON = "application/json"
JSON_PATCH = "application/json-patch+json"
FORM = "application/x-www-form-urlencoded"

_JSON_NAMES = {
    "json": FHIR_JSON,
    FHIR_JSON: FHIR_JSON,
    JSON: JSON,
    "application/json+fhir": FHIR_JSON,  # DSTU2-era name some clients still send
    "text/json": JSON,
}
_XML_NAMES = {"xml", "application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
_ANY = {"*/*", "application/*"}


@dataclass(frozen=True)
class Format:
    media_type: str  # what we answer with: application/fhir+json or application/json
    pretty: bool = False
    # The first non-FHIR media type the client asked for (Binary raw content negotiation).
    raw_accept: str | None = None
    # False when the client accepts no JSON at all (only raw types): 406 except for Binary.
    json_acceptable: bool = True

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


def _parse_accept(header: str) -> list[tuple[float, str]]:
    """The header's media ranges with their q-values, best first (ties keep the client's
    order); q=0 ones (refused) come last."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        q = 1.0
        for p in pieces[1:]:
            if p[:2].lower() == "q=":
                try:
                    q = min(max(float(p[2:]), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if media:
            ranked.append((-q, i, media))
    return [(-q, m) for q, _, m in sorted(ranked)]


def response_format(request: Request) -> Format:
    params = request.query_params
    pretty = params.get("_pretty", "false").lower() == "true"
    fmt = params.get("_format")
    if fmt:
        key = fmt.split(";")[0].strip().lower()
        if key in _JSON_NAMES:
            return Format(_JSON_NAMES[key], pretty)
        raise NotAcceptable(
            f"_format={fmt[:60]} is not supported: this server speaks JSON only "
            "(application/fhir+json)"
        )
    accept = request.headers.get("accept")
    if not accept:
        return Format(FHIR_JSON, pretty)
    ranked = _parse_accept(accept)
    refused = {m for q, m in ranked if q == 0}
    # The best JSON range the client accepts; */* (a browser sends it last, at q=0.8)
    # counts: JSON is then acceptable, only less preferred than e.g. text/html. A wildcard
    # gives the FHIR type unless that one is refused by name (RFC 9110: the specific wins).
    any_json = next((_JSON_NAMES[n] for n in (FHIR_JSON, JSON) if n not in refused), None)
    json_q, media_type = next(
        ((q, _JSON_NAMES[m]) for q, m in ranked if q > 0 and m in _JSON_NAMES),
        next(((q, any_json) for q, m in ranked if q > 0 and m in _ANY and any_json), (0.0, FHIR_JSON)),
    )
    # A non-FHIR type ranked above JSON: only Binary can honour it (raw content).
    raw_accept = next((m for q, m in ranked if q > json_q and m not in _XML_NAMES
                       and m not in _JSON_NAMES and m not in _ANY), None)
    if json_q > 0:
        return Format(media_type, pretty, raw_accept)
    if raw_accept is not None:
        # Only Binary can honour it; other routes call require_fhir() and answer 406.
        return Format(FHIR_JSON, pretty, raw_accept, json_acceptable=False)
    raise NotAcceptable(
        f"Accept: {accept[:80]} is not supported: this server speaks JSON only "
        "(application/fhir+json)"
    )


def require_fhir(fmt: Format) -> None:
    """406 unless the client accepts JSON at all (any q > 0): FHIR resources are JSON here."""
    if not fmt.json_acceptable:
        raise NotAcceptable(
            f"Accept: {(fmt.raw_accept or '')[:60]} is not supported for FHIR resources: JSON only "
            "(application/fhir+json)"
        )


def body_media_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    if not raw:
        return None
    return raw.split(";")[0].strip().lower()


def require_json_body(request: Request, *, allow: tuple[str, ...] = ()) -> str:
    """Checks the request Content-Type is a FHIR JSON type (or one of `allow`)."""
    media = body_media_type(request)
    if media is None or media in _JSON_NAMES or media in allow:
        return media or FHIR_JSON
    if media in _XML_NAMES:
        raise UnsupportedMediaType(
            f"Content-Type {media} is not supported: this server accepts JSON only "
            "(application/fhir+json)"
        )
    raise UnsupportedMediaType(f"Content-Type {media[:60]} is not supported here")
