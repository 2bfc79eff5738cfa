"""Schemathesis against a live gateway's own ``/openapi.json``.

A real ``northstar serve`` subprocess in API-key mode, with an admin key and a tenant user's
key made by ``northstar keys create`` against its data directory before it starts. For every
operation in the served document, both keys, and both of schemathesis' generation modes
(positive: data the document says is valid; negative: data it says is not), a bounded,
derandomized number of generated requests is sent and each answer is held to:

* no 5xx (``not_a_server_error``), and the process stays up;
* the status code and content type are documented (``status_code_conformance``,
  ``content_type_conformance``), and the body matches the documented schema
  (``response_schema_conformance``): every error body is the canonical envelope;
* data the document calls invalid is refused with a 4xx (``negative_data_rejection``):
  what the document promises is what the edge enforces.

``NORTHSTAR_FUZZ_REST_EXAMPLES`` sets the examples per (operation, key, mode) (default 8);
the documented examples of each operation are sent first. The figures of a run are printed
and go into the table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import load_all_checks

from tests.harness import GatewayProcess
from tests.reliability.fuzz_kit import bearer, keyed_gateway
from tests.reliability.kit import healthy, traceback_free

EXAMPLES = int(os.environ.get("NORTHSTAR_FUZZ_REST_EXAMPLES", "8"))
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
COUNTS: dict[str, int] = {}
STATUSES: dict[int, int] = {}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    """A gateway in API-key mode and its two keys (made before it starts, with the CLI)."""
    with keyed_gateway(tmp_path_factory.mktemp("openapi-fuzz")) as (gw, keys):
        yield gw, keys
    traceback_free(gw)


@pytest.fixture(scope="module")
def schema(keyed: tuple[GatewayProcess, dict[str, str]]) -> Any:
    gw, _ = keyed
    return schemathesis.openapi.from_url(f"{gw.url}/openapi.json", timeout=30)


def checks() -> list[Any]:
    load_all_checks()
    from schemathesis import checks as C

    return [C.not_a_server_error, C.status_code_conformance, C.content_type_conformance,
            C.response_schema_conformance, C.negative_data_rejection]


def fuzz(gw: GatewayProcess, strategy: st.SearchStrategy[Any], examples: int, key: str, label: str,
         session: requests.Session) -> None:
    """Send ``examples`` cases drawn from ``strategy`` and hold each answer to the checks."""
    chosen = checks()

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=gw.url, session=session, headers=bearer(key), timeout=60)
        COUNTS[label] = COUNTS.get(label, 0) + 1
        STATUSES[response.status_code] = STATUSES.get(response.status_code, 0) + 1
        case.validate_response(response, checks=chosen)

    run()


def modes(operation: Any) -> tuple[GenerationMode, ...]:
    """Negative data needs something to get wrong: a parameter or a body."""
    has_input = len(operation.path_parameters) or len(operation.query) or len(operation.body)
    return MODES if has_input else (GenerationMode.POSITIVE,)


# Registering an upstream starts the process or opens the connection its body names: generated
# bodies would run arbitrary commands and reach arbitrary hosts from this machine. Its body's
# validation is covered by tests/upstreams/test_spec.py; the other upstream routes are fuzzed.
NOT_FUZZED = {("POST", "/v1/upstreams")}


def operations(schema: Any) -> list[Any]:
    found = [op for op in (result.ok() for result in schema.get_all_operations())
             if (op.method.upper(), op.path) not in NOT_FUZZED]
    assert len(found) >= 30, [op.label for op in found]
    return found


@pytest.mark.parametrize("who", ["admin", "user"])
def test_schemathesis_against_the_served_document(keyed: tuple[GatewayProcess, dict[str, str]], schema: Any,
                                                   who: str) -> None:
    """Every operation: its documented examples, then generated positive and negative data."""
    gw, keys = keyed
    label = f"REST ({who} key)"
    with requests.Session() as session:
        for operation in operations(schema):
            for example in schema.get_strategies_from_examples(operation):
                fuzz(gw, example, 2, keys[who], label, session)
            for mode in modes(operation):
                fuzz(gw, operation.as_strategy(generation_mode=mode), EXAMPLES, keys[who], label, session)
    assert COUNTS[label] >= len(operations(schema)) * EXAMPLES
    assert healthy(gw)


def test_schemathesis_figures(keyed: tuple[GatewayProcess, dict[str, str]]) -> None:
    """The figures for docs/reliability.md: requests per key, and the statuses they got (no 5xx)."""
    gw, _ = keyed
    print("\nschemathesis requests: " + json.dumps(dict(sorted(COUNTS.items())))
          + " statuses: " + json.dumps(dict(sorted(STATUSES.items()))))
    assert not [s for s in STATUSES if s >= 500]
    assert gw.proc is not None and gw.proc.poll() is None
