"""The one place that builds SSL contexts and self-signed certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.files import private_dir

if TYPE_CHECKING:
    from bridge.config import Config


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS 1.2+ server context from PEM files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def listener_context(config: Config, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """A web listener's HTTPS context from its optional `tls_cert`/`tls_key` keys (paths relative
    to the config file); None when it serves plain HTTP (the settings check both-or-neither)."""
    if cert is None or key is None:
        return None
    return server_context(config.path(cert), config.path(key))


def client_context(ca_file: Path | None = None, *, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def generate_self_signed(
    cert_file: Path, key_file: Path, hostnames: list[str], days: int = 365, *, rsa_key: bool = False
) -> None:
    """Write a self-signed EC P-256 certificate and key (for trials; use a real CA in service).
    `rsa_key`: RSA 2048 instead, for XML signatures (SAML), where RSA-SHA256 is what every
    service provider verifies."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if rsa_key
        else ec.generate_private_key(ec.SECP256R1())
    )
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    private_dir(key_file.parent)  # 0700 when the bridge makes it
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.unlink(missing_ok=True)  # a new file gets 0600 whatever the old one had
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def _write_key(key_file: Path, key: ec.EllipticCurvePrivateKey) -> None:
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)  # a new file gets 0600 whatever the old one had
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )


def generate_chain(
    ca_file: Path,
    ca_key_file: Path,
    cert_file: Path,
    key_file: Path,
    hostnames: list[str],
    days: int = 365,
) -> None:
    """Write a private CA and a server certificate it signed (EC P-256, for trials).

    802.1X supplicants verify the RADIUS server's certificate against a CA they were given
    (`ca_cert` in wpa_supplicant, a profile on Apple devices), so a test needs a chain: a CA
    certificate to hand out, and a server certificate with the serverAuth usage that the
    supplicants check."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Patron Bridge test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    for path, item in ((ca_file, ca), (cert_file, cert)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key_file, ca_key)
    _write_key(key_file, key)


def dh_prime_bits(pem: bytes) -> int:
    """The prime size of PEM Diffie-Hellman parameters (`openssl dhparam`); ValueError when
    the data holds none (802.1X `[radius.eap] dh` is checked with it before OpenSSL loads it)."""
    with warnings.catch_warnings():  # cryptography deprecates FFDH; OpenSSL does the DHE
        warnings.simplefilter("ignore")
        params = serialization.load_pem_parameters(pem)
    if not isinstance(params, dh.DHParameters):
        raise ValueError("no DH parameters")
    return params.parameter_numbers().p.bit_length()
