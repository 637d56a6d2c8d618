"""``/help``: using Symbolon from debuggers, stack walkers and CI; permissions; archive rules;
the symbolication API. Public. The limits shown are this site's settings."""

from __future__ import annotations

from symbolon.stats import human_size
from symbolon.web.page import PageHandler


class HelpPage(PageHandler):
    title = "Help"
    nav = "/help"

    async def get(self) -> None:
        settings = self.runtime.settings
        self.page(
            "help.html",
            site=f"{self.request.protocol}://{self.request.host}",
            max_size=human_size(settings.upload_max_size),
            try_days=settings.try_symbols_expiry_days,
            extensions=settings.download_file_extensions_allowed,
        )


ROUTES = [(r"/help", HelpPage)]
