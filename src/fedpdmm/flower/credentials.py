"""Throw-away credentials for a secure local federation, made with the `cryptography` package.

`make_credentials(folder, nodes)` writes:
- `ca.crt` / `ca.key`: a self-signed certificate authority (EC P-384, valid one day);
- `server.pem` / `server.key`: the SuperLink's TLS certificate, signed by the CA, for
  127.0.0.1, ::1 and localhost;
- `supernode-<i>` / `supernode-<i>.pub`: one EC P-384 key pair per SuperNode in OpenSSH format
  (the format `flower-supernode --auth-supernode-private-key` and `flwr supernode register`
  read).
Private keys are written readable by their owner only. Nothing here is fit for a real
deployment: the keys live as long as the folder, which the launcher deletes with the federation.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Credentials:
    """Paths of a local federation's credentials."""

    ca_certificate: Path
    server_certificate: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # private keys; the public key of each is `<path>.pub`

    def public_key(self, node: int) -> Path:
        return self.node_keys[node].with_name(self.node_keys[node].name + ".pub")


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_credentials(folder: Path, nodes: int) -> Credentials:
    """A CA, the SuperLink's certificate and `nodes` SuperNode key pairs, written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + VALIDITY
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedpdmm local federation CA")
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    names = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    paths = Credentials(
        folder / "ca.crt",
        folder / "server.pem",
        folder / "server.key",
        tuple(folder / f"supernode-{node}" for node in range(nodes)),
    )
    paths.ca_certificate.write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(folder / "ca.key", _pem_key(ca_key))
    paths.server_certificate.write_bytes(
        server_certificate.public_bytes(serialization.Encoding.PEM)
    )
    _write_private(paths.server_key, _pem_key(server_key))
    for node in range(nodes):
        write_node_key(paths.node_keys[node])
    return paths


def write_node_key(path: Path) -> Path:
    """A SuperNode key pair: the private key at `path`, the public key at `path.pub` (OpenSSH)."""
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    path.with_name(path.name + ".pub").write_bytes(public + b"\n")
    return path
