"""``/``: what this service is for anonymous visitors; your figures once signed in."""

from __future__ import annotations

import urllib.parse

from symbolon import stats
from symbolon.accounts import admin
from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import user_permissions
from symbolon.uploads import recent
from symbolon.web.charts import bar_chart
from symbolon.web.page import PageHandler

CHART_DAYS = 30


class HomePage(PageHandler):
    title = "Home"
    nav = "/"

    async def get(self) -> None:
        principal = self.principal
        site = f"{self.request.protocol}://{self.request.host}"
        if principal is None:
            return self.page("home.html", site=site, figures=None)
        all_uploads = principal.has(Permission.VIEW_ALL_UPLOADS)
        user = principal.user
        figures = await stats.home_stats(
            self.runtime.db, user.id, all_uploads=all_uploads, is_superuser=user.is_superuser
        )
        async with self.runtime.db.acquire() as conn:
            # The account's permissions, as /api/_auth/ shows them.
            held = await user_permissions(conn, user)
            known = await admin.permission_rows(conn)
        days = await recent.uploads_per_day(
            self.runtime.db, CHART_DAYS, None if all_uploads else user.id
        )
        whose = "Everyone's" if all_uploads else "Your"
        chart = bar_chart(
            [(d.day.strftime("%b %d"), d.count) for d in days],
            title=f"{whose} uploads per day, last {CHART_DAYS} days",
            description=(
                f"{sum(d.count for d in days)} uploads from {days[0].day.isoformat()} "
                f"to {days[-1].day.isoformat()} (UTC days)."
            ),
            value_label="Uploads",
            show=lambda v: f"{v:,.0f}",
        )
        self.curl("/api/stats/", "Uploads, files and missing downloads by period:", auth=True)
        self.curl("/api/_auth/", "Who you are and your permissions:", auth=True)
        if all_uploads:
            since = days[0].day.isoformat()
            query = urllib.parse.urlencode({"date": f">={since}"})
            self.curl(
                f"/api/uploads/created/?{query}",
                "Uploads per day (everyone's; 20 days a page):",
                auth=True,
            )
        self.page(
            "home.html",
            site=site,
            figures=figures["stats"],
            all_uploads=all_uploads,
            permissions=[p for codename, p in known.items() if codename in held],
            chart=chart,
        )


ROUTES = [(r"/", HomePage)]
