"""Service-provider metadata from files or HTTPS URLs, checked before the IdP trusts it.

A URL is fetched over HTTPS (the configured CA bundle, or the system's), its `validUntil` must
lie ahead, and when a signing certificate is configured the document must carry an enveloped
signature on its root element that verifies against exactly that certificate (xmlsec1, key
taken from the certificate only, never from the document's KeyInfo). A good copy is written to
the cache directory atomically, so a restart while the URL is down still starts with the last
good copy; a bad fetch keeps that copy and logs one line. The copy is refetched every
`metadata_refresh_minutes` and on every reload; a copy whose `validUntil` has passed is no
longer served (that SP's requests are refused as unknown) until a fresh one arrives.

Everything here blocks (network, disk, xmlsec1): callers run it in a worker thread.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element  # the type only; parsing is defusedxml's

import httpx
import structlog
from defusedxml import ElementTree as SafeET

log = structlog.get_logger("bridge.federation.saml")

MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
MAX_BYTES = 4 * 1024 * 1024
XMLSEC = "/usr/bin/xmlsec1"


class MetadataError(Exception):
    """Why a metadata document was not accepted (one line, for the log)."""


@dataclass(frozen=True, slots=True)
class Checked:
    text: bytes
    entities: tuple[str, ...]  # entityIDs of the service providers described
    valid_until: float | None


def _valid_until(element: Element) -> float | None:
    value = element.get("validUntil")
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MetadataError(f"validUntil {value[:40]!r} is not a date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def check(text: bytes, signing_cert: Path | None, now: float) -> Checked:
    """Parse (no DTDs, no entities), check validity and, if asked, the signature."""
    if len(text) > MAX_BYTES:
        raise MetadataError("larger than 4 MiB")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except Exception as exc:  # noqa: BLE001 - defusedxml raises parser and policy errors
        raise MetadataError(f"not XML: {type(exc).__name__}") from None
    if root.tag not in (f"{MD}EntityDescriptor", f"{MD}EntitiesDescriptor"):
        raise MetadataError("not SAML metadata (no EntityDescriptor)")
    if root.tag == f"{MD}EntityDescriptor":
        descriptors = [root]
    else:
        descriptors = list(root.iter(f"{MD}EntityDescriptor"))
    limits = [t for t in (_valid_until(e) for e in [root, *descriptors]) if t is not None]
    valid_until = min(limits, default=None)
    if valid_until is not None and valid_until <= now:
        raise MetadataError("validUntil has passed")
    entities = tuple(
        e.get("entityID", "") for e in descriptors if e.find(f"{MD}SPSSODescriptor") is not None
    )
    if not entities or "" in entities:
        raise MetadataError("no SPSSODescriptor with an entityID")
    if signing_cert is not None:
        _verify(text, root, signing_cert)
    return Checked(text, entities, valid_until)


def _verify(text: bytes, root: Element, cert: Path) -> None:
    """An enveloped signature over the whole document, by the configured certificate.

    The signature must be the root's own (its first in document order) and reference the root
    by its ID (or the whole document), so a signed fragment cannot vouch for unsigned entities.
    """
    signature = next(root.iter(f"{DS}Signature"), None)
    if signature is None or signature not in list(root):
        raise MetadataError("not signed")
    references = list(signature.iter(f"{DS}Reference"))
    root_id = root.get("ID")
    if len(references) != 1 or references[0].get("URI") not in ("", f"#{root_id}"):
        raise MetadataError("the signature does not cover the whole document")
    with tempfile.NamedTemporaryFile(suffix=".xml") as f:
        f.write(text)
        f.flush()
        command = [
            XMLSEC, "--verify", "--enabled-reference-uris", "empty,same-doc",
            "--enabled-key-data", "raw-x509-cert", "--pubkey-cert-pem", str(cert),
            "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor",
            "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:metadata:EntitiesDescriptor",
            f.name,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)  # noqa: S603
    if done.returncode != 0:
        raise MetadataError("the signature does not verify against metadata_signing_cert")


def fetch(url: str, ca_file: Path | None) -> bytes:
    """GET over HTTPS, certificate checked, no redirects followed, at most MAX_BYTES."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    with (
        httpx.Client(verify=context, timeout=30, follow_redirects=False) as client,
        client.stream("GET", url, headers={"accept": "application/samlmetadata+xml"}) as answer,
    ):
        if answer.status_code != 200:
            raise MetadataError(f"HTTP {answer.status_code}")
        body = bytearray()
        for chunk in answer.iter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise MetadataError("larger than 4 MiB")
        return bytes(body)


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cache_path(cache_dir: Path, url: str) -> Path:
    return cache_dir / f"{hashlib.sha256(url.encode()).hexdigest()[:20]}.xml"


@dataclass(slots=True)
class MetadataSource:
    """One `[[saml.service_providers]]` entry's metadata: a file, or a URL and its cache."""

    index: int
    path: Path  # the file itself, or the cached copy of the URL
    url: str | None = None
    ca_file: Path | None = None
    signing_cert: Path | None = None
    refresh_seconds: float = 3600.0
    next_due: float = 0.0

    def current(self, now: float) -> Checked | None:
        """The copy to serve now; None (and one log line) when there is none usable."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            if self.url is None:
                raise
            log.warning("saml_metadata_unavailable", url=self.url, reason="no cached copy yet")
            return None
        try:
            # A cached copy was verified when fetched; its validity still runs out.
            return check(text, self.signing_cert if self.url is None else None, now)
        except MetadataError as exc:
            if self.url is None:
                raise MetadataError(f"{self.path}: {exc}") from None
            log.warning("saml_metadata_unavailable", url=self.url, reason=str(exc))
            return None

    def refresh(self, now: float) -> bool:
        """Fetch and check the URL; True when a new good copy replaced the cached one."""
        if self.url is None:
            return False
        self.next_due = now + self.refresh_seconds
        try:
            checked = check(fetch(self.url, self.ca_file), self.signing_cert, now)
        except (MetadataError, httpx.HTTPError, ssl.SSLError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("saml_metadata_kept_last_good", url=self.url, reason=reason[:200])
            return False
        try:
            if self.path.read_bytes() == checked.text:
                return False
        except FileNotFoundError:
            pass
        write_atomically(self.path, checked.text)
        log.info("saml_metadata_refreshed", url=self.url, entities=list(checked.entities))
        return True
