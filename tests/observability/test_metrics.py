"""GET /metrics in Prometheus' text format, and the request id every response carries,
which names the request in its AuditEvent."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.audit.conftest import audit_events
from tests.conftest import RunningServer, make_settings
from tests.consent.conftest import World

TASK = {"resourceType": "Task", "status": "requested", "intent": "order"}


def _samples(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(f"http://127.0.0.1:{server.settings.port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def _requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], interaction: str, rtype: str,
              status: str) -> float:
    key = ("fhir_requests_total", (("interaction", interaction), ("status", status), ("type", rtype)))
    return samples.get(key, 0.0)


def test_requests_are_counted_by_interaction_type_and_status(client: httpx.Client, server: RunningServer) -> None:
    before = _samples(server)
    task = client.post("/Task", json=TASK).json()
    for _ in range(3):
        assert client.get(f"/Task/{task['id']}").status_code == 200
    assert client.get("/Task/does-not-exist").status_code == 404
    assert client.get("/NotAType/1").status_code == 404
    after = _samples(server)
    assert _requests(after, "read", "Task", "200") - _requests(before, "read", "Task", "200") == 3
    assert _requests(after, "read", "Task", "404") - _requests(before, "read", "Task", "404") == 1
    assert _requests(after, "create", "Task", "201") - _requests(before, "create", "Task", "201") == 1
    # A type a client made up is one label, not one per spelling.
    assert _requests(after, "read", "other", "404") - _requests(before, "read", "other", "404") == 1
    count = ("fhir_request_duration_seconds_count", (("interaction", "read"),))
    assert after[count] - before.get(count, 0.0) == 5
    finds = ("fhir_database_command_duration_seconds_count", (("command", "find"),))
    assert after[finds] > before.get(finds, 0.0)
    for gauge in ("fhir_outbox_lag_seconds", "fhir_notifications_pending", "fhir_notification_delivery_lag_seconds",
                  "fhir_subscriptions_failing", "fhir_workflow_timer_lag_seconds", "fhir_audit_events_pending"):
        assert (gauge, ()) in after, gauge


def test_every_response_carries_a_request_id(client: httpx.Client) -> None:
    given = client.get("/metadata", headers={"X-Request-Id": "trace-42.a"})
    assert given.headers["x-request-id"] == "trace-42.a"
    made = client.get("/Task/nope")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    # An id that is not a sane token (a log line injection, too long) is replaced, not echoed.
    for bad in ("a b\"<script>", "x" * 65):
        reply = client.get("/metadata", headers={"X-Request-Id": bad})
        assert reply.headers["x-request-id"] != bad
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])


def test_the_request_id_reaches_the_audit_event(world: World) -> None:
    reply = world.gray.get("/Task/anna-task", headers={"X-Request-Id": "req-from-the-gateway-1"})
    assert reply.status_code == 200
    assert reply.headers["x-request-id"] == "req-from-the-gateway-1"
    events = [e for e in audit_events(world, subtype="read")
              if {"identifier": {"value": "req-from-the-gateway-1"}} in [x.get("what") for x in e["entity"]]]
    assert len(events) == 1
    assert any(x["what"].get("reference", "").startswith("Task/anna-task") for x in events[0]["entity"])


def _scrape(server: RunningServer, authorization: str | None = None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    return httpx.get(f"http://127.0.0.1:{server.settings.port}/metrics", headers=headers)


def test_with_auth_on_metrics_answer_only_the_configured_token(mongodb_uri: str) -> None:
    settings = make_settings(mongodb_uri, database="fhir_metrics_auth", auth_enabled=True,
                             extra={"metrics_token": "Scrape-Me-7f3a"})
    with RunningServer(settings) as server:
        for wrong in (None, "Bearer scrape-me-7f3a", "Bearer Scrape-Me-7f3", "Basic Scrape-Me-7f3a"):
            refused = _scrape(server, wrong)
            assert refused.status_code == 401, wrong
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert refused.json()["resourceType"] == "OperationOutcome"
            assert "fhir_requests_total" not in refused.text
        allowed = _scrape(server, "Bearer Scrape-Me-7f3a")
        assert allowed.status_code == 200
        assert "fhir_requests_total" in allowed.text


def test_with_auth_on_and_no_token_configured_metrics_fail_closed(mongodb_uri: str) -> None:
    with RunningServer(make_settings(mongodb_uri, database="fhir_metrics_closed", auth_enabled=True)) as server:
        refused = _scrape(server)
        assert refused.status_code == 401
        assert "FHIR_METRICS_TOKEN" in refused.json()["issue"][0]["diagnostics"]
