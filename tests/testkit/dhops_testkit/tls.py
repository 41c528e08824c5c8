"""Test certificates: a self-signed one for TLS listeners (Envoy's front door) and a small
PKI (a CA, a server and a client certificate) for mutual TLS (xds.tls, etcd)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .base import HOST


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    days: int,
    *extensions: tuple[x509.ExtensionType, bool],
) -> x509.Certificate:
    """A certificate for `key`, signed by `issuer_key`, valid from 5 minutes ago for `days`."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


LOOPBACK_NAMES = (
    x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
    ),
    False,
)
CA = (x509.BasicConstraints(ca=True, path_length=None), True)


def self_signed_certificate(
    workdir: Path, name: str = "localhost", other_key: bool = False
) -> tuple[Path, Path]:
    """envoy-cert.pem and envoy-key.pem in `workdir`, valid for localhost and 127.0.0.1 (it
    is its own CA, so clients can trust it directly). other_key=True writes a key that does
    not match the certificate, for the roles' mismatch checks."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    cert = _certificate(subject, key, subject, key, 2, LOOPBACK_NAMES, CA)
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1())
    return write_pem_pair(cert, key, workdir / "envoy-cert.pem", workdir / "envoy-key.pem")


@dataclass(frozen=True)
class Pki:
    """A test CA with a server certificate (127.0.0.1) and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_pki(workdir: Path) -> Pki:
    """ca.pem, server.pem/.key and client.pem/.key in `workdir` (mutual TLS on loopback)."""
    workdir.mkdir(parents=True, exist_ok=True)

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        return write_pem_pair(cert, key, workdir / f"{stem}.pem", workdir / f"{stem}.key")

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("dhops test CA")
    ca = _certificate(ca_name, ca_key, ca_name, ca_key, 1, CA)
    ca_path = write("ca", ca, ca_key)[0]

    def leaf(cn: str, usage) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = (x509.ExtendedKeyUsage([usage]), False)
        return write(
            cn, _certificate(_name(cn), key, ca_name, ca_key, 1, LOOPBACK_NAMES, usages), key
        )

    server = leaf("server", ExtendedKeyUsageOID.SERVER_AUTH)
    client = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(ca_path, *server, *client)


def write_pem_pair(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path, key_path: Path
) -> tuple[Path, Path]:
    """A certificate and its (unencrypted PKCS#8) key as PEM files."""
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
