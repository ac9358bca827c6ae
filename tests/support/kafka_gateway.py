"""A TLS and SASL front for a plaintext Kafka broker, for tests (Tansu 0.6 has neither usable).

:class:`KafkaGateway` listens on a free loopback port and forwards every connection to the
broker. With ``tls`` it speaks TLS (and, if that context has ``verify_mode=CERT_REQUIRED``,
refuses clients without a certificate from its CA). With ``users`` it is the SASL server, as a
Kafka broker would be: it answers SaslHandshake (v1) and SaslAuthenticate (v0/v1) itself for
PLAIN (RFC 4616), SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, 4096 iterations), forwards
ApiVersions, closes a connection that sends anything else before authenticating, and answers
a bad credential with SASL_AUTHENTICATION_FAILED (58) before closing. After that the bytes flow
untouched. The broker must advertise the gateway's address, or clients would go around it.

What it records (``authenticated``, ``failures``, ``client_certs``) lets a test show which
mechanism, user and client certificate a client really used.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import ssl
import struct
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

__all__ = ["KafkaGateway", "MECHANISMS", "server_tls"]

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
_ITERATIONS = 4096


def server_tls(
    cert: os.PathLike[str], key: os.PathLike[str], client_ca: os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """A server TLS context; with ``client_ca``, clients must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class _AuthFailed(Exception):
    pass


class _Plain:
    def __init__(self, users: dict[str, str]) -> None:
        self.users = users
        self.user = ""

    def step(self, message: bytes) -> tuple[bytes, bool]:
        parts = message.split(b"\0")
        if len(parts) != 3:
            raise _AuthFailed("malformed PLAIN message")
        self.user, password = parts[1].decode(), parts[2].decode()
        expected = self.users.get(self.user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            raise _AuthFailed(f"bad credentials for {self.user!r}")
        return b"", True


class _Scram:
    """The server side of RFC 5802, without channel binding (as Kafka)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.digest = _HASHES[mechanism]
        self.users = users
        self.user = ""
        self.first_bare = ""
        self.server_first = ""
        self.nonce = ""
        self.salted = b""

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.digest).digest()

    def _hash(self, data: bytes) -> bytes:
        return hashlib.new(self.digest, data).digest()

    def step(self, message: bytes) -> tuple[bytes, bool]:
        text = message.decode()
        if not self.server_first:
            if not text.startswith("n,,"):
                raise _AuthFailed("channel binding or authzid not supported")
            self.first_bare = text[3:]
            attrs = dict(part.split("=", 1) for part in self.first_bare.split(","))
            self.user = attrs["n"].replace("=2C", ",").replace("=3D", "=")
            password = self.users.get(self.user)
            if password is None:
                raise _AuthFailed(f"unknown user {self.user!r}")
            salt = os.urandom(16)
            self.salted = hashlib.pbkdf2_hmac(self.digest, password.encode(), salt, _ITERATIONS)
            self.nonce = attrs["r"] + secrets.token_hex(12)
            salt_b64 = base64.b64encode(salt).decode()
            self.server_first = f"r={self.nonce},s={salt_b64},i={_ITERATIONS}"
            return self.server_first.encode(), False
        without_proof, _, proof_b64 = text.rpartition(",p=")
        attrs = dict(part.split("=", 1) for part in without_proof.split(","))
        if attrs.get("r") != self.nonce:
            raise _AuthFailed("nonce mismatch")
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        client_key = self._hmac(self.salted, b"Client Key")
        stored_key = self._hash(client_key)
        signature = self._hmac(stored_key, auth_message)
        proof = base64.b64decode(proof_b64)
        claimed = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(self._hash(claimed), stored_key):
            raise _AuthFailed(f"bad proof for {self.user!r}")
        server_key = self._hmac(self.salted, b"Server Key")
        verifier = base64.b64encode(self._hmac(server_key, auth_message)).decode()
        return f"v={verifier}".encode(), True


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


@dataclass
class KafkaGateway:
    """Forward ``127.0.0.1:<port>`` to ``upstream_port``, adding TLS and/or SASL."""

    upstream_port: int
    tls: ssl.SSLContext | None = None
    users: dict[str, str] | None = None
    port: int = 0
    authenticated: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    client_certs: Counter[str] = field(default_factory=Counter)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, ssl=self.tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream: asyncio.StreamWriter | None = None
        try:
            cert = writer.get_extra_info("peercert")
            if cert:
                subject = dict(pair[0] for pair in cert["subject"])
                self.client_certs[subject.get("commonName", "?")] += 1
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if self.users is not None and not await self._authenticate(
                reader, writer, up_reader, upstream
            ):
                return
            await _splice(reader, writer, up_reader, upstream)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client (or broker) went away; so does the other side
        except asyncio.CancelledError:
            pass  # stop(): asyncio's server callback would report a cancelled handler
        finally:
            self._tasks.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    side.close()

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> bool:
        """Run the SASL exchange; True once the client proved who it is."""
        assert self.users is not None
        session: _Plain | _Scram | None = None
        mechanism = ""
        while True:
            request = await _read_frame(reader)
            api_key, api_version, correlation = struct.unpack(">hhi", request[:8])
            header = struct.pack(">i", correlation)
            if api_key == API_VERSIONS:
                upstream.write(_frame(request))
                await upstream.drain()
                writer.write(_frame(await _read_frame(up_reader)))
                await writer.drain()
                continue
            (client_id_len,) = struct.unpack(">h", request[8:10])
            body = request[10 + max(client_id_len, 0) :]
            if api_key == SASL_HANDSHAKE and api_version == 1:
                (length,) = struct.unpack(">h", body[:2])
                mechanism = body[2 : 2 + length].decode()
                error = 0
                if mechanism == "PLAIN":
                    session = _Plain(self.users)
                elif mechanism in _HASHES:
                    session = _Scram(mechanism, self.users)
                else:
                    error = UNSUPPORTED_SASL_MECHANISM
                    self.failures.append(f"unsupported mechanism {mechanism}")
                enabled = struct.pack(">i", len(MECHANISMS)) + b"".join(map(_string, MECHANISMS))
                writer.write(_frame(header + struct.pack(">h", error) + enabled))
                await writer.drain()
                if error:
                    return False
                continue
            if api_key == SASL_AUTHENTICATE and api_version in (0, 1) and session is not None:
                (length,) = struct.unpack(">i", body[:4])
                try:
                    reply, done = session.step(body[4 : 4 + length])
                    error, message = 0, None
                except (_AuthFailed, KeyError, ValueError) as exc:
                    reply, done = b"", False
                    error, message = SASL_AUTHENTICATION_FAILED, "Authentication failed"
                    self.failures.append(f"{mechanism}: {exc}")
                response = header + struct.pack(">h", error) + _string(message)
                response += struct.pack(">i", len(reply)) + reply
                if api_version == 1:
                    response += struct.pack(">q", 0)  # session lifetime: no re-authentication
                writer.write(_frame(response))
                await writer.drain()
                if error:
                    return False
                if done:
                    self.authenticated[(mechanism, session.user)] += 1
                    return True
                continue
            # Anything else before authenticating: a broker closes the connection.
            self.failures.append(f"api {api_key} v{api_version} before authentication")
            return False


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    upstream: asyncio.StreamWriter,
) -> None:
    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()

    both = [
        asyncio.ensure_future(pump(reader, upstream)),
        asyncio.ensure_future(pump(up_reader, writer)),
    ]
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in both:
            task.cancel()
        await asyncio.gather(*both, return_exceptions=True)
