"""Certificates with chosen validity windows, for expired / not-yet-valid / foreign-CA faults.

Built on tests/agent/certs.py (its CA and PEM writer); only the validity window and the
issuing CA change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.agent.certs import Issued, _ca, _write

if TYPE_CHECKING:
    from pathlib import Path

SERVER_NAME = "broker.test"


@dataclass(frozen=True)
class FaultPki:
    """A CA file plus certificates for the broker and the hub."""

    ca_file: Path
    server: Issued
    client: Issued


def _issue(
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    common_name: str,
    usage: x509.ObjectIdentifier,
    not_before: datetime,
    not_after: datetime,
    dns_names: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns_names:
        names = [x509.DNSName(n) for n in dns_names]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def make_fault_pki(
    directory: Path,
    *,
    server_valid_from: datetime | None = None,
    server_valid_until: datetime | None = None,
    client_from_other_ca: bool = False,
) -> FaultPki:
    """A CA, a server cert for ``broker.test`` valid as asked, and a hub client cert.

    ``client_from_other_ca`` signs the client certificate with an unrelated CA, so a
    broker that requires client certificates rejects it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca = _ca("Fault Test CA")
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    server = _issue(
        ca,
        SERVER_NAME,
        ExtendedKeyUsageOID.SERVER_AUTH,
        server_valid_from or now - timedelta(minutes=5),
        server_valid_until or now + timedelta(days=1),
        (SERVER_NAME,),
    )
    client_ca = _ca("Stranger CA") if client_from_other_ca else ca
    client = _issue(
        client_ca,
        "hub-fault",
        ExtendedKeyUsageOID.CLIENT_AUTH,
        now - timedelta(minutes=5),
        now + timedelta(days=1),
    )
    return FaultPki(
        ca_file, _write(directory, "server", *server), _write(directory, "client", *client)
    )
