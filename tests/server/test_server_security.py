"""API keys, TLS and mTLS, with certificates made in the test by `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from srv_helpers import collect, running, target

from trt_gateway.v1 import gateway_pb2 as pb
from trt_gateway.v1 import gateway_pb2_grpc as pb_grpc

# -- API keys ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def keyed():
    async with running(server={"api_keys": ["k1", "k2"]}) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield server, channel


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer nope"),), (("authorization", "k1"),), (("authorization", "Bearer k1x"),),
     (("authorization", "Basic k1"),), (("x-api-key", "k1"),)],
    ids=["none", "wrong", "no-scheme", "prefix", "basic", "other-header"],
)
async def test_missing_or_wrong_key_is_unauthenticated(keyed, metadata) -> None:
    server, channel = keyed
    stub = pb_grpc.GatewayStub(channel)
    calls = [
        stub.Generate(pb.GenerateRequest(text="x"), metadata=metadata),
        collect(stub.GenerateStream(pb.GenerateRequest(text="x"), metadata=metadata)),
        stub.ListModels(pb.ListModelsRequest(), metadata=metadata),
        stub.Abort(pb.AbortRequest(request_id="x"), metadata=metadata),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in err.value.details()
    # Refused before the servicer: nothing was counted or run.
    assert server.metrics.registry.get_sample_value(
        "trt_gateway_requests_total", {"method": "Generate", "code": "OK"}
    ) is None


@pytest.mark.parametrize("key", ["k1", "k2"])
async def test_valid_key_is_accepted(keyed, key) -> None:
    _, channel = keyed
    stub = pb_grpc.GatewayStub(channel)
    auth = (("authorization", f"Bearer {key}"),)
    r = await stub.Generate(pb.GenerateRequest(text="ok"), metadata=auth)
    assert r.outputs[0].text == "ok"
    chunks = await collect(stub.GenerateStream(pb.GenerateRequest(text="ok"), metadata=auth))
    assert "".join(c.text for c in chunks) == "ok"


async def test_health_and_reflection_need_no_key(keyed) -> None:
    _, channel = keyed
    r = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
    assert r.status == health_pb2.HealthCheckResponse.SERVING
    call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    (answer,) = [a async for a in call]
    assert "trt_gateway.v1.Gateway" in {s.name for s in answer.list_services_response.service}


# -- TLS / mTLS ----------------------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: bytes
    server_cert: Path
    server_key: Path
    ca_file: Path
    client_cert: bytes
    client_key: bytes
    other_ca: bytes
    other_client_cert: bytes
    other_client_key: bytes


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, san=None, usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _cert(cn, key, cn, key, ca=True)


def _leaf(cn: str, ca_key, ca_cn: str, **kwargs):
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _cert(cn, key, ca_cn, ca_key, **kwargs)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = _ca("test-ca")
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    srv_key, srv = _leaf("localhost", ca_key, "test-ca", san=san, usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    cli_key, cli = _leaf("client-1", ca_key, "test-ca", usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    other_ca_key, other_ca = _ca("other-ca")
    other_key, other = _leaf("intruder", other_ca_key, "other-ca", usage=[ExtendedKeyUsageOID.CLIENT_AUTH])
    (d / "server.pem").write_bytes(_pem(srv))
    (d / "server.key").write_bytes(_pem_key(srv_key))
    (d / "ca.pem").write_bytes(_pem(ca))
    return Pki(
        ca=_pem(ca), server_cert=d / "server.pem", server_key=d / "server.key", ca_file=d / "ca.pem",
        client_cert=_pem(cli), client_key=_pem_key(cli_key),
        other_ca=_pem(other_ca), other_client_cert=_pem(other), other_client_key=_pem_key(other_key),
    )


async def _generate(channel: grpc.aio.Channel) -> str:
    r = await pb_grpc.GatewayStub(channel).Generate(pb.GenerateRequest(text="secure"), timeout=5)
    return r.outputs[0].text


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await _generate(channel)
    return err.value.code()


async def test_tls(pki: Pki) -> None:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
    async with running(server={"tls": tls}) as server:
        creds = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        async with grpc.aio.secure_channel(target(server), creds) as channel:  # verified by the IP SAN
            assert await _generate(channel) == "secure"
        async with grpc.aio.secure_channel(f"localhost:{server.port}", creds) as channel:  # and by the DNS SAN
            assert await _generate(channel) == "secure"
        async with grpc.aio.insecure_channel(target(server)) as channel:  # plaintext to a TLS port
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
        untrusted = grpc.ssl_channel_credentials(root_certificates=pki.other_ca)
        async with grpc.aio.secure_channel(target(server), untrusted) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


async def test_mtls(pki: Pki) -> None:
    tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key), "client_ca_file": str(pki.ca_file)}
    async with running(server={"tls": tls}) as server:
        good = grpc.ssl_channel_credentials(pki.ca, private_key=pki.client_key, certificate_chain=pki.client_cert)
        async with grpc.aio.secure_channel(target(server), good) as channel:
            assert await _generate(channel) == "secure"
        no_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        async with grpc.aio.secure_channel(target(server), no_cert) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE
        foreign = grpc.ssl_channel_credentials(
            pki.ca, private_key=pki.other_client_key, certificate_chain=pki.other_client_cert
        )
        async with grpc.aio.secure_channel(target(server), foreign) as channel:
            assert await _refused(channel) == grpc.StatusCode.UNAVAILABLE


# -- tenants: ownership of requests, admin scope, scope-filtered listings (issue #20.1) ---------------------------------

TENANTS = {
    "api_keys": ["root"],
    "scoped_api_keys": [
        {"key": "alice", "adapters": ["", "a-one"]},
        {"key": "bob", "adapters": ["", "b-one"]},
        {"key": "bob-ops", "adapters": ["b-one", "b-two"], "admin": True},
        {"key": "nobody", "models": ["some-other-model"]},
    ],
}


def _auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _write_adapter(directory: Path) -> None:
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}')


@pytest.fixture
async def tenants(tmp_path):
    for name in ("a-one", "b-one", "b-two"):
        _write_adapter(tmp_path / name)
    lora = {"adapter_roots": [str(tmp_path)], "adapters": {"a-one": "a-one", "b-one": "b-one"}}
    executor = {"name": "echo", "options": {"token_delay_s": 0.02}, "lora": lora}
    async with running(server=TENANTS, executor=executor) as server:
        async with grpc.aio.insecure_channel(target(server)) as channel:
            yield server, pb_grpc.GatewayStub(channel)


async def _rpc_error(coro) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value


def _long(request_id: str) -> pb.GenerateRequest:
    return pb.GenerateRequest(text="abcdefgh", request_id=request_id,
                              stopping=pb.StoppingCriteria(max_tokens=40, ignore_eos=True))


async def test_a_key_cannot_abort_or_detect_another_keys_request(tenants) -> None:
    server, stub = tenants
    alice = stub.GenerateStream(_long("job-1"), metadata=_auth("alice"))
    first = await alice.read()  # running now
    assert first.request_id == "job-1"
    # Another tenant: the id is not found, aborting it does nothing, and running the same id is allowed.
    assert not (await stub.Abort(pb.AbortRequest(request_id="job-1"), metadata=_auth("bob"))).found
    assert not (await stub.Abort(pb.AbortRequest(request_id="job-1"), metadata=_auth("root"))).found
    bob = await stub.Generate(pb.GenerateRequest(text="mine", request_id="job-1"), metadata=_auth("bob"))
    assert bob.request_id == "job-1" and bob.outputs[0].text == "mine"
    chunks = [first]
    while (chunk := await alice.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    assert chunks[-1].finish_reason == pb.FINISH_REASON_LENGTH  # not CANCELLED: bob's abort did not reach it
    assert {c.request_id for c in chunks} == {"job-1"}  # the namespace never shows


async def test_a_key_aborts_its_own_request_and_its_duplicate_ids_are_refused(tenants) -> None:
    _, stub = tenants
    alice = stub.GenerateStream(_long("job-2"), metadata=_auth("alice"))
    await alice.read()
    err = await _rpc_error(stub.Generate(pb.GenerateRequest(text="x", request_id="job-2"), metadata=_auth("alice")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "'job-2'" in err.details() and "k1:" not in err.details()
    assert (await stub.Abort(pb.AbortRequest(request_id="job-2"), metadata=_auth("alice"))).found
    last = None
    while (chunk := await alice.read()) is not grpc.aio.EOF:
        last = chunk
    assert last is not None and last.finish_reason == pb.FINISH_REASON_CANCELLED


@pytest.mark.parametrize("key", ["alice", "bob"])
async def test_adapter_lifecycle_needs_an_admin_key(tenants, key) -> None:
    _, stub = tenants
    own = "a-one" if key == "alice" else "b-one"
    for call in (stub.LoadAdapter(pb.LoadAdapterRequest(name=own, path="b-two"), metadata=_auth(key)),
                 stub.UnloadAdapter(pb.UnloadAdapterRequest(name=own), metadata=_auth(key))):
        err = await _rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "admin" in err.details()
    names = [a.name for a in (await stub.ListAdapters(pb.ListAdaptersRequest(), metadata=_auth("root"))).adapters]
    assert names == ["a-one", "b-one"]


async def test_a_scoped_admin_key_manages_only_its_own_adapters(tenants) -> None:
    _, stub = tenants
    ops = _auth("bob-ops")
    info = await stub.LoadAdapter(pb.LoadAdapterRequest(name="b-two", path="b-two"), metadata=ops)
    assert info.path.endswith("b-two")  # an admin key sees server paths
    err = await _rpc_error(stub.UnloadAdapter(pb.UnloadAdapterRequest(name="a-one"), metadata=ops))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    await stub.UnloadAdapter(pb.UnloadAdapterRequest(name="b-two"), metadata=ops)
    await stub.LoadAdapter(pb.LoadAdapterRequest(name="b-two", path="b-two"), metadata=_auth("root"))


async def test_listings_show_only_what_the_key_may_use_and_no_paths(tenants) -> None:
    _, stub = tenants
    listed = (await stub.ListAdapters(pb.ListAdaptersRequest(), metadata=_auth("alice"))).adapters
    assert [(a.name, a.path) for a in listed] == [("a-one", "")]
    listed = (await stub.ListAdapters(pb.ListAdaptersRequest(), metadata=_auth("root"))).adapters
    assert [a.name for a in listed] == ["a-one", "b-one"] and all(a.path for a in listed)
    assert [m.name for m in (await stub.ListModels(pb.ListModelsRequest(), metadata=_auth("alice"))).models] == ["echo"]
    nobody = _auth("nobody")
    assert list((await stub.ListModels(pb.ListModelsRequest(), metadata=nobody)).models) == []
    # Refused alike whether the model exists or not, so a key cannot probe for models outside its scope.
    for call in (stub.GetModelInfo(pb.GetModelInfoRequest(model="echo"), metadata=nobody),
                 stub.GetModelInfo(pb.GetModelInfoRequest(model="ghost"), metadata=nobody),
                 stub.Tokenize(pb.TokenizeRequest(model="echo", text="hi"), metadata=nobody),
                 stub.ListAdapters(pb.ListAdaptersRequest(model="echo"), metadata=nobody)):
        err = await _rpc_error(call)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
    err = await _rpc_error(stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=nobody))  # the default model
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "echo" not in err.details()
    err = await _rpc_error(stub.GetModelInfo(pb.GetModelInfoRequest(model="ghost"), metadata=_auth("alice")))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_http_models_and_adapter_names_follow_the_key(tmp_path) -> None:
    import httpx

    for name in ("a-one", "b-one"):
        _write_adapter(tmp_path / name)
    lora = {"adapter_roots": [str(tmp_path)], "adapters": {"a-one": "a-one", "b-one": "b-one"}}
    server_cfg = {**TENANTS, "http": True, "http_port": 0}
    async with running(server=server_cfg, executor={"name": "echo", "lora": lora}) as server:
        base = f"http://127.0.0.1:{server.http_port}/v1"
        async with httpx.AsyncClient(base_url=base) as http:
            def auth(key: str) -> dict[str, str]:
                return {"authorization": f"Bearer {key}"}

            ids = [m["id"] for m in (await http.get("/models", headers=auth("alice"))).json()["data"]]
            assert ids == ["echo", "a-one"]
            assert (await http.get("/models", headers=auth("nobody"))).json()["data"] == []
            # Bob's adapter is not found for alice (not "forbidden": that would say it exists); hers works.
            body = {"model": "b-one", "prompt": "hi", "max_tokens": 2}
            r = await http.post("/completions", json=body, headers=auth("alice"))
            assert r.status_code == 404 and "b-one" not in json.dumps(r.json()["error"].get("message", "")[-40:])
            r = await http.post("/completions", json={**body, "model": "a-one"}, headers=auth("alice"))
            assert r.status_code == 200, r.text
