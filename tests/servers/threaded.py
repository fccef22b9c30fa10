"""A WSGI app served over real HTTP on 127.0.0.1, from a thread of the test process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server


@contextmanager
def serving(wsgi_app: Any) -> Iterator[str]:
    """Serve ``wsgi_app`` (threaded, as a browser needs) and yield its base URL; shut it down
    and free the port on leaving."""
    server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
