"""API keys, TLS and mTLS, with certificates made here (a CA, a server certificate for localhost / 127.0.0.1, and a
client certificate), against a real gateway, with the sync and the async client."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from client_helpers import serve
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trt_gateway import errors

FAST_FAIL = {"max_retries": 0, "timeout": 5.0}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    **kind: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=kind.get("ca", False), path_length=None), critical=True)
    )
    if kind.get("server"):
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if kind.get("client"):
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files: ca.pem, server.pem / server.key, client.pem / client.key, and other-ca.pem (an unrelated CA)."""
    out = tmp_path_factory.mktemp("pki")
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = out / name
        files[name].write_bytes(data)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("test-ca", ca_key, None, ca=True)
    write("ca.pem", ca.public_bytes(serialization.Encoding.PEM))
    other_key = ec.generate_private_key(ec.SECP256R1())
    write("other-ca.pem", _issue("other-ca", other_key, None, ca=True).public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(who, key, (ca.subject, ca_key), **{who: True})
        write(f"{who}.pem", cert.public_bytes(serialization.Encoding.PEM))
        write(
            f"{who}.key",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    return files


async def test_api_key(connect):
    async with serve(server={"api_keys": ["secret", "other"]}) as server:
        with pytest.raises(errors.Unauthenticated):
            await connect(server).generate("hi")
        with pytest.raises(errors.Unauthenticated):
            await connect(server, api_key="wrong").models()
        with pytest.raises(errors.Unauthenticated):
            async for _ in connect(server).stream("hi"):
                pass
        client = connect(server, api_key="secret")
        assert (await client.generate("hi")).text == "hi"
        assert "".join([c.text async for c in client.stream("hi")]) == "hi"
        assert await connect(server).health() == "SERVING"  # probes need no key


async def test_tls_with_a_private_ca(pki, connect):
    tls = {"cert_file": str(pki["server.pem"]), "key_file": str(pki["server.key"])}
    async with serve(server={"tls": tls}) as server:
        by_path = connect(f"127.0.0.1:{server.port}", root_certificates=str(pki["ca.pem"]))
        assert (await by_path.generate("hi")).text == "hi"
        by_bytes = connect(
            f"127.0.0.1:{server.port}", root_certificates=pki["ca.pem"].read_bytes(), server_name_override="localhost"
        )
        assert "".join([c.text async for c in by_bytes.stream("ok")]) == "ok"
        with pytest.raises(errors.Unavailable):  # plaintext against TLS
            await connect(server, **FAST_FAIL).health()
        with pytest.raises(errors.Unavailable):  # a CA that did not sign the server certificate
            await connect(server, root_certificates=pki["other-ca.pem"], **FAST_FAIL).health()


async def test_mtls_requires_a_client_certificate(pki, connect):
    tls = {
        "cert_file": str(pki["server.pem"]),
        "key_file": str(pki["server.key"]),
        "client_ca_file": str(pki["ca.pem"]),
    }
    async with serve(server={"tls": tls}) as server:
        client = connect(
            server, root_certificates=pki["ca.pem"], client_certificate=pki["client.pem"], client_key=pki["client.key"]
        )
        assert (await client.generate("hi")).text == "hi"
        with pytest.raises(errors.Unavailable):
            await connect(server, root_certificates=pki["ca.pem"], **FAST_FAIL).generate("hi")
