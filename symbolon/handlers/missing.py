"""Missing-symbol reports: the CSV, the JSON listing and the web UI's API."""

from __future__ import annotations

from symbolon.filters import FilterError
from symbolon.handlers.base import BaseHandler
from symbolon.metrics import metrics
from symbolon.symbols import missing


class MissingCSVHandler(BaseHandler):
    async def get(self) -> None:
        with metrics.timer("missingsymbols_csv"):
            today = bool(self.get_query_argument("today", ""))
            filename, body = await missing.csv_report(self.runtime.db, today=today)
        self.set_header("Content-Type", "text/csv")
        self.set_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.finish(body)


class _ListingHandler(BaseHandler):
    listing = staticmethod(missing.listing)
    metric = "missingsymbols"

    async def get(self) -> None:
        params = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        try:
            with metrics.timer(self.metric):
                body = await self.listing(self.runtime.db, params)
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class MissingListingHandler(_ListingHandler):
    pass


class ApiMissingHandler(_ListingHandler):
    listing = staticmethod(missing.api_listing)
    metric = "api"


ROUTES = [
    (r"/missingsymbols\.csv", MissingCSVHandler),
    (r"/missingsymbols/", MissingListingHandler),
    (r"/api/downloads/missing/", ApiMissingHandler),
]
