"""The FastAPI application behind ``xray-xai serve``: one server-rendered page and a small JSON API.

Routes::

    GET  /                      the upload form
    POST /                      the form's target: results page (or the form again with a 4xx error message)
    GET  /results/{id}/{file}   PNGs and result.json of a recent result (in memory, bounded; 404 once evicted)
    GET  /healthz               liveness
    GET  /api/models            offered models and explanation methods
    POST /api/predict           files (+ models) -> probabilities per view and model, study score
    POST /api/explain           files + model + methods -> probabilities and heatmaps (base64 PNG, optional maps)
    GET  /openapi.json          the API's schema (the interactive /docs pages are off: they load scripts from a CDN)

No asset is loaded from the internet: the page's CSS is inline and it has no script. The work itself is
:mod:`xray_xai.api` (through :mod:`xray_xai.web.service`, the rules of a shared server); this module only maps HTTP
to it and errors to 4xx answers.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUploadFile

from xray_xai import __version__, api
from xray_xai.errors import XrayXaiError, one_line
from xray_xai.web.service import (
    DEFAULT_METHOD,
    MAX_VIEWS,
    Analysis,
    ModelCache,
    RequestError,
    ResultCache,
    analyse,
    decode_uploads,
    explainer_names,
)

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "create_app", "is_loopback", "run_server"]

log = logging.getLogger("xray_xai.web")

DEFAULT_MAX_UPLOAD_MB = 20.0
_FORM_OVERHEAD = 256 * 1024  # multipart boundaries, headers and form fields on top of the files themselves
_TEMPLATES = Path(__file__).parent / "templates"
_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", _CSP.encode()),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from inside the body stream once a request passes the limit (FastAPI re-raises HTTPExceptions that
    happen while it parses a form, so this reaches our handler as a 413 rather than a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _too_large_message(limit))


def _too_large_message(limit: int) -> str:
    return f"upload too large: the limit is {round(limit / 2**20, 3):g} MB per request (server option --max-upload-mb)"


class _Guard:
    """ASGI middleware: refuse bodies over ``limit`` bytes while they arrive (by Content-Length at once, else by
    counting the stream), and add security headers to every response."""

    def __init__(self, app: ASGIApp, limit: int, files_limit: int, too_large: Callable[[Scope, str], Response]):
        self.app = app
        self.limit = limit
        self.files_limit = files_limit
        self.too_large = too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.limit:
                response = self.too_large(scope, _too_large_message(self.files_limit))
                await response(scope, receive, send_with_headers)
                return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.files_limit)
            return message

        await self.app(scope, counting_receive, send_with_headers)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Server:
    """What every route shares: the offered models, the result cache, the page template and the limits."""

    cache: ModelCache
    results: ResultCache
    env: Any  # jinja2.Environment
    max_upload_mb: float
    files_limit: int
    seed: int
    fixed: bool  # models given by the operator rather than read from the store

    def page(self, status: int = 200, **context: Any) -> HTMLResponse:
        """The page: the form, and the error or the result when ``context`` has one."""
        offered = self.cache.entries()
        default = self.cache.default_key()
        context.setdefault("chosen_models", [default] if default else [])
        context.setdefault("chosen_methods", [DEFAULT_METHOD])
        html = self.env.get_template("index.html").render(
            models=[e.to_dict() for e in offered.values()],
            methods=explainer_names(),
            max_upload_mb=self.max_upload_mb,
            max_views=MAX_VIEWS,
            threshold=api.DECISION_THRESHOLD,
            version=__version__,
            store=str(api.models_dir()),
            fixed=self.fixed,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def too_large(self, scope: Scope, message: str) -> Response:
        """The 413 answer of the body guard: JSON for the API, the page otherwise."""
        if str(scope.get("path", "")).startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=413)
        return self.page(413, error=message)

    async def read_uploads(self, files: Sequence[StarletteUploadFile] | None) -> list[tuple[str | None, bytes]]:
        """The uploads' bytes, in memory; the total is checked chunk by chunk against the limit."""
        out = []
        total = 0
        for upload in files or []:
            if not upload.filename and upload.size in (None, 0):
                continue  # a browser sends an empty part when no file was chosen
            chunks = []
            while chunk := await upload.read(1 << 20):
                total += len(chunk)
                if total > self.files_limit:
                    raise RequestError(_too_large_message(self.files_limit), 413)
                chunks.append(chunk)
            out.append((upload.filename, b"".join(chunks)))
            await upload.close()
        return out

    def default_keys(self, chosen: Sequence[str] | None) -> list[str]:
        """The model keys a request chose, or every offered model."""
        keys = [k for k in (chosen or []) if k]
        if keys:
            return keys
        offered = self.cache.keys()
        if not offered:
            raise RequestError(
                f"no model to use: none is stored in {api.models_dir()}; train one with `xray-xai train`, "
                "or start the server with --models",
                400,
            )
        return offered

    async def analyse(
        self, uploads: Sequence[tuple[str | None, bytes]], keys: Sequence[str], methods: Sequence[str], pngs: bool
    ) -> tuple[Analysis, dict[str, bytes]]:
        """Decode and analyse one request's uploads off the event loop; the analysis and (``pngs``) its PNGs."""
        films = await run_in_threadpool(decode_uploads, uploads)
        analysis = await run_in_threadpool(analyse, films, self.cache, keys, methods, seed=self.seed)
        blobs = await run_in_threadpool(analysis.files) if pngs else {}
        return analysis, blobs


def create_app(
    models: Sequence[Any] | None = None,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    result_cache_size: int = 32,
    seed: int = 0,
) -> FastAPI:
    """The web application. ``models``: registered names (newest stored checkpoint), checkpoint paths or Model
    instances to offer; None offers every model in the store. ``max_upload_mb`` caps one request's files."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    if max_upload_mb <= 0:
        raise ValueError("max_upload_mb must be positive")
    server = _Server(
        cache=ModelCache(models),
        results=ResultCache(max_entries=result_cache_size),
        env=Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=select_autoescape(["html"])),
        max_upload_mb=max_upload_mb,
        files_limit=int(max_upload_mb * 2**20),
        seed=seed,
        fixed=models is not None,
    )
    app = FastAPI(
        title="xray-xai",
        version=__version__,
        description="Abnormality probabilities and heatmaps for musculoskeletal radiographs (research use only).",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN; the schema stays at /openapi.json
        redoc_url=None,
    )
    app.state.models = server.cache
    app.state.results = server.results
    app.state.max_upload_bytes = server.files_limit
    app.add_middleware(
        _Guard, limit=server.files_limit + _FORM_OVERHEAD, files_limit=server.files_limit, too_large=server.too_large
    )
    _add_error_handlers(app, server)
    _add_page_routes(app, server)
    _add_api_routes(app, server)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _add_error_handlers(app: FastAPI, server: _Server) -> None:
    """HTTP errors and xray-xai errors as ``{"detail": one line}`` for the API, the page with the message otherwise."""

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        if _is_api(request) or (exc.status_code == 404 and request.url.path.startswith("/results/")):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return server.page(exc.status_code, error=str(exc.detail))

    @app.exception_handler(XrayXaiError)
    async def _app_error(request: Request, exc: XrayXaiError) -> Response:
        status = exc.status if isinstance(exc, RequestError) else 500
        message = one_line(exc) if isinstance(exc, RequestError) else f"server error: {one_line(exc)}"
        if status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, message)
        if _is_api(request):
            return JSONResponse({"detail": message}, status_code=status)
        return server.page(status, error=message)


def _add_page_routes(app: FastAPI, server: _Server) -> None:
    """The form, its results page and the downloads of a recent result."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return server.page()

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def submit(request: Request) -> HTMLResponse:
        # parsed here rather than by FastAPI: a browser with no file chosen sends an empty part that is not a file
        async with request.form(max_files=MAX_VIEWS + 8, max_fields=200) as form:
            files = [f for f in form.getlist("files") if isinstance(f, StarletteUploadFile)]
            chosen_models = [m for m in form.getlist("models") if isinstance(m, str) and m]
            chosen_methods = [m for m in form.getlist("methods") if isinstance(m, str) and m]
            context: dict[str, Any] = {
                "chosen_models": chosen_models or [k for k in [server.cache.default_key()] if k],
                "chosen_methods": chosen_methods,
            }
            try:
                uploads = await server.read_uploads(files)
            except RequestError as exc:
                return server.page(exc.status, error=str(exc), **context)
        try:
            if not chosen_models:
                raise RequestError("choose at least one model")
            analysis, blobs = await server.analyse(uploads, chosen_models, chosen_methods, pngs=True)
        except RequestError as exc:
            return server.page(exc.status, error=str(exc), **context)
        root = request.scope.get("root_path", "")
        shown: dict[str, Any] = {}

        def as_json(rid: str) -> bytes:  # the JSON links to the files under the id it is stored with
            shown.update(analysis.to_dict(lambda name: f"{root}/results/{rid}/{name}"))
            return _json_bytes(shown)

        rid = server.results.put(blobs, as_json)
        json_url = f"{root}/results/{rid}/result.json"
        return server.page(result=shown, result_id=rid, result_json=json_url, **context)

    @app.get("/results/{rid}/{name}", include_in_schema=False)
    def result_file(rid: str, name: str) -> Response:
        item = server.results.get(rid)
        if item is None:
            raise HTTPException(404, "result not found (results are kept in memory for a limited time)")
        if name == "result.json":
            return Response(item.json, media_type="application/json")
        blob = item.files.get(name)
        if blob is None:
            raise HTTPException(404, "no such file in this result")
        return Response(blob, media_type="image/png", headers={"cache-control": "private, max-age=3600"})


def _add_api_routes(app: FastAPI, server: _Server) -> None:
    """The JSON API: liveness, the offered models and methods, predict, explain."""

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness: the server answers and which version it runs."""
        return {"status": "ok", "version": __version__}

    @app.get("/api/models", tags=["api"])
    def list_models() -> dict[str, Any]:
        """The models this server offers (keys to send as ``models``/``model``, each with its ``provenance``: name,
        training data, AUROC), the one the page preselects (``default_model``) and the explanation methods."""
        return {
            "models": [e.to_dict() for e in server.cache.entries().values()],
            "default_model": server.cache.default_key(),
            "methods": explainer_names(),
            "default_method": DEFAULT_METHOD,
            "threshold": api.DECISION_THRESHOLD,
            "max_upload_mb": server.max_upload_mb,
            "max_views": MAX_VIEWS,
        }

    @app.post("/api/predict", tags=["api"])
    async def predict(
        files: list[UploadFile] = File(..., description="one radiograph, or several views of one study"),
        models: list[str] | None = Form(None, description="model keys (default: every offered model)"),
    ) -> dict[str, Any]:
        """Probability of abnormal for each view under each model, and the study score (mean over views)."""
        uploads = await server.read_uploads(files)
        analysis, _ = await server.analyse(uploads, server.default_keys(models), (), pngs=False)
        return analysis.to_dict()

    @app.post("/api/explain", tags=["api"])
    async def explain(
        files: list[UploadFile] = File(..., description="one radiograph, or several views of one study"),
        model: str | None = Form(None, description="model key (default: the page's preselected model)"),
        methods: list[str] | None = Form(None, description=f"explanation methods (default: {DEFAULT_METHOD})"),
        maps: bool = Form(False, description="also return each map as nested lists of floats in [0, 1]"),
    ) -> dict[str, Any]:
        """Probabilities plus, per method and view, the heatmap over the film and the bare map as base64 PNGs."""
        uploads = await server.read_uploads(files)
        default = server.cache.default_key()  # the best real-data model, as the page preselects
        keys = [model] if model else ([default] if default else server.default_keys(None)[:1])
        chosen = [m for m in (methods or []) if m] or [DEFAULT_METHOD]
        analysis, blobs = await server.analyse(uploads, keys, chosen, pngs=True)
        return analysis.to_dict(lambda n: base64.b64encode(blobs[n]).decode("ascii"), maps=maps)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


def run_server(
    host: str = "127.0.0.1",
    port: int = 8000,
    models: Sequence[str | Path] | None = None,
    *,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    log_level: str = "info",
    warn: Callable[[str], None] | None = None,
) -> None:
    """Serve the app with uvicorn until interrupted. Binding anything but loopback is warned about via ``warn``."""
    import uvicorn

    if not is_loopback(host) and warn is not None:
        warn(
            f"WARNING: binding {host}:{port} makes this server reachable from other machines. It has no "
            "authentication and no TLS; do not expose it to untrusted networks or upload patient data over them."
        )
    app = create_app(models, max_upload_mb=max_upload_mb)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, proxy_headers=False)
