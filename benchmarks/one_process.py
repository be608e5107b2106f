"""Several of ``benchmarks.apps``' servers in one process, each on its own
port, under one uvicorn server (h11 and the event loop uvicorn's command
picks, as every figure here):

    python -m benchmarks.one_process PORT=FACTORY [PORT=FACTORY ...]

The LiteLLM servers share LiteLLM's one app (its module keeps it), each
guarded one with a guard and store of its own; the lifespan goes to the first
server's app only (a guard passes it on to the app it wraps).  Two servers
of one process differ only by their code: nothing of the process (its hash
seed, its heap, where its memory lies) is the one's and not the other's.
``litellm_where --one-process`` measures them this way.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import apps  # noqa: E402


def dispatcher(by_port: dict[int, Any]) -> Any:
    """One ASGI app that hands each connection to the app of the port it came in on."""
    first = next(iter(by_port.values()))

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await first(scope, receive, send)
            return
        await by_port[scope["server"][1]](scope, receive, send)

    return app


def main() -> None:
    import uvicorn

    pairs = [argument.split("=", 1) for argument in sys.argv[1:]]
    if not pairs or any(len(pair) != 2 for pair in pairs):
        raise SystemExit(__doc__)
    by_port = {int(port): getattr(apps, factory)() for port, factory in pairs}
    sockets = []
    for port in by_port:
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", port))
        sockets.append(listening)
    config = uvicorn.Config(
        dispatcher(by_port), http="h11", log_level="warning", access_log=False, backlog=4096, lifespan="on"
    )
    # ``run`` sets up the event loop as uvicorn's command does (uvloop where
    # installed, as for every other server here), which ``asyncio.run`` would not.
    uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
