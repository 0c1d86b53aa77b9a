"""schemathesis against [base]/openapi.json: no 5xx, and every response as the document says.

The run is bounded so that it fits in `make test`: a fixed seed, the examples phase (one case
per operation with the documented example ids, which are seeded here so reads answer 200) and
one generated case per operation. It runs with SMART auth on, the default configuration, with
a system token minted by the server's own CLI code. A deeper run, outside `make test`:
    FUZZ_MAX_EXAMPLES=20 FUZZ_PHASES=examples,coverage,fuzzing FUZZ_TIMEOUT=3600 \
        .venv/bin/pytest -q tests/api/test_openapi_fuzz.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Mint, RunningServer, load_example

SEED = int(os.environ.get("FUZZ_SEED", "20261201"))
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "1")
PHASES = os.environ.get("FUZZ_PHASES", "examples,fuzzing")
TIMEOUT = int(os.environ.get("FUZZ_TIMEOUT", "300"))
CHECKS = "not_a_server_error,response_schema_conformance"
# Resources with the id the document gives as its example (the spec examples' own id).
SEEDED = ("patient-example.json", "practitioner-example.json", "practitionerrole-example.json",
          "endpoint-example.json", "careteam-example.json", "appointment-example.json",
          "documentreference-example.json", "binary-example.json")


def test_schemathesis_finds_no_server_error_and_no_response_off_the_document(
    secure_server: RunningServer, secure: Callable[..., httpx.Client], mint: Mint, tmp_path: Path,
) -> None:
    token = mint("system/*.cruds")
    client = secure(token)
    for name in SEEDED:
        resource = load_example(name)
        response = client.put(f"/{resource['resourceType']}/example", json=resource)
        assert response.status_code == 201, response.text
    base = secure_server.settings.base_url
    operations = sum(m in ("get", "head", "post", "put", "patch", "delete")
                     for item in client.get("/openapi.json").json()["paths"].values() for m in item)

    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json",
        "--checks", CHECKS, "--phases", PHASES, "--max-examples", MAX_EXAMPLES,
        "--seed", str(SEED), "--workers", "1", "--generation-database", "none",
        "--header", f"Authorization: Bearer {token}", "--no-color", "--request-timeout", "30",
    ]
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    tested = re.search(r"Tested: (\d+)", output)
    generated = re.search(r"(\d+) generated, (\d+) passed", output)
    assert tested is not None and generated is not None, output[-5000:]
    assert int(tested.group(1)) == operations  # every operation of the document was exercised
    assert int(generated.group(1)) >= operations
    assert generated.group(1) == generated.group(2)


# What the fuzzer found (each was a 500): an operation's Parameters with `parameter` not an array.
@pytest.mark.parametrize("path", ["/Task/$validate", "/Subscription/$status",
                                  "/Subscription/$get-ws-binding-token"])
def test_parameters_whose_parameter_is_not_an_array_are_a_400(
    client: httpx.Client, path: str,
) -> None:
    response = client.post(path, json={"resourceType": "Parameters", "parameter": None})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "Parameters.parameter must be an array" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", ["/Task/_history", "/_history", "/Task/t1/_history"])
def test_history_with_count_zero_is_a_bundle_without_entries(client: httpx.Client, path: str) -> None:
    created = client.put("/Task/t1", json={"resourceType": "Task", "id": "t1", "status": "requested",
                                           "intent": "order"})
    assert created.status_code == 201, created.text
    response = client.get(path, params={"_count": "0"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "history"
    assert body.get("entry", []) == []
