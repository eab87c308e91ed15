"""What the S3 driver needs to know: the bucket, where it is, how to sign, how large parts are."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20
GiB = 1 << 30
# S3's limits: parts of a multipart upload but the last, a single CopyObject, a part count.
MIN_PART_SIZE = 5 * MiB
MAX_COPY_SIZE = 5 * GiB
MAX_PARTS = 10_000


@dataclass(frozen=True, slots=True)
class S3Settings:
    """One bucket (of AWS S3 or an S3-compatible store) and a key prefix inside it."""

    bucket: str
    prefix: str = ""
    # Empty: the region of the AWS configuration.
    region: str = ""
    # Empty: AWS S3 itself.
    endpoint_url: str = ""
    # Buckets as URL paths (http://host/bucket/key) rather than host names.
    path_style: bool = False
    # Empty: botocore's chain (environment, shared files, instance role).
    access_key_id: str = ""
    secret_access_key: str = ""
    # Blob reads may be answered with a presigned URL instead of the bytes.
    redirect: bool = False
    # A writer holds at most one part in memory; parts also bound a file at MAX_PARTS of them.
    multipart_part_size: int = 10 * MiB

    @property
    def key_prefix(self) -> str:
        """The prefix as keys start with it: no leading slash, one trailing slash (or empty)."""
        prefix = self.prefix.strip("/")
        return f"{prefix}/" if prefix else ""
