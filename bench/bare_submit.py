"""Bare handlers for ``POST /submit``, to compare the collector with: each receives the body, writes
the dump to a file and answers with a crash id. No checks, no throttling, no storage layout, no
publishing.

    python bench/bare_submit.py PORT DIRECTORY [PROCESSES] [parsed] [uvloop]

By default the handler streams the body in and finds the dump part crudely (the stricter bound).
With ``parsed`` it is the plain Tornado handler, the bare handler of the collector's goal: Tornado
reads the whole body and parses the form itself (``self.request.files``), as a Tornado application
does by default. With ``uvloop`` it runs on uvloop's event loop instead of the standard library's.

With PROCESSES > 1 the listening socket is bound once and the process forks (Tornado's
``fork_processes``); the children share the socket.
"""

import asyncio
import os
import sys
import uuid

import tornado.httpserver
import tornado.netutil
import tornado.process
import tornado.web

DUMP = b'name="upload_file_minidump"'


@tornado.web.stream_request_body
class Submit(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.chunks: list[bytes] = []

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def post(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        try:
            delimiter = b"\r\n" + body[: body.index(b"\r\n")]  # the first line: --<boundary>
            start = body.index(b"\r\n\r\n", body.index(DUMP)) + 4
            end = body.index(delimiter, start)
        except ValueError:
            self.set_status(400)
            self.finish("Discarded=malformed_invalid_payload_structure")
            return
        crash_id = str(uuid.uuid4())
        with open(os.path.join(self.settings["directory"], crash_id), "wb") as f:
            f.write(memoryview(body)[start:end])
        self.set_header("Content-Type", "text/plain")
        self.finish(f"CrashID=bp-{crash_id}\n")


class ParsedSubmit(tornado.web.RequestHandler):
    def post(self) -> None:
        files = self.request.files.get("upload_file_minidump")
        if not files:
            self.set_status(400)
            self.finish("Discarded=malformed_invalid_payload_structure")
            return
        crash_id = str(uuid.uuid4())
        with open(os.path.join(self.settings["directory"], crash_id), "wb") as f:
            f.write(files[0]["body"])
        self.set_header("Content-Type", "text/plain")
        self.finish(f"CrashID=bp-{crash_id}\n")


async def serve(sockets: list, directory: str, parsed: bool) -> None:
    handler = ParsedSubmit if parsed else Submit
    app = tornado.web.Application(
        [(r"/submit", handler)], directory=directory, log_function=lambda _: None
    )
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    await asyncio.Event().wait()


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    processes = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    flags = set(sys.argv[4:])
    sockets = tornado.netutil.bind_sockets(port, "127.0.0.1")
    if processes > 1:
        tornado.process.fork_processes(processes, max_restarts=0)  # before any event loop
    factory = None
    if "uvloop" in flags:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(sockets, directory, "parsed" in flags))


if __name__ == "__main__":
    main()
