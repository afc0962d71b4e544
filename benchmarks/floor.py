"""The HTTP floor: a bare ASGI app that answers every request with one constant JSON body.

It is served by uvicorn with exactly the options of the real service (`_options` of
`oncology.webservice.server`, fed a `ServeSettings`), so the floor and the service share one
stack (uvloop, httptools, lifespan, logging, headers) and cannot drift apart.  Whatever the
service costs above this floor is the cost of its own code: routing, middleware, decoding,
scoring, encoding, metrics and the access log.

    .venv/bin/python benchmarks/floor.py --port 8099
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from oncology.settings import ServeSettings
from oncology.webservice.server import _options

#: The size and shape of a real /predict answer.
BODY = b'{"prediction":"benign","probability":0.012345678901234567,"model_version":"1.0.1"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":  # the service runs with lifespan "on": answer it
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the request body, as any real handler must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = ServeSettings(host=args.host, port=args.port, workers=1)
    uvicorn.Server(uvicorn.Config(app, **_options(settings))).run()


if __name__ == "__main__":
    main()
