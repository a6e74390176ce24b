"""Apache with mod_auth_mellon as the SAML service provider(s) of the federation tests.

One Apache can play several SPs: each protected path (`/protected`, `/a`, `/b`) is a mellon
`<Location>` with its own endpoint path, SP metadata and entityID (`<base><path>/mellon/metadata`),
sharing one key pair. The bridge is given each SP's metadata; Apache is given the bridge's
`/saml/metadata` as `idp.xml` (optionally edited first, e.g. to offer only one binding).
"""

from __future__ import annotations

import base64
import contextlib
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from bridge.federation.saml_server import read_or_create_identity
from tests.apache import httpd_head, running_apache
from tests.federation.support import sections
from tests.federation.test_apache_openidc import require_module
from tests.harness import Daemon
from tests.portal.support import free_port

PAGE = """<html><body>
<p id="affiliation"><!--#echo var="AFFILIATION" --></p>
<p id="name"><!--#echo var="DISPLAYNAME" --></p>
<p id="nameid"><!--#echo var="MELLON_NAME_ID" --></p>
<p id="pairwise"><!--#echo var="PAIRWISE" --></p>
<p id="targeted"><!--#echo var="TARGETED" --></p>
</body></html>
"""
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


@dataclass(frozen=True)
class Sp:
    """One mellon-protected path and how its metadata presents it to the bridge."""

    path: str = "/protected"
    signed_requests: bool = True  # AuthnRequestsSigned in its metadata
    key_use: str | None = "both"  # "both": signing + encryption descriptors; None: no `use`
    encryption_methods: tuple[str, ...] = ()
    config: str = ""  # extra keys for its [[saml.service_providers]] entry

    def metadata(self, base: str, cert_file: Path) -> str:
        der = "".join(line for line in cert_file.read_text().splitlines() if "-----" not in line)
        key_info = f"""<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>
<ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"""
        methods = "".join(f'<EncryptionMethod Algorithm="{m}"/>' for m in self.encryption_methods)
        if self.key_use == "both":
            keys = f"""<KeyDescriptor use="signing">{key_info}</KeyDescriptor>
  <KeyDescriptor use="encryption">{key_info}{methods}</KeyDescriptor>"""
        elif self.key_use is None:
            keys = f"<KeyDescriptor>{key_info}{methods}</KeyDescriptor>"
        else:
            keys = f'<KeyDescriptor use="{self.key_use}">{key_info}{methods}</KeyDescriptor>'
        at = f"{base}{self.path}/mellon"
        return f"""<?xml version="1.0"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{at}/metadata">
 <SPSSODescriptor AuthnRequestsSigned="{str(self.signed_requests).lower()}"
   WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
  {keys}
  <SingleLogoutService Binding="{REDIRECT}" Location="{at}/logout"/>
  <NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</NameIDFormat>
  <AssertionConsumerService index="0" isDefault="true" Binding="{POST}"
    Location="{at}/postResponse"/>
 </SPSSODescriptor>
</EntityDescriptor>
"""


def location(root: Path, sp: Sp, n: int) -> str:
    return f"""
<Location "{sp.path}">
    AuthType Mellon
    MellonEnable auth
    Require valid-user
    MellonEndpointPath {sp.path}/mellon
    MellonSPPrivateKeyFile {root}/sp-key.pem
    MellonSPCertFile {root}/sp-cert.pem
    MellonSPMetadataFile {root}/sp{n}.xml
    MellonIdPMetadataFile {root}/idp.xml
    MellonCookieSameSite lax
    MellonVariable cookie{n}
    MellonSetEnvNoPrefix AFFILIATION urn:oid:1.3.6.1.4.1.5923.1.1.1.9
    MellonSetEnvNoPrefix DISPLAYNAME urn:oid:2.16.840.1.113730.3.1.241
    MellonSetEnvNoPrefix PAIRWISE urn:oasis:names:tc:SAML:attribute:pairwise-id
    MellonSetEnvNoPrefix TARGETED urn:oid:1.3.6.1.4.1.5923.1.1.1.10
    Options +Includes
    SetOutputFilter INCLUDES
</Location>
"""


def apache_config(root: Path, port: int, sps: list[Sp]) -> str:
    modules = [
        ("include_module", "mod_include.so"),
        ("setenvif_module", "mod_setenvif.so"),
        ("auth_mellon_module", "mod_auth_mellon.so"),
    ]
    locations = "".join(location(root, sp, n) for n, sp in enumerate(sps))
    return f"""{httpd_head(root, port, modules, "warn auth_mellon:info")}
# Plain-HTTP loopback only: mellon's cookie test is always SameSite=None, which chromium drops
# without Secure; the README's MELLON_DISABLE_SAMESITE leaves SameSite off (over HTTPS use
# MellonSecureCookie On instead).
SetEnvIf Request_URI . MELLON_DISABLE_SAMESITE=1
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    Require all granted
</Directory>
{locations}
"""


@dataclass
class Federation:
    daemon: Daemon
    issuer: str  # the bridge's base URL
    port: int  # Apache's
    sp_dir: Path
    sps: list[Sp]

    @property
    def apache(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def entity(self, n: int = 0) -> str:
        return f"{self.apache}{self.sps[n].path}/mellon/metadata"


def sp_entries(sp_dir: Path, sps: list[Sp]) -> str:
    return "".join(
        f"""
[[saml.service_providers]]
metadata_file = "{sp_dir / f"sp{n}.xml"}"
attributes = [
  "eduPersonScopedAffiliation", "displayName", "pairwise-id", "eduPersonTargetedID"
]
{sp.config}
"""
        for n, sp in enumerate(sps)
    )


@contextlib.contextmanager
def federation(
    tmp: Path,
    sps: list[Sp],
    *,
    saml: str = "",
    entries: Callable[[Path], str] | None = None,
    throttle: str = "",
) -> Iterator[Federation]:
    """The bridge (its `[saml]` with these SPs) and the SPs' key pair and metadata."""
    require_module("mod_auth_mellon.so", "libapache2-mod-auth-mellon")
    port, bridge_port = free_port(), free_port()
    sp_dir = tmp / "sp"
    read_or_create_identity(sp_dir / "sp-key.pem", sp_dir / "sp-cert.pem", "127.0.0.1")
    for n, sp in enumerate(sps):
        text = sp.metadata(f"http://127.0.0.1:{port}", sp_dir / "sp-cert.pem")
        (sp_dir / f"sp{n}.xml").write_text(text)
    extra = f"""
[saml]
scope = "library.example.org"
key_file = "saml-key.pem"
cert_file = "saml-cert.pem"
{saml}
{entries(sp_dir) if entries is not None else sp_entries(sp_dir, sps)}
"""
    (tmp / "vendor-secret").write_text("unused\n")
    daemon = Daemon(tmp, sections(bridge_port) + extra, throttle=throttle).start()
    try:
        yield Federation(daemon, f"http://127.0.0.1:{bridge_port}", port, sp_dir, sps)
    finally:
        daemon.stop()


def only_binding(idp_xml: str, service: str, binding: str) -> str:
    """The IdP metadata with `service` (SingleSignOnService, SingleLogoutService) offered over
    this one binding, so mellon has to use it."""
    pattern = re.compile(rf"<(?:\w+:)?{service}\b[^>]*/>")
    return pattern.sub(lambda m: m.group(0) if binding in m.group(0) else "", idp_xml)


@contextlib.contextmanager
def mellon(fed: Federation, edit: Callable[[str], str] = lambda text: text) -> Iterator[str]:
    """Apache with one mellon Location per SP, trusting the bridge's current metadata."""
    idp_metadata = edit(httpx.get(f"{fed.issuer}/saml/metadata", timeout=30).text)

    def write(root: Path) -> None:
        for sp in fed.sps:
            (root / "htdocs" / sp.path.strip("/")).mkdir(parents=True)
            (root / "htdocs" / sp.path.strip("/") / "index.html").write_text(PAGE)
        (root / "htdocs" / "bye.html").write_text("<html><body><p>bye</p></body></html>")
        for name in ("sp-key.pem", "sp-cert.pem"):
            (root / name).write_bytes((fed.sp_dir / name).read_bytes())
        for n in range(len(fed.sps)):
            (root / f"sp{n}.xml").write_bytes((fed.sp_dir / f"sp{n}.xml").read_bytes())
        (root / "idp.xml").write_text(idp_metadata)
        (root / "httpd.conf").write_text(apache_config(root, fed.port, fed.sps))

    with running_apache(fed.daemon, fed.port, write, prefix="bridge-apache-fed-") as apache:
        yield apache


def sign_in_to_the_form(page: Page, url: str) -> str:
    """Open a protected page, sign in at the bridge; the SAML message its form would post."""
    from tests.federation.test_apache_openidc import fill
    from tests.harness import DEMO
    from tests.pins import DEMO_PIN

    page.goto(url)
    fill(page, DEMO["active"], DEMO_PIN)
    value = page.locator('input[name="SAMLResponse"]').get_attribute("value") or ""
    return base64.b64decode(value).decode()


def continue_to_the_page(page: Page) -> None:
    """Press "Continue" on the bridge's form; the SP's page shows the released affiliation."""
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#affiliation")).to_have_text("member@library.example.org")


def post_from(page: Page, action: str, fields: dict[str, str]) -> None:
    """Post a form from a blank page: a cross-site POST, so the SSO cookie stays behind."""
    inputs = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()
    )
    page.goto("about:blank")
    page.set_content(f'<form method="post" action="{action}">{inputs}<button>Go</button></form>')
    page.get_by_role("button", name="Go").click()
