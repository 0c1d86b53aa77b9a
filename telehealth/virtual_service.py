"""The R5 virtual service on an R4 Appointment, through the cross-version extension.

R5 gave Appointment a `virtualService` (VirtualServiceDetail): channelType, address[x],
additionalInfo, maxParticipants, sessionKey. R4 carries it as the complex extension
`http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService`, one
sub-extension per element. This server writes channelType, address (the room, never a
secret), additionalInfo and maxParticipants; it never writes sessionKey: whoever may read
the Appointment must not learn how to enter the room (that is what $join is for).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]
URL = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"


@dataclass(frozen=True)
class VirtualService:
    channel_type: Doc | None = None  # a Coding
    address: str | None = None
    additional_info: tuple[str, ...] = ()
    max_participants: int | None = None


def extension_of(appointment: Doc) -> Doc | None:
    for extension in appointment.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == URL:
            return extension
    return None


def is_virtual(appointment: Doc) -> bool:
    """A virtual Appointment is one that carries the virtual service extension (a client
    booking a video visit puts it there, with or without a channelType)."""
    return extension_of(appointment) is not None


def read(appointment: Doc) -> VirtualService | None:
    extension = extension_of(appointment)
    if extension is None:
        return None
    parts: dict[str, list[Doc]] = {}
    for sub in extension.get("extension") or []:
        if isinstance(sub, dict) and isinstance(sub.get("url"), str):
            parts.setdefault(sub["url"], []).append(sub)

    def first(name: str, key: str) -> Any:
        return next((p.get(key) for p in parts.get(name, []) if key in p), None)

    address = first("address", "valueUrl") or first("address", "valueString")
    maximum = first("maxParticipants", "valuePositiveInt")
    return VirtualService(
        channel_type=first("channelType", "valueCoding"),
        address=address if isinstance(address, str) else None,
        additional_info=tuple(p["valueUrl"] for p in parts.get("additionalInfo", [])
                              if isinstance(p.get("valueUrl"), str)),
        max_participants=maximum if isinstance(maximum, int) else None,
    )


def extension(service: VirtualService) -> Doc:
    parts: list[Doc] = []
    if service.channel_type is not None:
        parts.append({"url": "channelType", "valueCoding": service.channel_type})
    if service.address is not None:
        parts.append({"url": "address", "valueUrl": service.address})
    parts += [{"url": "additionalInfo", "valueUrl": info} for info in service.additional_info]
    if service.max_participants is not None:
        parts.append({"url": "maxParticipants", "valuePositiveInt": service.max_participants})
    return {"url": URL, "extension": parts}


def with_service(appointment: Doc, service: VirtualService) -> Doc:
    """A copy of `appointment` whose virtual service extension is `service` (in its place)."""
    out = copy.deepcopy(appointment)
    extensions = [e for e in out.get("extension") or [] if not (isinstance(e, dict) and e.get("url") == URL)]
    place = next((i for i, e in enumerate(out.get("extension") or [])
                  if isinstance(e, dict) and e.get("url") == URL), len(extensions))
    extensions.insert(place, extension(service))
    out["extension"] = extensions
    return out
