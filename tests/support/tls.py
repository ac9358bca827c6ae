"""Throwaway certificate authorities and certificates, made with the ``openssl`` CLI at run time.

Nothing here is committed: each test session makes its own in a temporary directory. EC P-256
keys keep it fast (about 10 ms a certificate).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki", "openssl_available"]

_DAYS = "2"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def openssl_available() -> bool:
    """Whether the ``openssl`` command is on PATH."""
    return shutil.which("openssl") is not None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class Pki:
    """A CA that signed a server certificate and two client certificates (the bridge's and the
    test's own clients'), and a rogue CA that signed a client certificate the server must refuse.
    """

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    tester_cert: Path
    tester_key: Path
    key_passphrase: str
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", *_CURVE, "-nodes", "-days", _DAYS,
        "-subj", f"/CN={name}", "-keyout", key.name, "-out", cert.name,
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _leaf(
    directory: Path, name: str, ca: tuple[Path, Path], extensions: list[str]
) -> tuple[Path, Path]:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    _openssl(
        "req", *_CURVE, "-nodes", "-subj", f"/CN={name}",
        "-keyout", key.name, "-out", csr.name,
        cwd=directory,
    )  # fmt: skip
    ext_file = directory / f"{name}.ext"
    ext_file.write_text("\n".join(extensions) + "\n")
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name,
        "-CAcreateserial", "-days", _DAYS, "-out", cert.name, "-extfile", ext_file.name,
        cwd=directory,
    )  # fmt: skip
    return cert, key


def make_pki(directory: Path) -> Pki:
    """Make every certificate and key of :class:`Pki` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "test-ca")
    rogue = _ca(directory, "rogue-ca")
    server = _leaf(
        directory,
        "broker",
        ca,
        ["subjectAltName=IP:127.0.0.1,DNS:localhost", "extendedKeyUsage=serverAuth"],
    )
    client_ext = ["extendedKeyUsage=clientAuth"]
    client = _leaf(directory, "bridge-client", ca, client_ext)
    tester = _leaf(directory, "tester-client", ca, client_ext)
    rogue_client = _leaf(directory, "rogue-client", rogue, client_ext)
    passphrase = "not-a-real-passphrase"
    encrypted = directory / "bridge-client.enc.key"
    _openssl(
        "pkcs8", "-topk8", "-in", client[1].name, "-out", encrypted.name,
        "-passout", f"pass:{passphrase}",
        cwd=directory,
    )  # fmt: skip
    return Pki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        client_key_encrypted=encrypted,
        tester_cert=tester[0],
        tester_key=tester[1],
        key_passphrase=passphrase,
        rogue_ca=rogue[0],
        rogue_client_cert=rogue_client[0],
        rogue_client_key=rogue_client[1],
    )
