"""Certificates and keys for the local control plane: one CA, a serving cert, one client cert per identity."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: CN is the user name, O the groups (as the API server reads them)."""

    file_stem: str
    user: str
    groups: tuple[str, ...] = ()


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class LocalPKI:
    """Writes everything into one directory; creating it twice keeps the existing files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / name

    def ensure(self, clients: list[ClientIdentity]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.path("ca.crt").exists():
            self._create_ca()
        ca_key = serialization.load_pem_private_key(self.path("ca.key").read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.path("ca.crt").read_bytes())
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        if not self.path("apiserver.crt").exists():
            self._issue(
                ca_key, ca_cert, "apiserver", _name("kube-apiserver"), server=True,
                dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                     "kubernetes.default.svc.cluster.local"],
                ips=["127.0.0.1", "10.96.0.1"],
            )
        for client in clients:
            if not self.path(f"{client.file_stem}.crt").exists():
                self._issue(ca_key, ca_cert, client.file_stem, _name(client.user, client.groups), server=False)
        if not self.path("service-account.key").exists():
            # Service-account token signing wants RSA (RS256) by default.
            sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(self.path("service-account.key"), sa_key)
            self.path("service-account.pub").write_bytes(
                sa_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("onair-local-ca")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY * 10)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.path("ca.key"), key)
        _write_cert(self.path("ca.crt"), cert)

    def _issue(
        self,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        stem: str,
        subject: x509.Name,
        *,
        server: bool,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or []]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        _write_key(self.path(f"{stem}.key"), key)
        _write_cert(self.path(f"{stem}.crt"), builder.sign(ca_key, hashes.SHA256()))
