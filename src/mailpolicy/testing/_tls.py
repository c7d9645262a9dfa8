"""Certificates for the test server: trusted, for the wrong host, or self-signed."""

from __future__ import annotations

import ipaddress
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "mx.test")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSFiles:
    """A server certificate and key (PEM) and the test CA a client should trust.

    Build one with :meth:`issue` (a certificate the test CA issued for the given names),
    :meth:`wrong_host` (issued by the trusted CA, but for another name) or
    :meth:`self_signed` (not issued by the CA at all). A client context from
    :meth:`client_context` verifies like ``ssl.create_default_context()`` but trusts the
    test CA only, so the last two must fail verification.
    """

    cert_chain_pem: bytes
    private_key_pem: bytes
    ca_pem: bytes
    hostnames: tuple[str, ...]

    @classmethod
    def issue(cls, *hostnames: str) -> TLSFiles:
        """A fresh test CA and a certificate it issued for ``hostnames`` (by default
        ``localhost``, ``127.0.0.1`` and ``mx.test``)."""
        import trustme  # noqa: PLC0415 (the testing extra, loaded only when TLS is wanted)

        names = hostnames or DEFAULT_HOSTNAMES
        ca = trustme.CA()
        leaf = ca.issue_cert(*names)
        return cls(
            cert_chain_pem=b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
            private_key_pem=leaf.private_key_pem.bytes(),
            ca_pem=ca.cert_pem.bytes(),
            hostnames=tuple(names),
        )

    @classmethod
    def wrong_host(cls, hostname: str = "wrong.example") -> TLSFiles:
        """Issued by the trusted test CA, for ``hostname`` only: verification fails on the
        name (``localhost``/``127.0.0.1`` do not match)."""
        return cls.issue(hostname)

    @classmethod
    def self_signed(cls, *hostnames: str) -> TLSFiles:
        """A self-signed certificate for ``hostnames``; the client trusts an unrelated test
        CA, so verification fails with "self-signed certificate"."""
        # Lazily, like trustme (which brings cryptography): only tests that want it pay.
        from cryptography import x509  # noqa: PLC0415
        from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
        from cryptography.x509.oid import NameOID  # noqa: PLC0415

        names = hostnames or DEFAULT_HOSTNAMES
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        alt_names: list[x509.GeneralName] = []
        for name in names:
            try:
                alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt_names.append(x509.DNSName(name))
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        unrelated = cls.issue("unrelated.invalid")
        return cls(
            cert_chain_pem=cert.public_bytes(serialization.Encoding.PEM),
            private_key_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            ca_pem=unrelated.ca_pem,
            hostnames=tuple(names),
        )

    def server_context(self) -> ssl.SSLContext:
        """The server side: this certificate, no client certificates requested."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # load_cert_chain reads files only; the key lives on disk for the blink of a call.
        with tempfile.TemporaryDirectory(prefix="mailpolicy-tls-") as directory:
            cert_file = Path(directory, "cert.pem")
            key_file = Path(directory, "key.pem")
            cert_file.write_bytes(self.cert_chain_pem)
            key_file.write_bytes(self.private_key_pem)
            context.load_cert_chain(cert_file, key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context (certificate and host name checked) that trusts the
        test CA instead of the system store."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        return context
