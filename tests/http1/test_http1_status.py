"""Kubernetes Status bodies and status-class labels, as callers and dashboards see them."""

from __future__ import annotations

import json

import pytest

from http1.status import status_body, status_class, status_headers, warning_header


@pytest.mark.parametrize(
    ("status", "label"), [(101, "1xx"), (200, "2xx"), (304, "3xx"), (431, "4xx"), (504, "5xx")]
)
def test_a_status_is_labelled_by_its_class(status: int, label: str) -> None:
    assert status_class(status) == label


@pytest.mark.parametrize(
    ("code", "reason"),
    [(431, "BadRequest"), (503, "ServiceUnavailable"), (410, "Gone")],
)
def test_a_status_body_is_what_kubectl_decodes(code: int, reason: str) -> None:
    body = status_body(code, "no")
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "no",
        "reason": reason,
        "code": code,
    }
    assert json.loads(status_body(code, "no", reason="Custom"))["reason"] == "Custom"


def test_status_headers_state_the_length_and_a_retry() -> None:
    body = status_body(503, "later")
    assert status_headers(body, retry_after=5) == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"Cache-Control", b"no-cache, private"),
        (b"Retry-After", b"5"),
    ]


def test_a_warning_is_one_quoted_printable_field_as_client_go_parses_it() -> None:
    assert warning_header('plane "a\\b" gone') == (b"Warning", b'299 - "plane \\"a\\\\b\\" gone"')
    # No byte of the text can end the field or leave Latin-1.
    _, value = warning_header("line\r\nInjected: 1 \u00e9\u2603")
    assert value == b'299 - "line??Injected: 1 ??"'
