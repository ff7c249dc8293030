"""The OAuth2+JSON family: token request and answer, bearer header, 401 re-authentication."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qsl

import pytest

from connectors import shenzhen, suzhou
from connectors.families.oauth_json import basic_auth
from gateway.sdk import Accepted, BureauResponse, Rejected, RetryLater, TokenGrant
from tests.unit.connector_samples import context, escalation


def test_token_request_is_client_credentials_with_basic_auth() -> None:
    request = shenzhen.connector.token_request(context())
    assert (request.method, request.path) == ("POST", "/oauth2/token")
    assert dict(parse_qsl(request.body.decode())) == {
        "grant_type": "client_credentials",
        "scope": "complaint.write",
    }
    scheme, _, value = request.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(value).decode() == "greenchannel-test:s3cret"
    assert suzhou.connector.token_grant == TokenGrant("/oauth/token")
    assert b"scope" not in suzhou.connector.token_request(context()).body


def test_basic_auth_form_encodes_both_parts() -> None:
    value = basic_auth("id:x", "p@ss word")
    assert base64.b64decode(value.split()[1]).decode() == "id%3Ax:p%40ss%20word"


def _token(status: int, body: object) -> BureauResponse:
    return BureauResponse(status, {}, json.dumps(body).encode())


def test_interpret_token() -> None:
    answer = {"access_token": "abc", "token_type": "bearer", "expires_in": 600}
    assert shenzhen.connector.interpret_token(_token(200, answer)) == ("abc", 600.0)
    assert shenzhen.connector.interpret_token(_token(200, {"access_token": "abc"})) == (
        "abc",
        300.0,
    )


@pytest.mark.parametrize(
    "response",
    [
        _token(401, {"error": "invalid_client"}),
        _token(503, {}),
        _token(200, {"token_type": "Bearer"}),
        _token(200, {"access_token": "a", "token_type": "mac"}),
        _token(200, {"access_token": "a", "expires_in": -1}),
        _token(200, {"access_token": "a", "expires_in": "soon"}),
        BureauResponse(200, {}, b"<html>"),
    ],
)
def test_interpret_token_refuses_bad_answers(response: BureauResponse) -> None:
    with pytest.raises(ValueError):
        shenzhen.connector.interpret_token(response)


def test_translate_needs_and_sends_the_bearer() -> None:
    with pytest.raises(ValueError):
        shenzhen.connector.translate(escalation(), context())
    request = shenzhen.connector.translate(escalation(), context(bearer="tok-1"))
    assert request.headers["Authorization"] == "Bearer tok-1"
    assert request.headers["Idempotency-Key"] == "esc-7f3a9c2e"
    assert shenzhen.connector.requires_client_cert is True


def test_interpret() -> None:
    interpret = shenzhen.connector.interpret
    assert interpret(_token(201, {"status": "ACCEPTED", "caseId": "SZ1"})) == Accepted("SZ1")
    assert interpret(_token(200, {"status": "DUPLICATE", "caseId": "SZ1"})) == Accepted("SZ1")
    assert interpret(_token(200, {"status": "BUSY"})) == RetryLater("busy")
    assert interpret(_token(401, {})) == RetryLater("token_expired", reauthenticate=True)
    assert interpret(_token(403, {})) == RetryLater("auth")
    assert interpret(_token(422, {"status": "INVALID_FIELD", "message": "phone"})) == Rejected(
        "business_rule", "INVALID_FIELD phone"
    )
    assert suzhou.connector.interpret(_token(200, {"code": "50301"})) == RetryLater("busy")
