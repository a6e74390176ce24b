"""IdP signing-key rollover with a real SP. With `next_key_file`/`next_cert_file` the bridge
publishes the next certificate beside the current one; mod_auth_mellon loads that metadata and
signs a patron in (current key). The operator moves the next pair over the current one and
reloads: the bridge signs with the new key at once, publishes a fresh next certificate, and
mellon, still on the metadata it loaded before the rollover, accepts the new signatures."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.federation.mellon import (
    Sp,
    continue_to_the_page,
    federation,
    mellon,
    sign_in_to_the_form,
)
from tests.federation.test_apache_openidc import browser, shot

__all__ = ["browser"]
pytestmark = pytest.mark.browser

NEXT = 'next_key_file = "saml-next-key.pem"\nnext_cert_file = "saml-next-cert.pem"'


def certificates(xml: str) -> list[str]:
    found = re.findall(r"<(?:\w+:)?X509Certificate>(.*?)</(?:\w+:)?X509Certificate>", xml, re.S)
    return ["".join(c.split()) for c in found]


def pem_body(path: Path) -> str:
    return "".join(line for line in path.read_text().splitlines() if "-----" not in line)


def test_rollover_to_the_published_next_key(tmp_path: Path, browser: Browser) -> None:
    # No encryption key for this SP: the signature (and its certificate) is readable on the wire.
    with federation(tmp_path, [Sp(key_use="signing")], saml=NEXT) as fed:
        old, upcoming = (
            pem_body(tmp_path / "saml-cert.pem"),
            pem_body(tmp_path / "saml-next-cert.pem"),
        )
        published = certificates(httpx.get(f"{fed.issuer}/saml/metadata").text)
        assert published == [old, upcoming]
        with mellon(fed) as apache:  # mellon trusts both from here on
            page = browser.new_context(locale="en-US").new_page()
            sign_in_to_the_form(page, f"{apache}/protected/index.html")
            continue_to_the_page(page)

            os.replace(tmp_path / "saml-next-key.pem", tmp_path / "saml-key.pem")
            os.replace(tmp_path / "saml-next-cert.pem", tmp_path / "saml-cert.pem")
            answer = fed.daemon.cli("reload")
            assert answer.returncode == 0, answer.stderr
            deadline = time.monotonic() + 60
            while certificates(httpx.get(f"{fed.issuer}/saml/metadata").text)[0] != upcoming:
                assert time.monotonic() < deadline, "the reload did not switch keys"
                time.sleep(0.1)
            after = certificates(httpx.get(f"{fed.issuer}/saml/metadata").text)
            assert after[0] == upcoming and after[1] not in (old, upcoming)  # a fresh next

            page = browser.new_context(locale="en-US").new_page()
            wire = sign_in_to_the_form(page, f"{apache}/protected/index.html")
            assert certificates(wire) == [upcoming]  # signed by the new key
            continue_to_the_page(page)
            shot(page, "19-saml-after-key-rollover")

        def stale(text: str) -> str:  # metadata from before the next key was published
            pattern = r"(<(?:\w+:)?X509Certificate>).*?(</(?:\w+:)?X509Certificate>)"
            return re.sub(pattern, lambda m: m.group(1) + old + m.group(2), text, flags=re.S)

        with mellon(fed, stale) as apache:  # an SP that never saw the new certificate
            page = browser.new_context(locale="en-US").new_page()
            sign_in_to_the_form(page, f"{apache}/protected/index.html")
            page.get_by_role("button", name="Continue").click()
            expect(page.locator("#affiliation")).to_have_count(0)
        assert "Failed to verify signature" in (fed.daemon.dir / "apache-error.log").read_text()
