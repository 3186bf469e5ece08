"""The ceiling of this stack: a bare Starlette + aiohttp pass-through, nothing else.

`python bench/bare.py --upstream http://127.0.0.1:PORT --port P [--workers N]` forwards
POST /{kind}/v1/chat/completions to the same path on the upstream, JSON or SSE.
"""
import argparse
import os

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("BARE_UPSTREAM", "")


async def lifespan(app):
    app.state.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=2048))
    yield
    await app.state.session.close()


async def chat(request):
    body = await request.body()
    upstream = await request.app.state.session.post(
        UPSTREAM + request.url.path, data=body, headers={"content-type": "application/json"})
    if upstream.content_type == "text/event-stream":
        async def relay():
            try:
                async for chunk in upstream.content.iter_any():
                    yield chunk
            finally:
                upstream.release()
        return StreamingResponse(relay(), upstream.status, media_type="text/event-stream")
    data = await upstream.read()
    upstream.release()
    return Response(data, upstream.status, media_type="application/json")


app = Starlette(routes=[Route("/{kind}/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["BARE_UPSTREAM"] = args.upstream
    uvicorn.run("bare:app", host="127.0.0.1", port=args.port, workers=args.workers, loop="uvloop",
                http="httptools", access_log=False, log_level="warning", app_dir=os.path.dirname(__file__))
