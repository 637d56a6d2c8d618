"""S3 clients that fail in chosen ways, around the embedded S3 server's real ones."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError, ConnectTimeoutError

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


class Refusing:
    """An S3 client refused the deletion of some keys, as a bucket policy may refuse them:
    DeleteObject fails, and DeleteObjects lists them among its answer's Errors."""

    def __init__(self, client: Any, refused: set[str]):
        self.client, self.refused = client, refused

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def delete_object(self, **kwargs: Any) -> Any:
        if kwargs["Key"] in self.refused:
            error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}
            raise ClientError(error, "DeleteObject")
        return await self.client.delete_object(**kwargs)

    async def delete_objects(self, **kwargs: Any) -> Any:
        objects = kwargs["Delete"]["Objects"]
        allowed = [o for o in objects if o["Key"] not in self.refused]
        kwargs["Delete"] = {**kwargs["Delete"], "Objects": allowed}
        response = dict(await self.client.delete_objects(**kwargs)) if allowed else {}
        response["Errors"] = [
            {"Key": o["Key"], "Code": "AccessDenied", "Message": "Access Denied"}
            for o in objects
            if o["Key"] in self.refused
        ]
        return response


def deletes_refused(monkeypatch: Any, s3: S3Clients, refused: set[str]) -> None:
    original = s3.client

    async def client(source: SymbolSource, purpose: Any = "lookup") -> Any:
        return Refusing(await original(source, purpose), refused)

    monkeypatch.setattr(s3, "client", client)
