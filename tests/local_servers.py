"""Servers on 127.0.0.1 for the W&B reachability tests, each alive only while its `with` block runs."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound and released here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts every connection and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # the listener was closed: the server's lifetime is over
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in held:
            conn.close()
        thread.join(timeout=5)


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


class _AnswersOnlyGet(_NotFound):
    """Answers a probe (GET), and holds every POST (W&B's GraphQL calls) unanswered until `released`."""

    released = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (the name http.server calls)
        self.released.wait(timeout=60)


@contextmanager
def answering_server(posts_answered: bool = True) -> Iterator[int]:
    """A port with an HTTP server that answers every request (404: it is no W&B server, but it talks);
    with `posts_answered=False`, one that answers a probe and then stalls on creating the run."""
    handler = _NotFound if posts_answered else type("_Stalling", (_AnswersOnlyGet,), {"released": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        getattr(handler, "released", threading.Event()).set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
