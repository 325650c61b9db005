"""https and wss from the server itself (``--tls-cert`` / ``--tls-key``): the page, signaling and a call over
TLS with a certificate made here, plain connections refused, bad certificates refused before serving."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import urllib.request

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gramcast.cli import main
from gramcast.server.app import tls_context
from gramcast.server.client import GramcastClient
from gramcast.server.synthetic import ArrayVideoTrack, SineAudioTrack
from gramcast.server.tokens import mint_token
from servers import running_server

SECRET = b"tls-test-secret-0123456789abcdef"


def write_self_signed(folder, name="cert", passphrase: bytes | None = None):
    """A certificate for 127.0.0.1 and localhost and its key, as PEM files; returns their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gramcast test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return cert_path, key_path


@pytest.fixture()
def tls_files(tmp_path):
    """The server's certificate and key (``ServerConfig`` fields), and a client context that trusts them."""
    cert, key = write_self_signed(tmp_path)
    return {"tls_cert": cert, "tls_key": key}, ssl.create_default_context(cafile=str(cert))


async def test_page_signaling_and_a_call_over_tls(tls_files):
    files, trusting = tls_files
    async with running_server(SECRET, **files) as (server, _):
        port = server.config.port
        assert server.url == f"https://127.0.0.1:{port}/"
        page = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url, context=trusting).read())
        assert b"gramcast" in page
        ws = f"wss://127.0.0.1:{port}/ws"
        with pytest.raises(ssl.SSLCertVerificationError):   # a client that does not trust the certificate
            async with GramcastClient(ws, mint_token(SECRET, "tls", "x"), "tls"):
                pass
        with pytest.raises(Exception):                     # plain websocket to a TLS port
            async with GramcastClient(f"ws://127.0.0.1:{port}/ws", mint_token(SECRET, "tls", "y"), "tls"):
                pass
        async with GramcastClient(ws, mint_token(SECRET, "tls", "a"), "tls", ssl_context=trusting) as a, \
                   GramcastClient(ws, mint_token(SECRET, "tls", "b"), "tls", ssl_context=trusting) as b:
            await a.publish(ArrayVideoTrack([np.full((64, 64, 3), (40, 40, 220), np.uint8)] * 4), SineAudioTrack())
            video, _ = await b.subscribe(await b.wait_for_peer())
            for _ in range(5):
                frame = await asyncio.wait_for(video.recv(), 15)
            mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(0)
            assert mean[2] > 150 and mean[0] < 100, mean


async def test_the_web_page_over_https_joins_with_wss(tls_files, tmp_path):
    from browser import chromium_page, green_camera_file, join_link, server_with_publisher

    files, trusting = tls_files
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET, ssl_context=trusting, **files) as (server, py):
        # The test's own certificate authority is not the browser's: accept it as a user would.
        async with chromium_page(cam, extra_args=["--ignore-certificate-errors"]) as page:
            await page.goto(join_link(server, SECRET))
            await page.wait_for_function(f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10",
                                         timeout=20000)
            assert await page.evaluate("window.gramcast.ws.url") == f"wss://127.0.0.1:{server.config.port}/ws"


def test_bad_certificates_are_refused_before_serving(tmp_path, capsys):
    cert, key = write_self_signed(tmp_path, "a")
    other_cert, other_key = write_self_signed(tmp_path, "b")
    locked_cert, locked_key = write_self_signed(tmp_path, "locked", passphrase=b"hunter2")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert isinstance(tls_context(cert, key), ssl.SSLContext) and tls_context(None, None) is None
    cases = [
        ((cert, None), "both a certificate and its private key (--tls-cert and --tls-key)"),
        ((tmp_path / "missing.pem", key), f"no certificate file {tmp_path / 'missing.pem'}"),
        ((cert, other_key), "the private key it was issued for"),
        ((garbage, key), "the private key it was issued for"),
        ((locked_cert, locked_key), "is encrypted"),
    ]
    for (c, k), words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            tls_context(c, k)
    # through the command: exit 2 and one line, before the (missing) avatar is read
    assert main(["serve", "--avatar", str(tmp_path / "none.gca"), "--tls-cert", str(cert),
                 "--tls-key", str(other_key)]) == 2
    err = capsys.readouterr().err.strip()
    assert "the private key it was issued for" in err and len(err.splitlines()) == 1
