"""The embedded S3 server: moto on 127.0.0.1, with its objects persisted to a directory.

moto keeps objects in memory only. So that a second ``make run`` finds its symbols again, this
process mirrors every bucket and object to ``<dir>/objects`` every few seconds and once more on
SIGTERM, and loads the mirror back when it starts. Run as ``python -m symbolon.server.embedded_s3
DIR``; ``EmbeddedS3`` in ``embedded.py`` starts and stops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

SYNC_INTERVAL_SECONDS = 5.0


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class Mirror:
    """Copies the server's content to disk and back, by the S3 API (stable across moto versions)."""

    def __init__(self, directory: Path, client: Any):
        self.directory = directory
        self.blobs = directory / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifest_path = directory / "manifest.json"
        self.client = client
        self.manifest: dict[str, dict[str, dict[str, Any]]] = {}
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())

    def _blob(self, bucket: str, key: str) -> Path:
        return self.blobs / hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()

    def restore(self) -> None:
        for bucket, objects in self.manifest.items():
            self.client.create_bucket(Bucket=bucket)
            for key, meta in objects.items():
                extra = {k: meta[k] for k in ("ContentType", "ContentEncoding") if meta.get(k)}
                with open(self._blob(bucket, key), "rb") as body:
                    self.client.put_object(
                        Bucket=bucket, Key=key, Body=body, Metadata=meta["Metadata"], **extra
                    )
                # Re-uploading changes nothing but moto's ETag may differ for multipart objects.
                head = self.client.head_object(Bucket=bucket, Key=key)
                meta["ETag"] = head["ETag"]

    def sync(self) -> None:
        current: dict[str, dict[str, dict[str, Any]]] = {}
        for bucket in self.client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            known = self.manifest.get(name, {})
            objects: dict[str, dict[str, Any]] = {}
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=name):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key in known and known[key]["ETag"] == item["ETag"]:
                        objects[key] = known[key]
                    else:
                        objects[key] = self._save(name, key)
            current[name] = objects
        for bucket, objects in self.manifest.items():
            for key in objects.keys() - current.get(bucket, {}).keys():
                self._blob(bucket, key).unlink(missing_ok=True)
        if current != self.manifest:
            self.manifest = current
            _write_json(self.manifest_path, current)

    def _save(self, bucket: str, key: str) -> dict[str, Any]:
        response = self.client.get_object(Bucket=bucket, Key=key)
        tmp = self._blob(bucket, key).with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for chunk in response["Body"].iter_chunks(1 << 20):
                out.write(chunk)
        os.replace(tmp, self._blob(bucket, key))
        return {
            "ETag": response["ETag"],
            "ContentType": response.get("ContentType"),
            "ContentEncoding": response.get("ContentEncoding"),
            "Metadata": response.get("Metadata", {}),
        }


def main(directory: Path) -> None:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    directory.mkdir(parents=True, exist_ok=True)
    state_file = directory / "server.json"
    port = 0
    if state_file.exists():
        remembered = json.loads(state_file.read_text()).get("port", 0)
        # Keep the same port across restarts, so SYMBOL_URLS (and cache keys) stay the same.
        if remembered and _port_is_free(remembered):
            port = remembered
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="symbolon",
        aws_secret_access_key="symbolon-embedded-secret",
    )
    mirror = Mirror(directory / "objects", client)
    mirror.restore()
    _write_json(state_file, {"pid": os.getpid(), "port": port, "ready": True})

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(SYNC_INTERVAL_SECONDS):
        try:
            mirror.sync()
        except Exception as exc:  # keep serving; the next round tries again
            print(f"embedded S3: snapshot failed: {exc}", file=sys.stderr)
    mirror.sync()
    _write_json(state_file, {"pid": os.getpid(), "port": port, "ready": False})
    server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
