"""A FHIR R4 (4.0.1) server for care coordination and telemedicine, on MongoDB."""

FHIR_VERSION = "4.0.1"
__version__ = "0.1.0"
