"""A private redis-server for one test, started with extra options (a password, TLS), on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import free_port, wait_until

from bot.config import RedisConfig


@dataclass(frozen=True)
class PrivateRedis:
    port: int
    log: Path


def _answers(port: int, password: str | None, tls: TlsFiles | None) -> bool:
    options: dict[str, object] = {"password": password, "socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    if tls is not None:
        options.update(ssl=True, ssl_ca_certs=str(tls.ca), ssl_certfile=str(tls.client_cert),
                       ssl_keyfile=str(tls.client_key))  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, **options)  # type: ignore[arg-type]
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@contextmanager
def private_redis(
    workdir: Path, *options: str, password: str | None = None, tls: TlsFiles | None = None
) -> Iterator[PrivateRedis]:
    """Start redis-server on a free loopback port (TLS only on it when `tls` is given); stop it afterwards.

    The password goes to the server on its standard input (as config), not on its command line."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not on PATH: install Redis (apt-get install redis-server)", pytrace=False)
    port = free_port()
    ports = ["--port", "0", "--tls-port", str(port)] if tls is not None else ["--port", str(port)]
    tls_options = (
        ["--tls-cert-file", str(tls.server_cert), "--tls-key-file", str(tls.server_key),
         "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "yes"]
        if tls is not None else []
    )  # fmt: skip
    config = f"requirepass {password}\n" if password is not None else ""
    log = workdir / f"redis-{port}.log"
    command = [server, "-", "--bind", "127.0.0.1", *ports, "--save", "", "--appendonly", "no", *tls_options, *options]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=workdir, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    assert proc.stdin is not None
    proc.stdin.write(config.encode())
    proc.stdin.close()
    try:
        wait_until(
            lambda: proc.poll() is not None or _answers(port, password, tls),
            timeout=10.0,
            message=f"redis-server on port {port} did not answer; log: {log}",
        )
        assert proc.returncode is None, f"redis-server exited ({proc.returncode}); log: {log}"
        yield PrivateRedis(port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def make_tls_files(folder: Path) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "arbbot test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(name: str, server: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    files = TlsFiles(
        folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem", folder / "client.key"
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_cert, server_key = leaf("127.0.0.1", server=True)
    client_cert, client_key = leaf("arbbot", server=False)
    files.server_cert.write_bytes(server_cert)
    files.server_key.write_bytes(server_key)
    files.client_cert.write_bytes(client_cert)
    files.client_key.write_bytes(client_key)
    return files


def tls_config(server: PrivateRedis, tls: TlsFiles) -> RedisConfig:
    """The Redis config that reaches a TLS-only private server with the client certificate."""
    return RedisConfig(
        url=f"rediss://127.0.0.1:{server.port}/0",
        tls_ca_file=tls.ca,
        tls_cert_file=tls.client_cert,
        tls_key_file=tls.client_key,
    )
