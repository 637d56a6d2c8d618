"""``POST /upload/auth_info/``, ``POST /upload/v2/`` and its completion call (spec §6)."""

from __future__ import annotations

import json

from symbolon.handlers.base import ApiError, BaseHandler
from symbolon.handlers.upload import UPLOAD_PERMISSIONS, wait_for_upload
from symbolon.tasks.broker import enqueue
from symbolon.uploads import v2


class AuthInfoHandler(BaseHandler):
    async def post(self) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        token = principal.token
        if token is None:  # a browser session: this endpoint describes the caller's token (§6.1)
            raise ApiError(403, "This requires an Auth-Token to authenticate the request")
        self.write_json(
            {
                "email": principal.user.email,
                "user_id": principal.user.id,
                "try_symbols": principal.has("upload.upload_try_symbols"),
                "token_expires_at": int(token.expires_at.timestamp()),
                "upload_api_version": token.preferred_upload_api_version,
            }
        )


class UploadV2Handler(BaseHandler):
    async def post(self) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        try:
            files = v2.parse_files(self.request.body)
        except v2.MalformedRequest as exc:
            raise ApiError(400, str(exc)) from None
        rt = self.runtime
        try_symbols = not principal.has("upload.upload_symbols")
        destination = rt.storage.upload_destination(principal.user.email, try_symbols)
        actions, pending = await v2.plan(rt, files, destination, try_symbols)
        skipped = [a["key"] for a in actions if a["action"]["type"] == "skip"]
        row = await rt.db.fetchrow(
            """INSERT INTO uploads (user_id, filename, bucket_name, bucket_region,
                                    bucket_endpoint_url, size, try_symbols, skipped_keys,
                                    destination_url, pending_files)
               VALUES ($1, '', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, created_at""",
            principal.user.id,
            destination.bucket,
            destination.region,
            destination.endpoint_url,
            sum(f["size"] for f in files),
            try_symbols,
            skipped or None,
            destination.url,
            json.dumps(pending),
        )
        self.write_json(
            {
                "id": row["id"],
                "created_at": int(row["created_at"].timestamp()),
                "user": principal.user.email,
                "try_symbols": try_symbols,
                "upload_protocol": v2.PROTOCOL,
                "complete_url": f"/upload/v2/{row['id']}/complete",
                "files": actions,
            },
            status=201,
        )


class CompleteHandler(BaseHandler):
    async def post(self, upload_id: str) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        row = await self.runtime.db.fetchrow(
            "SELECT user_id, pending_files FROM uploads WHERE id = $1", int(upload_id)
        )
        if row is None or row["user_id"] != principal.user.id or row["pending_files"] is None:
            raise ApiError(404, "No Upload matches the given query.")
        import symbolon.tasks.actors as actors

        await enqueue(actors.complete_upload_v2, int(upload_id))
        await wait_for_upload(self, int(upload_id), principal.user.email)


ROUTES = [
    (r"/upload/auth_info/", AuthInfoHandler),
    (r"/upload/v2/", UploadV2Handler),
    (r"/upload/v2/(\d+)/complete", CompleteHandler),
]
