"""S3 storage: objects under a key prefix in one bucket, files being written as multipart
uploads whose state any replica can continue.

``settings`` holds what the driver is given, ``driver`` maps the storage contract onto keys,
``bucket`` makes the S3 calls, ``writer`` and ``state`` write files in parts, ``buffers`` holds
their bytes without copying them.
"""

from registry.storage.s3.driver import S3Driver
from registry.storage.s3.settings import MIN_PART_SIZE, S3Settings

__all__ = ["MIN_PART_SIZE", "S3Driver", "S3Settings"]
