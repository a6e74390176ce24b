"""The SAML identity provider's state: pysaml2's Server built from the SPs' current metadata,
and who was given an assertion in which single sign-on session (for Single Logout; this
process only). The pending sign-ins live in the `[state]` backend (`saml_pending`).

The pysaml2 Server is rebuilt whenever an SP's metadata changes (a URL refetched, a file
re-read on reload, a copy's validUntil passed) and swapped in as one `Loaded` value, so a
request sees one consistent pair of server and SP table. Encryption follows the SP: its
metadata's encryption certificate and EncryptionMethod (AES-GCM or AES-CBC, the key by
RSA-OAEP), where pysaml2 itself would use Triple-DES.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, element_to_extension_element
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, AttributeValue, NameID
from saml2.server import Server
from saml2.sigver import RSA_OAEP_MGF1P, get_pem_wrapped_unwrapped, pre_encryption_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

from bridge.federation.grants import Expiring
from bridge.federation.saml_metadata import MetadataError, MetadataSource
from bridge.federation.saml_settings import SamlSettings, ServiceProvider
from bridge.tls import generate_self_signed

log = structlog.get_logger("bridge.federation.saml")

# name → (xmlenc algorithm URI, xmlsec1 session key)
ALGORITHMS = {
    "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", "aes-256"),
    "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "aes-128"),
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
}
BY_URI = {uri: name for name, (uri, _) in ALGORITHMS.items()}
DEFAULT_ALGORITHM = "aes256-cbc"  # when the SP's metadata names none: every SP can do CBC
TARGETED_ID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.10"  # eduPersonTargetedID


def read_or_create_identity(key_file: Path, cert_file: Path, host: str) -> None:
    """An RSA key (0600) and a ten-year self-signed certificate for signing, on first start
    (SAML metadata pins the certificate itself, so a CA adds nothing here)."""
    if key_file.exists() and cert_file.exists():
        return
    generate_self_signed(cert_file, key_file, [host], days=3650, rsa_key=True)


class LastAssertion:
    """pysaml2's session storage, reduced to what we use: the assertion just built in this
    thread (for its SessionIndex). pysaml2's default keeps every assertion forever."""

    def __init__(self) -> None:
        self.local = threading.local()

    def store_assertion(self, assertion: Any, to_sign: Any) -> None:
        self.local.assertion = assertion

    def session_index(self) -> str:
        assertion: Any = self.local.assertion
        return str(assertion.authn_statement[0].session_index)

    def get_assertion(self, cid: str) -> None:
        return None

    def get_authn_statements(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    def remove_authn_statements(self, name_id: Any) -> None:
        return None


class SamlServer(Server):  # type: ignore[misc]  # pysaml2 is untyped
    encryption: dict[str, str]

    def choose_session_storage(self) -> LastAssertion:
        return LastAssertion()

    def setup_assertion(self, authn: Any, sp_entity_id: str, *args: Any, **kwargs: Any) -> Any:
        """eduPersonTargetedID in its SAML 2.0 form, a persistent NameID qualified by both
        entityIDs (the MACE-Dir profile; Shibboleth SPs decode it so), where pysaml2 leaves
        the qualifiers out."""
        assertion = super().setup_assertion(authn, sp_entity_id, *args, **kwargs)
        for statement in getattr(assertion, "attribute_statement", None) or []:
            for attribute in statement.attribute:
                if attribute.name == TARGETED_ID:
                    attribute.attribute_value = [
                        AttributeValue(
                            extension_elements=[
                                element_to_extension_element(
                                    NameID(
                                        format=NAMEID_FORMAT_PERSISTENT,
                                        name_qualifier=self.config.entityid,
                                        sp_name_qualifier=sp_entity_id,
                                        text=_text_of(value),
                                    )
                                )
                            ]
                        )
                        for value in attribute.attribute_value
                    ]
        return assertion

    def _encrypt_assertion(
        self, encrypt_cert: Any, sp_entity_id: str, response: Any, node_xpath: Any = None
    ) -> str:
        """The SP's own choice of data encryption (pysaml2 would use Triple-DES)."""
        uri, session_key = ALGORITHMS[self.encryption_for(sp_entity_id)]
        certs = encryption_certs(self, sp_entity_id)
        wrapped, unwrapped = get_pem_wrapped_unwrapped(certs[0])
        template = pre_encryption_part(msg_enc=uri, key_enc=RSA_OAEP_MGF1P, encrypt_cert=unwrapped)
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
            f.write(wrapped)
            f.flush()
            text: str = self.sec.encrypt_assertion(
                response, f.name, template, session_key, node_xpath
            )
        return text

    def encryption_for(self, entity: str) -> str:
        configured = getattr(self, "encryption", {}).get(entity)
        if configured is not None:
            return str(configured)
        for key in self.metadata[entity].get("spsso_descriptor", [{}])[0].get("key_descriptor", []):
            if key.get("use") in (None, "encryption"):
                for method in key.get("encryption_method", []):
                    name = BY_URI.get(method.get("algorithm", ""))
                    if name is not None:
                        return name
        return DEFAULT_ALGORITHM


def _text_of(value: Any) -> str:
    """The value pysaml2 put in an AttributeValue: its text, or its NameID child's."""
    if value.text:
        return str(value.text)
    children = value.extension_elements or []
    return str(children[0].text) if children else ""


def encryption_certs(server: Server, entity: str) -> list[str]:
    return [cert for _, cert in server.metadata.certs(entity, "spsso", "encryption")]


@dataclass(frozen=True, slots=True)
class Loaded:
    """One consistent view: the pysaml2 server and the SPs its metadata describes."""

    server: SamlServer
    sps: dict[str, ServiceProvider]
    expires: float | None  # the earliest validUntil among the copies loaded
    metadata: str  # ours, made once from the keys this server signs with (no disk per request)

    def encrypts(self, entity: str) -> bool:
        wanted = self.sps[entity].encrypt_assertions
        if wanted is None:
            return bool(encryption_certs(self.server, entity))
        return wanted

    def name_id(self, entity: str, pairwise: str, transient: str) -> NameID:
        if self.sps[entity].name_id == "persistent":
            return NameID(format=NAMEID_FORMAT_PERSISTENT, text=pairwise)
        return NameID(format=NAMEID_FORMAT_TRANSIENT, text=transient)


@dataclass(frozen=True, slots=True)
class Pending:
    sp: str
    resp_args: dict[str, Any]
    relay_state: str


@dataclass(frozen=True, slots=True)
class Participant:
    """An SP that was given an assertion in a single sign-on session (for Single Logout)."""

    entity: str
    name_id: NameID
    session_index: str


@dataclass(slots=True)
class IdentityProvider:
    settings: SamlSettings
    base: str
    key_file: Path
    cert_file: Path
    sources: list[MetadataSource]
    next_pair: tuple[Path, Path] | None = None  # (key, certificate) of the key rollover
    loaded: Loaded | None = None
    sessions: Expiring[list[Participant]] = field(default_factory=Expiring)  # by SSO cookie
    logouts: Expiring[Any] = field(default_factory=Expiring)  # Single Logout in progress
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def build(
        cls,
        settings: SamlSettings,
        issuer: str,
        key_file: Path,
        cert_file: Path,
        sources: list[MetadataSource],
        next_pair: tuple[Path, Path] | None = None,
    ) -> IdentityProvider:
        """Blocking (fetches metadata URLs that have no cached copy yet)."""
        idp = cls(settings, issuer, key_file, cert_file, sources, next_pair)
        now = time.time()
        for source in sources:
            if source.url is not None and not source.path.exists():
                source.refresh(now)
        idp.rebuild(now, strict=True)
        return idp

    @property
    def current(self) -> Loaded:
        assert self.loaded is not None
        return self.loaded

    def config(self, metadata_files: list[str]) -> dict[str, Any]:
        base = self.base
        return {
            "entityid": f"{base}/saml/metadata",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (f"{base}/saml/sso/redirect", BINDING_HTTP_REDIRECT),
                            (f"{base}/saml/sso/post", BINDING_HTTP_POST),
                        ],
                        "single_logout_service": [
                            (f"{base}/saml/slo/redirect", BINDING_HTTP_REDIRECT),
                            (f"{base}/saml/slo/post", BINDING_HTTP_POST),
                        ],
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT],
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": self.settings.assertion_minutes},
                            "name_form": "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
                        }
                    },
                    "sign_assertion": True,
                    "want_authn_requests_signed": self.settings.want_signed_requests,
                }
            },
            "signing_algorithm": SIG_RSA_SHA256,  # pysaml2's default is still RSA-SHA1
            "digest_algorithm": DIGEST_SHA256,
            "key_file": str(self.key_file),
            "cert_file": str(self.cert_file),
            "additional_cert_files": [str(self.next_pair[1])] if self.next_pair else None,
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"local": metadata_files},
        }

    def rebuild(self, now: float, *, strict: bool = False) -> None:
        """Load every usable metadata copy into a fresh pysaml2 server and swap it in.

        `strict` (at start): a bad metadata *file* is a configuration error. Later it is
        logged and that SP left out; a URL without a usable copy is always left out."""
        if self.next_pair is not None:  # after a rollover: the one after it
            host = urlsplit(self.base).hostname or ""
            read_or_create_identity(self.next_pair[0], self.next_pair[1], host)
        files: list[str] = []
        sps: dict[str, ServiceProvider] = {}
        expires: list[float] = []
        for source in self.sources:
            try:
                checked = source.current(now)
            except (MetadataError, OSError) as exc:
                if strict:
                    raise ValueError(str(exc)) from None
                log.warning("saml_metadata_unavailable", file=str(source.path), reason=str(exc))
                continue
            if checked is None:
                continue
            files.append(str(source.path))
            sps.update((e, self.settings.service_providers[source.index]) for e in checked.entities)
            if checked.valid_until is not None:
                expires.append(checked.valid_until)
        server = SamlServer(config=IdPConfig().load(self.config(files)))
        server.encryption = {
            e: sp.encryption_method for e, sp in sps.items() if sp.encryption_method is not None
        }
        for entity, sp in sps.items():
            if sp.encrypt_assertions and not encryption_certs(server, entity):
                message = f"{entity}: encrypt_assertions = true but its metadata has no key"
                if strict:
                    raise ValueError(message)
                log.warning("saml_metadata_unavailable", entity=entity, reason=message)
        text: bytes | str = create_metadata_string(None, server.config, 4, None, None, None)
        ours = text.decode() if isinstance(text, bytes) else text
        self.loaded = Loaded(server, sps, min(expires, default=None), ours)

    def refresh(self, now: float, *, everything: bool) -> None:
        """Refetch the URLs that are due (all of them, and re-read files, on reload)."""
        changed = False
        for source in self.sources:
            if source.url is not None and (everything or now >= source.next_due):
                changed = source.refresh(now) or changed
        expires = self.current.expires
        if changed or everything or (expires is not None and now >= expires):
            self.rebuild(now)

    # -- the schedule: a task on the listener's loop --------------------------------------
    def start_refreshing(self) -> None:
        now = time.time()
        for source in self.sources:
            source.next_due = now + source.refresh_seconds
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._keep_fresh(), name="saml-metadata")

    def reload_requested(self) -> None:
        """A reload: refetch every URL and re-read every file now (from any thread)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.wanted.set)

    async def _keep_fresh(self) -> None:
        while True:
            due = [s.next_due for s in self.sources if s.url is not None]
            if self.current.expires is not None:
                due.append(self.current.expires)
            wait = max(1.0, min(due) - time.time()) if due else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wanted.wait(), wait)
            everything = self.wanted.is_set()
            self.wanted.clear()
            try:
                await asyncio.to_thread(self.refresh, time.time(), everything=everything)
            except Exception:  # the schedule must outlive one bad refresh
                log.exception("saml_metadata_refresh_failed")

    async def aclose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
