"""A federation operator's metadata service, for the tests: HTTPS on a loopback port (its own
self-signed certificate, given to the bridge as `metadata_ca_file`), serving whatever document
the test puts in `body` (None: 503). Documents are signed the way federations sign metadata:
an enveloped RSA-SHA256 signature over the root element by its ID, made by Debian's xmlsec1."""

from __future__ import annotations

import datetime as dt
import http.server
import ssl
import subprocess
import threading
from pathlib import Path

from bridge.federation.saml_server import read_or_create_identity

TEMPLATE = """<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>
<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
<ds:Reference URI="#md1"><ds:Transforms>
<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>
<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/>
<ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>"""


def stamp(seconds: float) -> str:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def prepared(xml: str, *, valid_seconds: float = 86400.0, signature: bool = True) -> str:
    """The SP's metadata with an ID, a validUntil and (to be filled) a signature template."""
    open_tag = "<EntityDescriptor "
    head, _, rest = xml.partition(open_tag)
    attrs, _, body = rest.partition(">")
    root = f'{open_tag}ID="md1" validUntil="{stamp(valid_seconds)}" {attrs}>'
    return head + root + (TEMPLATE if signature else "") + body


def sign(xml: str, key: Path, cert: Path, work: Path) -> str:
    source, signed = work / "to-sign.xml", work / "signed.xml"
    source.write_text(xml)
    subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", f"{key},{cert}",
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
         "--output", str(signed), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    return signed.read_text()


class Signer:
    """A federation's metadata signing key and certificate."""

    def __init__(self, work: Path, name: str) -> None:
        self.work = work
        self.key, self.cert = work / f"{name}-key.pem", work / f"{name}-cert.pem"
        read_or_create_identity(self.key, self.cert, name)

    def sign(self, xml: str, **kw: float) -> str:
        return sign(prepared(xml, **kw), self.key, self.cert, self.work)


class MetadataServer:
    def __init__(self, work: Path) -> None:
        self.key, self.cert = work / "https-key.pem", work / "https-cert.pem"
        read_or_create_identity(self.key, self.cert, "127.0.0.1")
        self.body: bytes | None = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = outer.body
                if self.path != "/sp.xml" or body is None:
                    self.send_error(503 if body is None else 404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/samlmetadata+xml")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/sp.xml"

    def close(self) -> None:
        """The URL goes down: connections are refused from now on."""
        self.httpd.shutdown()
        self.httpd.server_close()
