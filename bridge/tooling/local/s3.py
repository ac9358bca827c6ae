"""An S3-compatible endpoint on loopback (moto's server), for Tansu's ``s3://`` storage.

Tansu keeps its records in S3-compatible storage when given ``--storage-engine s3://BUCKET/``:
unlike its memory storage, they survive a restart of the broker, so a broker crash (SIGKILL)
and restart on the same port can be tested. ``moto[server]`` (in the dev extra) serves S3 on a
free port; the bucket is created with boto3 once it answers.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from bridge.tooling.local.process import LocalProcess, free_port

__all__ = ["S3Storage"]

REGION = "us-east-1"
# moto accepts any key; Tansu's S3 client wants some.
ACCESS_KEY = "testing-not-a-secret"


class S3Storage(LocalProcess):
    """moto's S3 server on a free loopback port, with one bucket; ``async with`` or
    :meth:`start`/:meth:`stop`."""

    name = "the S3 endpoint"

    def __init__(
        self, *, bucket: str = "tansu", start_timeout_s: float = 30, log_dir: Path | None = None
    ) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="moto-")) / "moto.log"

    @property
    def storage_engine(self) -> str:
        """Tansu's ``--storage-engine`` for the bucket."""
        return f"s3://{self.bucket}/"

    def environment(self) -> dict[str, str]:
        """What Tansu's S3 client needs to find the endpoint: loopback, plain HTTP."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": ACCESS_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def _launch(self) -> None:
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self._spawn(command)

    async def wait_ready(self) -> None:
        """Poll until the bucket can be created (which needs the endpoint up)."""
        # botocore's connection errors have no common base that is not Exception.
        await self._until_ready(self._bucket, (Exception,), self.start_timeout_s, 0.1)

    async def _bucket(self) -> None:
        await asyncio.to_thread(self._create_bucket)

    def _create_bucket(self) -> None:
        try:
            import boto3
        except ImportError as exc:  # a dev dependency: say how to get it
            raise RuntimeError("S3 storage needs moto[server]: pip install -e '.[dev]'") from exc
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=ACCESS_KEY,
        )
        client.create_bucket(Bucket=self.bucket)
