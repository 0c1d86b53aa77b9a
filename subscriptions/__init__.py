"""FHIR Subscriptions: outbox dispatcher, topic matching, channels (see README.md)."""
