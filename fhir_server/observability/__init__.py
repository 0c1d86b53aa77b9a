"""What an operator watches: Prometheus metrics (`GET /metrics`), structured JSON logs with
a request id (the same id the request's AuditEvent names), and opt-in OpenTelemetry traces
(HTTP → repository → MongoDB commands, exported by OTLP). docs/performance.md measures what
each costs a read."""
