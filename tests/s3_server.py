"""A real S3 HTTP endpoint on 127.0.0.1 for tests (moto in server mode), and the environment that
points boto3, pyarrow (hence Ray's storage) and MLflow at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
# moto accepts any key pair; these name it as a test endpoint
ACCESS_KEY, SECRET_KEY = "hwd-test-access", "hwd-test-secret"


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3 endpoint: its URL and the environment clients need to reach it."""

    url: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,  # boto3 and pyarrow's S3FileSystem honour it
            "MLFLOW_S3_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in `bucket` under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_endpoint(*buckets: str, host: str = "127.0.0.1") -> Iterator[S3Endpoint]:
    """A moto S3 server on `host` (a free port) with `buckets` created; stopped on exit."""
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    try:
        bound_host, port = server.get_host_and_port()
        endpoint = S3Endpoint(f"http://{bound_host}:{port}")
        for bucket in buckets:
            endpoint.client().create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()
