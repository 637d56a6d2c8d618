"""``POST /upload/auth_info/``, ``POST /upload/v2/`` and its completion call (see docs/upload.md,
"Upload v2")."""

from __future__ import annotations

from symbolon.accounts.permissions import Permission
from symbolon.handlers.base import RETRY_AFTER_SECONDS, ApiError, BaseHandler
from symbolon.handlers.upload import ENQUEUE_SECONDS, UPLOAD_PERMISSIONS, wait_for_upload
from symbolon.storage.lookup import StorageUnavailable
from symbolon.tasks.broker import QueueUnavailable, send_within
from symbolon.uploads import records, v2


class AuthInfoHandler(BaseHandler):
    async def post(self) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        token = principal.token
        if token is None:  # a browser session: this endpoint describes the caller's token
            raise ApiError(403, "This requires an Auth-Token to authenticate the request")
        self.write_json(
            {
                "email": principal.user.email,
                "user_id": principal.user.id,
                "try_symbols": principal.has(Permission.UPLOAD_TRY_SYMBOLS),
                "token_expires_at": int(token.expires_at.timestamp()),
                "upload_api_version": token.preferred_upload_api_version,
            }
        )


class UploadV2Handler(BaseHandler):
    async def post(self) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        rt = self.runtime
        try:
            files = v2.parse_files(self.request.body, rt.settings.upload_max_uncompressed_size)
        except v2.MalformedRequest as exc:
            raise ApiError(400, str(exc)) from None
        place = records.placement(rt.storage, principal)
        try:
            actions, pending = await v2.plan(rt, files, place.destination, place.try_symbols)
        except StorageUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json(
                {"error": "Symbol storage is unavailable; try again later."}, status=503
            )
        for action in actions:
            if action["action"]["type"] == "upload":
                action["action"]["url"] = self.absolute_url(action["action"]["url"])
        upload_id, created_at = await records.create_v2_upload(
            rt.db,
            principal.user.id,
            place,
            size=sum(f["size"] for f in files),
            skipped_keys=[a["key"] for a in actions if a["action"]["type"] == "skip"],
            pending=pending,
        )
        self.write_json(
            {
                "id": upload_id,
                "created_at": int(created_at.timestamp()),
                "user": principal.user.email,
                "try_symbols": place.try_symbols,
                "upload_protocol": v2.PROTOCOL,
                "complete_url": f"/upload/v2/{upload_id}/complete",
                "files": actions,
            },
            status=201,
        )


class CompleteHandler(BaseHandler):
    async def post(self, upload_id: str) -> None:
        principal = self.authorize(*UPLOAD_PERMISSIONS)
        number = v2.parse_upload_id(upload_id)
        if number is None or not await records.awaits_completion(
            self.runtime.db, number, principal.user.id
        ):
            raise ApiError(404, "No Upload matches the given query.")
        import symbolon.tasks.actors as actors

        try:
            # A late message is harmless: a completion that finds the upload done does nothing.
            await send_within(actors.complete_upload_v2, number, seconds=ENQUEUE_SECONDS)
        except QueueUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json({"error": "The task queue is unavailable. Try again."}, 503)
        await wait_for_upload(self, number, principal.user.email)


ROUTES = [
    (r"/upload/auth_info/", AuthInfoHandler),
    (r"/upload/v2/", UploadV2Handler),
    (r"/upload/v2/(\d+)/complete", CompleteHandler),
]
