"""A local certificate authority for labs and small sites: one CA, server certificates for the
names and addresses a registry is reached by, client certificates for machines."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 397  # what browsers and most clients accept for a server certificate
ALWAYS_NAMES = ("localhost",)
ALWAYS_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, as PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        cert_path.write_bytes(self.cert_pem)
        # The key is the secret: owner-only from its first byte on disk.
        key_path.touch(mode=0o600, exist_ok=True)
        key_path.chmod(0o600)
        key_path.write_bytes(self.key_pem)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Nimbus"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass
class Authority:
    """A CA certificate and key; issues leaf certificates signed by it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "Nimbus local CA", days: int = CA_DAYS) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path}: not an EC private key")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, cert_path: Path, key_path: Path) -> None:
        Issued(self.cert_pem, _key_pem(self.key)).write(cert_path, key_path)

    def issue_server(
        self,
        names: list[str] | tuple[str, ...] = (),
        addresses: list[str] | tuple[str, ...] = (),
        days: int = LEAF_DAYS,
        not_before: datetime.datetime | None = None,
    ) -> Issued:
        """For a server reached by these names and addresses (and always localhost)."""
        dns = list(dict.fromkeys([*names, *ALWAYS_NAMES]))
        ips = list(dict.fromkeys([*addresses, *ALWAYS_ADDRESSES]))
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        return self._issue(dns[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, days, not_before)

    def issue_client(
        self, common_name: str, days: int = LEAF_DAYS, not_before: datetime.datetime | None = None
    ) -> Issued:
        """For a machine that authenticates as `common_name`."""
        return self._issue(common_name, [], ExtendedKeyUsageOID.CLIENT_AUTH, days, not_before)

    def _issue(
        self,
        common_name: str,
        sans: list[x509.GeneralName],
        usage: x509.ObjectIdentifier,
        days: int,
        not_before: datetime.datetime | None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        # The chain: leaf first, then the CA, as servers send it.
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        return Issued(chain, _key_pem(key))


def local_authority(cert_path: Path, key_path: Path) -> tuple[Authority, bool]:
    """The CA at these paths, made there first if missing (never replaced: clients trust it);
    and whether it was made now."""
    if cert_path.exists() and key_path.exists():
        return Authority.load(cert_path, key_path), False
    authority = Authority.create()
    authority.write(cert_path, key_path)
    return authority, True
