"""Keys, roles, TLS, rate limits and the audit log on a real ``bentoml serve`` over HTTPS (issue
#13).

One service runs for the module with a self-signed certificate (made here with
``cryptography``), so every request of these tests goes over TLS. The auth test takes every
endpoint from the service itself, the OpenAPI document plus the mounted apps' routes, so a new
endpoint is checked without anyone remembering to add it: without a key 401, with a key of
another role 403, with the right role an answer that is not about auth.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from cli.app import app as cli
from features.security.api_keys import ROLES
from features.security.audit import AuditLog
from features.settings import env_name
from features.workspace import Workspace
from serving.auth import Access, rule_for
from serving.process import TLSFiles, bearer, running_service, service_key

pytestmark = pytest.mark.integration

#: Per-key limit of this module's service: the rate-limit test reaches it with a key of its own.
KEY_LIMIT = 40
#: Sample bodies: the right role gets past auth to the API's own answer (2xx, or a 4xx about
#: the body, never 401/403); an endpoint not listed gets ``{}``.
BODIES = {
    "/recommend": {"user_id": "u1", "k": 3},
    "/similar_items": {"item_id": "no-such-item"},
    "/segment": {"user_id": "u1"},
    "/events": [],
    "/identify": {"anonymous_id": "a-auth", "user_id": "u-auth"},
    "/consent": {"anonymous_id": "a-auth", "purposes": {"analytics": True}},
}


@dataclass(frozen=True)
class Secured:
    url: str
    ws: Workspace
    cert: str  # the CA file httpx verifies the service with

    def call(self, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
        headers = {**(bearer(key) if key else {}), **kwargs.pop("headers", {})}
        body = BODIES.get(path, {}) if method == "POST" else None
        return httpx.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers=headers,
            verify=self.cert,
            timeout=30,
            **kwargs,
        )


def self_signed(folder: Path) -> TLSFiles:
    """A certificate for 127.0.0.1 and localhost, valid for a day, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TLSFiles(folder / "cert.pem", folder / "key.pem")
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="module")
def secured(trained_workspace, tmp_path_factory):
    home = tmp_path_factory.mktemp("secured")
    ws = trained_workspace.copy_to(home / "ws")
    tls = self_signed(home)
    limits = {
        env_name("rate_limit_key"): f"{KEY_LIMIT}/minute",
        env_name("rate_limit_address"): "300/minute",
    }
    with running_service(ws, extra_env=limits, tls=tls) as url:
        yield Secured(url, ws, str(tls.certfile))


def _endpoints(secured: Secured) -> list[tuple[str, str]]:
    """Every (method, path) the service answers: its OpenAPI document's operations and the
    routes of the apps mounted beside it (the collector, /consent, the privacy page)."""
    import serving.service

    spec = httpx.get(f"{secured.url}/docs.json", verify=secured.cert, timeout=30).json()
    found = {
        (method.upper(), re.sub(r"\{[^}]+\}", "x", path))
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    for mounted, _, _ in serving.service.Tailor.mount_apps:
        for route in getattr(mounted, "routes", []):
            for method in getattr(route, "methods", None) or ():
                if method not in ("HEAD", "OPTIONS"):
                    found.add((method, route.path))
    return sorted(found)


def _wrong_role(access: Access) -> str | None:
    """A role that may not call a route of ``access`` (None when every key may)."""
    return {Access.APP: "collector", Access.COLLECTOR: "app", Access.ADMIN: "app",
            Access.VISITOR: "app"}.get(access)  # fmt: skip


def _right_role(access: Access) -> str:
    return {Access.APP: "app", Access.COLLECTOR: "collector", Access.ANY_KEY: "collector"}.get(
        access, "admin"
    )


def test_every_endpoint_needs_a_key_of_its_role(secured):
    """issue #13 acceptance: no key 401, wrong role 403, right role neither, for every endpoint
    the service answers (found from the service, not from a list kept here)."""
    endpoints = _endpoints(secured)
    paths = {path for _, path in endpoints}
    assert {"/recommend", "/events", "/metrics", "/consent", "/collect"} <= paths, paths
    keys = {role: service_key(secured.ws, role, f"auth-{role}") for role in ROLES}
    checked = []
    for method, path in endpoints:
        access = rule_for(method, path)
        if access is Access.PUBLIC:
            answer = secured.call(method, path)
            assert answer.status_code not in (401, 403), (method, path, answer.text)
            continue
        none = secured.call(method, path)
        assert none.status_code == 401, (method, path, none.text)
        assert none.headers["www-authenticate"].startswith("Bearer")
        wrong = _wrong_role(access)
        if wrong is not None:
            refused = secured.call(method, path, keys[wrong])
            assert refused.status_code == 403, (method, path, wrong, refused.text)
        right = secured.call(method, path, keys[_right_role(access)])
        assert right.status_code not in (401, 403) and right.status_code < 500, (
            method,
            path,
            right.text,
        )
        admin = secured.call(method, path, keys["admin"])
        assert admin.status_code not in (401, 403), (method, path, admin.text)
        checked.append(f"{method} {path}")
    assert {"POST /recommend", "POST /events", "GET /consent", "GET /metrics"} <= set(checked)


def test_a_refusal_says_nothing_about_the_person(secured, trained_workspace):
    events = trained_workspace.generated.events
    known = str(events["user_id"].dropna().value_counts().index[0])
    collector = service_key(secured.ws, "collector")
    answers = []
    for user in (known, "never-seen-anywhere"):
        for key in (None, collector, "tk_00000000_forged"):
            body = {"user_id": user, "k": 3}
            response = httpx.post(
                f"{secured.url}/recommend",
                json=body,
                headers=bearer(key) if key else {},
                verify=secured.cert,
            )
            answers.append((key, response.status_code, response.text))
    assert answers[:3] == answers[3:]  # the same refusals for a known and an unknown person
    assert [status for _, status, _ in answers[:3]] == [401, 403, 401]
    assert known not in "".join(text for *_, text in answers)


def test_raw_state_only_in_the_admin_debug_view_which_is_audited(secured, trained_workspace):
    events = trained_workspace.generated.events
    known = str(events["user_id"].dropna().value_counts().index[0])
    app_key, admin_key = (service_key(secured.ws, role) for role in ("app", "admin"))
    body = {"user_id": known, "k": 3}
    url = f"{secured.url}/recommend"
    for key, headers in ((app_key, {"X-Tailor-Debug": "1"}), (admin_key, {})):
        plain = httpx.post(url, json=body, headers={**bearer(key), **headers}, verify=secured.cert)
        assert plain.status_code == 200 and plain.json()["features"] == {}, plain.text
        assert "persona_state" not in plain.text and "sessions_30d" not in plain.text
        assert plain.json()["items"]  # the answer itself is whole
    log = AuditLog.for_workspace(secured.ws)
    before = len(log.entries())
    debug = httpx.post(
        url, json=body, headers={**bearer(admin_key), "X-Tailor-Debug": "1"}, verify=secured.cert
    )
    assert debug.status_code == 200 and debug.json()["features"]["sessions_30d"] >= 1
    entries = log.entries()
    assert len(entries) == before + 1
    admin_id = admin_key.split("_")[1]
    assert entries[-1]["actor"] == f"key:{admin_id}"
    assert entries[-1]["action"] == "POST /recommend" and entries[-1]["details"] == {"debug": True}
    assert known not in json.dumps(entries)  # no raw person id in the audit log
    verified = CliRunner().invoke(
        cli, ["audit", "verify", "--home", str(secured.ws.home)], env={"COLUMNS": "300"}
    )
    assert verified.exit_code == 0 and "the chain holds" in verified.output, verified.output


def test_a_revoked_key_stops_working_within_seconds(secured):
    key = service_key(secured.ws, "app", "to-revoke")
    assert secured.call("POST", "/recommend", key).status_code == 200
    revoked = CliRunner().invoke(
        cli, ["keys", "revoke", key.split("_")[1], "--home", str(secured.ws.home)]
    )
    assert revoked.exit_code == 0, revoked.output
    deadline = time.monotonic() + 10  # the service reuses a verified key for 5 s at most
    while secured.call("POST", "/recommend", key).status_code != 401:
        assert time.monotonic() < deadline, "a revoked key still works after 10 s"
        time.sleep(0.25)


def test_over_the_key_limit_is_a_429_with_retry_after(secured):
    key = service_key(secured.ws, "collector", "rate-limited")
    statuses = [secured.call("GET", "/metrics", key).status_code for _ in range(KEY_LIMIT)]
    assert set(statuses) == {200}
    over = secured.call("GET", "/metrics", key)
    assert over.status_code == 429, over.text
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.json() == {"error": "too many requests"}
    other = service_key(secured.ws, "collector", "another")  # another key is not limited
    assert secured.call("GET", "/metrics", other).status_code == 200


def test_over_the_address_limit_is_a_429_for_requests_without_a_key(secured):
    statuses = [secured.call("GET", "/healthz").status_code for _ in range(310)]
    assert statuses.count(429) >= 10 and set(statuses) == {200, 429}
    refused = secured.call("GET", "/livez")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    key = service_key(secured.ws, "app")  # a valid key counts against the key, not the address
    assert secured.call("POST", "/recommend", key).status_code == 200


def test_cookies_are_secure_over_https_and_a_visitor_sets_only_their_own_consent(secured):
    with httpx.Client(base_url=secured.url, verify=secured.cert, timeout=30) as browser:
        time.sleep(1.0)  # out of a window the address test may have filled
        event = [{"event_type": "page_view", "page": "home"}]
        collected = _retry_429(lambda: browser.post("/collect", json=event))
        assert collected.status_code == 202, collected.text
        cookies = collected.headers.get_list("set-cookie")
        assert cookies and all("; Secure" in cookie for cookie in cookies), cookies
        visitor = _visitor_id(secured, browser)
        own = {"anonymous_id": visitor, "purposes": {"analytics": True}}
        stored = _retry_429(lambda: browser.post("/consent", json=own))
        assert stored.status_code == 201, stored.text
        other = {"anonymous_id": "someone-else", "purposes": {"analytics": False}}
        assert _retry_429(lambda: browser.post("/consent", json=other)).status_code == 403
    stranger = _retry_429(lambda: secured.call("POST", "/consent"))  # no key, no cookie
    assert stranger.status_code == 401


def _visitor_id(secured: Secured, browser: httpx.Client) -> str:
    """The anonymous id in the browser's signed ``tailor_aid`` cookie."""
    from serving.cookies import VisitorCookies, cookie_key

    cookies = VisitorCookies(cookie_key(None, secured.ws.secrets_dir))
    visitor = cookies.visitor({"tailor_aid": browser.cookies["tailor_aid"]})
    assert not visitor.new_visitor and not visitor.problems
    return visitor.anonymous_id


def _retry_429(send, attempts: int = 70):
    """``send()`` again while the address window of the previous test is full."""
    for _ in range(attempts):
        response = send()
        if response.status_code != 429:
            return response
        time.sleep(1.0)
    return response
