"""What the CapabilityStatement says about security: the SMART oauth-uris extension."""

from __future__ import annotations

from typing import Any

from fhir_server.auth.settings import AuthSettings

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def capability_security(settings: AuthSettings) -> dict[str, Any]:
    """The value of CapabilityStatement.rest[0].security."""
    return {
        "cors": True,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
        }],
        "extension": [{
            "url": OAUTH_URIS,
            "extension": [
                {"url": "token", "valueUri": settings.token_url},
                {"url": "authorize", "valueUri": settings.authorize_url},
                {"url": "register", "valueUri": settings.registration_url},
                {"url": "manage", "valueUri": settings.launch_url},
                {"url": "introspect", "valueUri": settings.introspection_url},
                {"url": "revoke", "valueUri": settings.revocation_url},
            ],
        }],
    }
