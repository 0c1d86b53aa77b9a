"""The audit trail: AuditEvents after IHE BALP (`events`), stored durably in batches off the
response path (`writer`, `wal`), at the end of every request (`completion`); and the
Provenance of every change (`provenance`). The interceptors are interceptors/audit.py and
interceptors/provenance.py. See docs/consent.md.
"""
