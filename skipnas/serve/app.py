"""The counting page's web app (Starlette): the page and its script from the package, and a small
JSON API over :class:`~skipnas.serve.workspace.Workspace`. Every refusal is a 4xx with
``{"error": "one line"}``, which the page shows."""

from __future__ import annotations

import json
from importlib import resources

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from skipnas.errors import SkipnasError
from skipnas.serve.workspace import UploadError, Workspace

# the only files the page loads: served from the package, nothing from the internet
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_CHUNK = 1 << 20


def _static(name: str) -> bytes:
    return resources.files("skipnas.serve").joinpath("static", name).read_bytes()


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(workspace: Workspace) -> Starlette:
    """The app serving ``workspace``; the caller closes the workspace when the server stops."""

    async def page(request: Request) -> Response:
        return Response(_static("index.html"), media_type=STATIC_FILES["index.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_FILES:
            return _error(f"no file {name!r} here", 404)
        return Response(_static(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    async def overview(request: Request) -> Response:
        return JSONResponse(workspace.overview())

    async def upload(request: Request) -> Response:
        name = request.query_params.get("name", "")
        declared = request.headers.get("content-length")
        limit = workspace.max_upload_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _error(f"{name}: {int(declared) / 2**20:.1f} MiB is over the upload limit of {limit / 2**20:.0f} MiB; "
                          "restart skipnas serve with a larger --max-upload-mib", 413)
        try:
            image_id, path = workspace.upload_target(name)
        except UploadError as exc:
            return _error(str(exc), exc.status)
        size = 0
        try:
            async with await anyio.open_file(path, "wb") as handle:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise UploadError(f"{name}: over the upload limit of {limit / 2**20:.0f} MiB; restart "
                                          "skipnas serve with a larger --max-upload-mib", 413)
                    await handle.write(chunk)
            image = await run_in_threadpool(workspace.accept, image_id, path, size)
        except UploadError as exc:
            workspace.discard(path)
            return _error(str(exc), exc.status)
        except BaseException:
            workspace.discard(path)  # a cut-off upload leaves nothing behind
            raise
        return JSONResponse(image.summary(), status_code=202)

    async def image_details(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(workspace.details, request.path_params["image_id"]))
        except KeyError:
            return _error("no such image; it may have been uploaded to an earlier run of skipnas serve", 404)

    async def display(request: Request) -> Response:
        try:
            image = workspace.image(request.path_params["image_id"])
        except KeyError:
            return _error("no such image", 404)
        if image.display_png is None:
            return _error(f"{image.name} is not counted yet", 409)
        return Response(image.display_png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    async def edit(request: Request) -> Response:
        try:
            action = json.loads(await request.body())
        except ValueError:
            action = None
        if not isinstance(action, dict):
            return _error("a correction is a JSON object; reload the page", 400)
        try:
            return JSONResponse(await run_in_threadpool(workspace.edit, request.path_params["image_id"], action))
        except KeyError:
            return _error("no such image", 404)
        except SkipnasError as exc:
            return _error(str(exc), 409)

    async def download(request: Request) -> Response:
        which = request.path_params["which"]
        if which not in ("counts", "particles"):
            return _error("download counts.csv or particles.csv", 404)
        text = await run_in_threadpool(workspace.csv_text, which)
        return PlainTextResponse(text, media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="{which}.csv"'})

    async def save(request: Request) -> Response:
        try:
            return JSONResponse(await run_in_threadpool(workspace.save_dataset))
        except SkipnasError as exc:
            return _error(str(exc), 409)

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/overview", overview),
        Route("/api/images", upload, methods=["POST"]),
        Route("/api/images/{image_id}", image_details),
        Route("/api/images/{image_id}/display.png", display),
        Route("/api/images/{image_id}/edit", edit, methods=["POST"]),
        Route("/api/download/{which}.csv", download),
        Route("/api/save", save, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.workspace = workspace
    return app


def serve(workspace: Workspace, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Run the page with uvicorn until Ctrl-C."""
    import uvicorn

    try:
        uvicorn.run(create_app(workspace), host=host, port=port, log_level=log_level)
    finally:
        workspace.close()
