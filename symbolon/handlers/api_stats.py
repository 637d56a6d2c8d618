"""``/api/stats/`` and ``/api/stats/uploads`` (docs/accounts.md, "JSON API")."""

from __future__ import annotations

from symbolon import stats
from symbolon.accounts.permissions import Permission
from symbolon.handlers.base import ReadHandler


class StatsHandler(ReadHandler):
    async def get(self) -> None:
        principal = self.authorize()
        body = await stats.home_stats(
            self.runtime.db,
            principal.user.id,
            all_uploads=principal.has(Permission.VIEW_ALL_UPLOADS),
            is_superuser=principal.user.is_superuser,
        )
        self.write_json(body)


class UploadStatsHandler(ReadHandler):
    async def get(self) -> None:
        principal = self.authorize()
        body = await stats.upload_stats(
            self.runtime.db,
            principal.user.id,
            all_uploads=principal.has(Permission.VIEW_ALL_UPLOADS),
        )
        self.write_json(body)


ROUTES = [
    (r"/api/stats/", StatsHandler),
    (r"/api/stats/uploads", UploadStatsHandler),
]
