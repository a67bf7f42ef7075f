"""Where a journal is replicated to, and what has arrived there.

Two kinds of replica: an S3-compatible bucket (``s3://BUCKET/PATH?endpoint=…``)
and a local directory (a path or ``file://`` URL, the embedded default).

Litestream cannot say how far its copy lags (no metric or endpoint does), so the remote
side is read directly: the level-0 LTX files there, each of whose 72-byte
header names the WAL range it holds (salts, offset, size) and when it was made.
"""

from __future__ import annotations

import os
import struct
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ._errors import OperationalError, ReplicaUnavailable

LTX_HEADER = struct.Struct(">4sIIIQQqQQQII")
"""magic, flags, page size, commit, min txid, max txid, timestamp ms,
pre-apply checksum, WAL offset, WAL size, WAL salt 1, WAL salt 2."""


@dataclass(frozen=True)
class Ltx:
    """What a level-0 LTX file says about the WAL range it holds."""

    min_txid: int
    max_txid: int
    timestamp: float
    wal_offset: int
    wal_size: int
    salt: tuple[int, int]

    @property
    def wal_end(self) -> int:
        """The WAL offset just past the last frame this file holds."""
        return self.wal_offset + self.wal_size


def parse_ltx_header(data: bytes, name: str) -> Ltx:
    """Parse the first 72 bytes of an LTX file."""
    if len(data) < LTX_HEADER.size:
        raise OperationalError(f"LTX file {name} is shorter than its header")
    magic, _flags, _page, _commit, lo, hi, ms, _check, offset, size, salt1, salt2 = LTX_HEADER.unpack_from(data)
    if magic != b"LTX1":
        raise OperationalError(f"{name} is not an LTX file (magic {magic!r})")
    return Ltx(lo, hi, ms / 1000.0, offset, size, (salt1, salt2))


def txid_of(name: str) -> tuple[int, int]:
    """``(min, max)`` txid from an LTX file name ``<min %016x>-<max %016x>.ltx``."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".ltx")
    lo, _, hi = stem.partition("-")
    return int(lo, 16), int(hi, 16)


@dataclass(frozen=True)
class ReplicaTarget:
    """A parsed replica: a bucket and path on an S3 endpoint, or a local directory."""

    url: str
    kind: str  # "s3" or "file"
    bucket: str = ""
    path: str = ""
    endpoint: str | None = None
    region: str = "us-east-1"
    force_path_style: bool = False
    directory: str = ""

    @classmethod
    def parse(cls, url: str) -> ReplicaTarget:
        """Parse an ``s3://`` URL, a ``file://`` URL or a plain directory path."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "s3":
            query = dict(urllib.parse.parse_qsl(parts.query))
            path = parts.path.strip("/")
            if not parts.netloc or not path:
                raise ReplicaUnavailable(f"replica URL {url!r} needs a bucket and a path: s3://BUCKET/PATH")
            return cls(
                url=url,
                kind="s3",
                bucket=parts.netloc,
                path=path,
                endpoint=query.get("endpoint"),
                region=query.get("region", "us-east-1"),
                force_path_style=query.get("forcePathStyle", "").lower() == "true",
            )
        if parts.scheme in ("", "file"):
            directory = os.path.abspath(parts.path if parts.scheme == "file" else url)
            return cls(url=url, kind="file", directory=directory)
        raise ReplicaUnavailable(f"replica URL {url!r}: only s3:// URLs and local directories are supported")

    def litestream_config(self) -> dict[str, Any]:
        """The ``replica`` section of Litestream's configuration."""
        if self.kind == "file":
            return {"type": "file", "path": self.directory}
        return {"url": self.url}


class RemoteReader:
    """Lists the level-0 LTX files of a replica and reads their headers (blocking I/O)."""

    def __init__(self, target: ReplicaTarget, *, timeout: float = 5.0) -> None:
        self.target = target
        self._headers: dict[str, Ltx] = {}
        self._listed: dict[int, str] = {}
        """Per level, the newest file name listed so far (the next listing starts after it)."""
        self._client: Any = None
        self._timeout = timeout

    def newest(self) -> Ltx | None:
        """The newest LTX file that names its WAL range, or None if there is none.

        Level 0 holds each sync; level 9 holds snapshots, which Litestream also
        writes (at start, for one) and which can hold transactions whose
        level-0 file never made it up. Compacted levels name no WAL range and
        hold nothing newer than level 0.
        """
        names = self._list(0) + self._list(9)
        if not names:
            return None
        name = max(names, key=lambda n: txid_of(n)[1])
        header = self._headers.get(name)
        if header is None:
            header = parse_ltx_header(self._read_header(name), name)
            self._headers = {name: header}  # only the newest is ever needed again
        return header

    def header_of(self, txid: int) -> Ltx:
        """The header of the level-0 LTX file holding exactly transaction ``txid`` (one small read, no listing)."""
        stem = f"{txid:016x}-{txid:016x}.ltx"
        if self.target.kind == "file":
            name = os.path.join(self.target.directory, "ltx", "0", stem)
        else:
            name = f"{self.target.path}/0000/{stem}"
        return parse_ltx_header(self._read_header(name), name)

    def check(self) -> None:
        """Fail with a clear error if the replica cannot be reached (bucket, credentials)."""
        if self.target.kind == "file":
            return
        client = self._s3()
        try:
            client.head_bucket(Bucket=self.target.bucket)
        except Exception as exc:
            raise ReplicaUnavailable(
                f"replica {self.target.url}: cannot reach bucket {self.target.bucket!r}: {exc}"
            ) from None

    def _list(self, level: int) -> list[str]:
        if self.target.kind == "file":
            directory = os.path.join(self.target.directory, "ltx", str(level))
            try:
                return [os.path.join(directory, n) for n in os.listdir(directory) if n.endswith(".ltx")]
            except FileNotFoundError:
                return []
        # Names sort by transaction id: under load, list only past the newest
        # seen before (Litestream keeps five minutes of level-0 files, and
        # listing them all four times a second is most of what a local S3 server
        # does). Only when nothing is newer is the whole level listed again: a
        # replica that was reset or replaced starts lower.
        after = self._listed.get(level)
        names = self._list_s3(level, after) if after else []
        if not names:
            names = self._list_s3(level, None)
        self._listed[level] = max(names, default="")
        return names

    def _list_s3(self, level: int, after: str | None) -> list[str]:
        client = self._s3()
        prefix = f"{self.target.path}/{level:04x}/"
        names: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.target.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            elif after:
                kwargs["StartAfter"] = after
            page = client.list_objects_v2(**kwargs)
            names += [o["Key"] for o in page.get("Contents", ()) if o["Key"].endswith(".ltx")]
            if not page.get("IsTruncated"):
                return names
            token = page.get("NextContinuationToken")

    def _read_header(self, name: str) -> bytes:
        if self.target.kind == "file":
            with open(name, "rb") as f:
                return f.read(LTX_HEADER.size)
        body = self._s3().get_object(Bucket=self.target.bucket, Key=name, Range=f"bytes=0-{LTX_HEADER.size - 1}")
        data: bytes = body["Body"].read()
        return data

    def _s3(self) -> Any:
        if self._client is None:
            # Imported here: boto3 costs a noticeable part of a second to import,
            # and only replicas in a bucket need it.
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415

            config = Config(
                connect_timeout=self._timeout,
                read_timeout=self._timeout,
                retries={"max_attempts": 1},
                s3={"addressing_style": "path" if self.target.force_path_style else "auto"},
            )
            self._client = boto3.client(
                "s3", endpoint_url=self.target.endpoint, region_name=self.target.region, config=config
            )
        return self._client
