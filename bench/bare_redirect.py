"""The framework's limit: a Tornado handler that answers every GET with a constant 302."""

import asyncio
import sys

import tornado.web


class Redirect(tornado.web.RequestHandler):
    def get(self, *_: str) -> None:
        self.set_status(302)
        self.set_header("Location", "http://127.0.0.1:9/bucket/v1/a.pdb/ID/a.sym")
        self.finish()


async def main(port: int) -> None:
    tornado.web.Application([(r"/.*", Redirect)], log_function=lambda _: None).listen(
        port, "127.0.0.1"
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
