"""A self-signed certificate for 127.0.0.1, made with openssl for one test."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path


def server_certificate(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """The certificate (to trust as ``ca_file``) and a server context that presents it."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context
