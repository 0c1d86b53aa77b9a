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

    @property
    def content_type(self) -> str:
        return f"{self.media_type}; charset=utf-8"


def _parse_accept(header: str) -> list[str]:
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        q = 1.0
        for p in pieces[1:]:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            ranked.append((-q, i, media))
    return [m for _, _, m in sorted(ranked)]


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
    raw_accept = None
    for media in _parse_accept(accept):
        if media in _JSON_NAMES:
            return Format(_JSON_NAMES[media], pretty, raw_accept)
        if media in _ANY:
            return Format(FHIR_JSON, pretty, raw_accept)
        if media not in _XML_NAMES and raw_accept is None:
            raw_accept = media
    if raw_accept is not None:
        # Only Binary can honour it; other routes call require_fhir() and answer 406.
        return Format(FHIR_JSON, pretty, raw_accept)
    raise NotAcceptable(
        f"Accept: {accept[:80]} is not supported: this server speaks JSON only "
        "(application/fhir+json)"
    )


def require_fhir(fmt: Format) -> None:
    if fmt.raw_accept is not None:
        raise NotAcceptable(
            f"Accept: {fmt.raw_accept[:60]} is not supported for FHIR resources: JSON only "
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
