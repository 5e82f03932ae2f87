"""Security options on a real server: API key, TLS, mutual TLS, loopback by default."""
from __future__ import annotations

import datetime
import subprocess
import sys

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from proto import llm_pb2_grpc
from server.auth import authorized
from tests.server.harness import ROOT, request, start_server

KEY = "s3cret-key-for-tests"


def make_cert(name: str, issuer=None, ca: bool = False):
    """(certificate, key) signed by issuer=(cert, key), or self-signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def pem(cert=None, key=None) -> bytes:
    if cert is not None:
        return cert.public_bytes(serialization.Encoding.PEM)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_cert("test-ca", ca=True)
    server = make_cert("localhost", issuer=ca)
    client = make_cert("client", issuer=ca)
    files = {"ca.pem": pem(ca[0]), "server.pem": pem(server[0]), "server.key": pem(key=server[1]),
             "client.pem": pem(client[0]), "client.key": pem(key=client[1])}
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def secure_stub(server, pki, client_cert: bool = False):
    creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes() if client_cert else None,
        certificate_chain=(pki / "client.pem").read_bytes() if client_cert else None)
    channel = grpc.secure_channel(f"localhost:{server.port}", creds)
    return channel, llm_pb2_grpc.LLMServiceStub(channel)


def test_authorized_compares_the_bearer_key():
    assert authorized([("authorization", f"Bearer {KEY}")], KEY)
    assert not authorized([("authorization", "Bearer wrong")], KEY)
    assert not authorized([("authorization", KEY)], KEY)
    assert not authorized([], KEY) and not authorized(None, KEY)


@pytest.fixture(scope="module")
def tls_key_server(fp32_model_dir, pki, tmp_path_factory):
    s = start_server(fp32_model_dir, tmp_path_factory.mktemp("tls-key"), wait=False,
                     args=("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")),
                     env={"LLM_API_KEY": KEY})
    channel, _ = secure_stub(s, pki)
    s.health_stub = health_pb2_grpc.HealthStub(channel)  # health needs no key, but does need TLS
    s.wait_serving()
    yield s
    s.stop()


def test_api_key_required_over_tls_and_health_exempt(tls_key_server, pki):
    channel, stub = secure_stub(tls_key_server, pki)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Generate(request("What is the capital of France?", max_new_tokens=4), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for wrong in ("Bearer nope", KEY, f"Bearer {KEY}x"):
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.GenerateStream(request("hi", max_new_tokens=2), timeout=30, metadata=[("authorization", wrong)]))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    (c,) = stub.Generate(request("What is the capital of France?", max_new_tokens=8), timeout=60,
                         metadata=[("authorization", f"Bearer {KEY}")]).completions
    assert "Paris" in c.text
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    assert KEY not in tls_key_server.log()


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_key_server):
    channel = grpc.insecure_channel(tls_key_server.address)
    with pytest.raises(grpc.RpcError) as caught:
        llm_pb2_grpc.LLMServiceStub(channel).Generate(request("hi", max_new_tokens=2), timeout=5)
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_mutual_tls_requires_a_client_certificate(fp32_model_dir, pki, tmp_path):
    s = start_server(fp32_model_dir, tmp_path, wait=False,
                     args=("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key"),
                           "--tls-client-ca", str(pki / "ca.pem")))
    try:
        channel, _ = secure_stub(s, pki, client_cert=True)
        s.health_stub = health_pb2_grpc.HealthStub(channel)
        s.wait_serving()
        _, with_cert = secure_stub(s, pki, client_cert=True)
        assert with_cert.Generate(request("What is the capital of France?", max_new_tokens=8), timeout=60).completions
        _, without = secure_stub(s, pki, client_cert=False)
        with pytest.raises(grpc.RpcError) as caught:
            without.Generate(request("hi", max_new_tokens=2), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert s.stop() == 0


def test_binds_to_loopback_unless_told(server):
    assert "listening on 127.0.0.1:" in server.log()


@pytest.mark.parametrize(("args", "message"), [
    (("--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"), "tls_cert: no such file"),
    (("--tls-cert", str(ROOT / "Makefile")), "tls_cert and tls_key go together"),
    (("--api-key", " "), "api_key: must not be empty"),
])
def test_bad_security_options_stop_start_up_with_one_line(fp32_model_dir, args, message):
    result = subprocess.run([sys.executable, "-m", "server", "--model", str(fp32_model_dir), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
