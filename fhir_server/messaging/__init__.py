"""Secure messaging threads and their render state (docs/messaging.md).

A thread is a header Communication (no payload, no partOf); its messages are Communications
whose `partOf` is the header. Per participant and consuming system the server keeps a
*render cursor*: the furthest message that system last attempted to render. It is soft
coordination state, kept apart from the clinical record, versioned for audit, and the only
thing alerts are derived from.
"""
