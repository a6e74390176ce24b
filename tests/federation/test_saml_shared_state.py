"""SAML sign-ins across hosts: the AuthnRequest waiting for the PIN form lives in the `[state]`
backend, as the OpenID Connect ones do.

Two daemons (A and B, one issuer, the same SAML key pair, as a load balancer would front them)
share Redis, then the SQLite state file of one daemon with two workers. pysaml2's own SP client
sends a signed AuthnRequest over HTTP-Redirect to A; the sign-in form A shows is posted to B
(first with a wrong PIN, which keeps the request, then the right one) and B's signed assertion
is accepted by the SP. The same form posted again (at A) is refused: a request is answered once.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import httpx
from saml2.client import Saml2Client
from saml2.metadata import create_metadata_string

from bridge.federation.saml_server import read_or_create_identity
from tests.federation.mellon import POST, REDIRECT
from tests.federation.support import form_fields, sections
from tests.federation.test_saml_logout import PYSAML2_BASE, pysaml2_sp
from tests.federation.test_shared_state import SHARED_FILES, two_hosts, url
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.portal.support import free_port
from tests.state.redis_server import shared_prefix

SAML_FILES = (*SHARED_FILES, "saml-key.pem", "saml-cert.pem")
EXPIRED = "took too long"  # oidc.expired_request, on both protocols' sign-in pages


def saml_section(tmp: Path) -> str:
    """`[saml]` with pysaml2's SP (its key pair and metadata made here) as the one SP."""
    sp_dir = tmp / "pysaml2"
    sp_dir.mkdir()
    read_or_create_identity(sp_dir / "sp-key.pem", sp_dir / "sp-cert.pem", "127.0.0.1")
    metadata = create_metadata_string(None, pysaml2_sp(PYSAML2_BASE, sp_dir, None).config, 4)
    (sp_dir / "sp.xml").write_bytes(metadata)
    return f"""
[saml]
scope = "library.example.org"
key_file = "saml-key.pem"
cert_file = "saml-cert.pem"
[[saml.service_providers]]
metadata_file = "{sp_dir / "sp.xml"}"
"""


def sp_client(tmp: Path, issuer: str) -> Saml2Client:
    idp_xml = tmp / "pysaml2" / "idp.xml"
    idp_xml.write_text(httpx.get(f"{issuer}/saml/metadata").text)
    return pysaml2_sp(PYSAML2_BASE, tmp / "pysaml2", idp_xml)


def send(cookies: httpx.Cookies, method: str, target: str, **kw: Any) -> httpx.Response:
    """One request on a new connection (with two workers, the kernel picks either one)."""
    with httpx.Client(timeout=30, cookies=cookies) as http:
        answer = http.request(method, target, **kw)
        cookies.update(http.cookies)
        return answer


def authn_request(client: Saml2Client, issuer: str, at: str) -> tuple[str, str]:
    """A signed AuthnRequest over HTTP-Redirect, sent to host `at`: its id and URL there."""
    request_id, info = client.prepare_for_authenticate(
        entityid=f"{issuer}/saml/metadata", relay_state="r1", binding=REDIRECT
    )
    return request_id, dict(info["headers"])["Location"].replace(issuer, at, 1)


def assertion_of(client: Saml2Client, answer: httpx.Response, request_id: str) -> Any:
    """The SP's reading of the bridge's auto-post form (it checks the signature)."""
    assert answer.status_code == 200, answer.text
    found = re.search(r'name="SAMLResponse" value="([^"]+)"', answer.text)
    assert found is not None, answer.text
    return client.parse_authn_request_response(
        html.unescape(found.group(1)), POST, {request_id: "/"}
    )


def across(tmp: Path, issuer: str, start: str, finish: str) -> None:
    """The AuthnRequest checked at `start`, its form posted to `finish` (then again to start);
    then single sign-on at `start` from the session `finish` made."""
    client = sp_client(tmp, issuer)
    request_id, location = authn_request(client, issuer, start)
    jar = httpx.Cookies()
    page = send(jar, "GET", location)
    assert page.status_code == 200 and 'action="/saml/login?request=' in page.text, page.text
    fields = form_fields(page.text)
    login = f"{finish}/saml/login"
    wrong = send(jar, "POST", login, data={**fields, "barcode": DEMO["active"], "pin": WRONG_PIN})
    assert wrong.status_code == 200 and "not correct" in wrong.text, wrong.text
    signed = {**fields, "barcode": DEMO["active"], "pin": DEMO_PIN}
    before = httpx.Cookies(jar)  # the form's CSRF cookie, before signing in
    response = assertion_of(client, send(jar, "POST", login, data=signed), request_id)
    assert response.ava["eduPersonScopedAffiliation"] == ["member@library.example.org"]
    again = send(before, "POST", f"{start}/saml/login", data=signed)  # the same post, at start
    assert again.status_code == 400 and EXPIRED in again.text, again.text
    request_id, location = authn_request(client, issuer, start)  # signed in: no PIN asked
    sso = assertion_of(client, send(jar, "GET", location), request_id)
    assert sso.name_id.text == response.name_id.text


def test_saml_sign_in_across_two_hosts_sharing_redis(tmp_path: Path) -> None:
    with shared_prefix() as (redis_url, prefix), servers.pg_database() as dbname:
        state = f'\n[state]\nbackend = "redis"\nurl = "{redis_url}"\nkey_prefix = "{prefix}"\n'
        hosts = two_hosts(
            tmp_path, saml_section(tmp_path) + state, store_toml(dbname), files=SAML_FILES
        )
        with hosts as (_, issuer, b_url):
            across(tmp_path, issuer, issuer, b_url)
            across(tmp_path, issuer, b_url, issuer)


def test_saml_sign_in_across_two_workers_sharing_the_sqlite_state(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "vendor-secret").write_text("unused\n")
    config = (
        sections(port)
        + saml_section(tmp_path)
        + '\n[server]\nworkers = 2\n[state]\nbackend = "sqlite"\n'
    )
    with Daemon(tmp_path, config) as daemon:
        assert len(daemon.workers) == 2
        base = url(port)
        for _ in range(4):  # new connections each time: the kernel spreads them over both
            across(tmp_path, base, base, base)
        assert daemon.logs().count("saml_logout_per_process") == 2  # once per worker
