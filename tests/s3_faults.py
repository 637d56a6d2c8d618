"""S3 clients that fail in chosen ways, around the embedded S3 server's real ones."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ConnectTimeoutError

from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import SymbolSource


class Unanswered:
    """An S3 client whose reads of objects time out; everything else it does as the real one."""

    def __init__(self, client: Any):
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def head_object(self, **kwargs: Any) -> Any:
        raise ConnectTimeoutError(endpoint_url="http://storage.invalid")

    get_object = head_object


def lookups_time_out(monkeypatch: Any, s3: S3Clients) -> None:
    """The short-lived "lookup" clients get no answer; the patient "put" ones do."""
    original = s3.client

    async def client(source: SymbolSource, purpose: Any = "lookup") -> Any:
        real = await original(source, purpose)
        return Unanswered(real) if purpose == "lookup" else real

    monkeypatch.setattr(s3, "client", client)
