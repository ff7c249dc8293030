"""Development PKI for the bureau simulator: one CA, a server and a client certificate.

``ensure_tls(tls_dir, client_cn)`` writes, when missing::

    ca.pem                 self-signed CA (trusted by the gateway and by the simulator)
    server.pem/server.key  127.0.0.1 + localhost (SAN), signed by the CA
    client.pem/client.key  CN=<client_cn>, clientAuth, signed by the CA (gateway identity)

EC P-256 keys, valid for 825 days. Keys are written 0600. Development only: never ship these.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import astuple, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 825


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def tls_files(tls_dir: Path) -> TlsFiles:
    return TlsFiles(
        ca=tls_dir / "ca.pem",
        server_cert=tls_dir / "server.pem",
        server_key=tls_dir / "server.key",
        client_cert=tls_dir / "client.pem",
        client_key=tls_dir / "client.key",
    )


def ensure_tls(tls_dir: Path, client_cn: str = "greenchannel") -> TlsFiles:
    """Create the CA, server and client certificates unless all of them already exist."""
    files = tls_files(tls_dir)
    if all(p.exists() for p in astuple(files)):
        return files
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Green Channel development CA")
    ca = _builder(ca_name, ca_name, ca_key.public_key())
    ca = ca.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    ca_cert = ca.sign(ca_key, hashes.SHA256())
    _write_cert(files.ca, ca_cert)
    _leaf(files.server_cert, files.server_key, ca_cert, ca_key, server=True, cn="127.0.0.1")
    _leaf(files.client_cert, files.client_key, ca_cert, ca_key, server=False, cn=client_cn)
    return files


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Green Channel (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


def _leaf(
    cert_path: Path,
    key_path: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    cn: str,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _builder(_name(cn), ca_cert.subject, key.public_key())
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    )
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _write_cert(cert_path, builder.sign(ca_key, hashes.SHA256()))
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
