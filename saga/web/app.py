"""The saga web app: a live page per saga with Approve, Reject, Cancel, Retry, Resolve.

Pages are plain HTML files of this package; a small script polls the JSON API (once a
second) and re-renders. Every button is a POST to `/api/sagas/{id}/<action>`, documented
in the OpenAPI schema at `/openapi.json`.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.middleware.base import RequestResponseEndpoint
from temporalio.client import Client
from temporalio.service import RPCError

from saga._audit import AuditEntry
from saga._errors import SagaError
from saga._metrics import waiting_now
from saga._people import Person
from saga._settings import Settings
from saga._worker import connect
from saga.web._auth import SAFE_METHODS, Brake, Guard, local_path, same_site
from saga.web._decisions import Decisions, LedgerAccess
from saga.web._roles import Me, forbidden, required_permission
from saga.web._service import (
    CancelOutcome,
    SagaConflict,
    SagaNotFound,
    SagaService,
    SagaSummary,
    SagaView,
)

log = logging.getLogger(__name__)

TOKEN_ENV = "SAGA_WEB_TOKEN"
ClientFactory = Callable[[], Awaitable[Client]]

_ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_OPEN_PATHS = frozenset({"/login", "/static/style.css"})
_TOKEN_PARAM = re.compile(r"([?&]token=)[^&\s]*")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _asset(name: str) -> str:
    return resources.files("saga.web").joinpath(name).read_text(encoding="utf-8")


def operator_token(token: str | None = None) -> str:
    """The operator token: given, or from the SAGA_WEB_TOKEN environment variable."""
    token = token or os.environ.get(TOKEN_ENV, "")
    if not token:
        raise SagaError(f"no operator token: set {TOKEN_ENV} (or pass a token)")
    return token


class ApproveBody(BaseModel):
    plan_hash: str = Field(description="Hash of the plan shown to the operator.")
    by: str | None = Field(
        None, max_length=100, description="Ignored: the approval records who you are."
    )


class RejectBody(BaseModel):
    reason: str | None = Field(None, max_length=1000)
    by: str | None = Field(
        None, max_length=100, description="Ignored: the rejection records who you are."
    )


class StepBody(BaseModel):
    step_id: str


class ResolveBody(BaseModel):
    step_id: str
    note: str | None = Field(None, max_length=1000)


def create_app(
    settings: Settings | None = None,
    client_factory: ClientFactory | None = None,
    *,
    token: str | None = None,
    brake: Brake | None = None,
) -> FastAPI:
    """The web app; it connects to Temporal (via ``client_factory``) on first use."""
    settings = settings or Settings()
    access = LedgerAccess(settings)
    guard = Guard(operator_token(token), access.people)
    brake = brake or Brake()
    factory: ClientFactory = client_factory or (lambda: connect(settings))
    app = FastAPI(
        title="Saga",
        summary="Watch sagas run; approve, reject, cancel; settle stuck compensations.",
        version="1",
    )
    lock = asyncio.Lock()
    services: list[SagaService] = []
    decisions = Decisions(access)

    async def sagas() -> SagaService:
        async with lock:
            if not services:
                try:
                    client = await factory()
                except Exception as exc:
                    log.warning("cannot reach Temporal: %s", exc)
                    raise HTTPException(503, f"cannot reach Temporal: {exc}") from None
                services.append(SagaService(client))
        return services[0]

    def login_page(request: Request, status: int, error: str = "") -> HTMLResponse:
        target = local_path(request.query_params.get("next") or request.url.path)
        if target == "/login":
            target = "/"
        page = (
            _asset("login.html")
            .replace("{{next}}", html.escape(target, quote=True))
            .replace("{{error}}", html.escape(error))
        )
        return HTMLResponse(page, status_code=status)

    @app.middleware("http")
    async def security(request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path not in _OPEN_PATHS:
            who = await guard.identify(request)
            if who is None:
                if request.headers.get("authorization"):  # a wrong token: slowed, recorded
                    await refused_login(request, "api")
                wants_page = request.method == "GET" and "text/html" in request.headers.get(
                    "accept", ""
                )
                if wants_page and not path.startswith("/api/"):
                    response: Response = login_page(request, 401)
                else:
                    response = JSONResponse(
                        {"detail": "a token is required (yours, or SAGA_WEB_TOKEN)"},
                        status_code=401,
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                return _harden(response, path)
            person, how = who
            request.state.person, request.state.auth = person, how
            if request.method not in SAFE_METHODS and not same_site(
                request, via_cookie=how == "cookie"
            ):
                return _harden(
                    JSONResponse({"detail": "cross-site request refused"}, status_code=403), path
                )
            needed = required_permission(request.method, path)
            if needed is not None and not person.may(needed):
                return _harden(JSONResponse({"detail": forbidden(person, needed)}, 403), path)
        elif request.method not in SAFE_METHODS and not same_site(request, via_cookie=True):
            return _harden(
                JSONResponse({"detail": "cross-site request refused"}, status_code=403), path
            )
        return _harden(await call_next(request), path)

    @app.exception_handler(SagaNotFound)
    async def not_found(request: Request, exc: SagaNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(SagaConflict)
    async def conflict(request: Request, exc: SagaConflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(RPCError)
    async def temporal_error(request: Request, exc: RPCError) -> JSONResponse:
        log.warning("temporal error on %s: %s", request.url.path, exc.message)
        return JSONResponse({"detail": f"temporal: {exc.message}"}, status_code=502)

    # -- login ---------------------------------------------------------------------------
    async def refused_login(request: Request, via: str = "web") -> None:
        """A wrong token: recorded, and answered later the more this client guesses."""
        client = request.client.host if request.client else "?"
        await decisions.refused_login(client, via)
        await brake.failed(client)

    @app.get("/login", include_in_schema=False)
    async def login(request: Request, token: str | None = None) -> Response:
        if token is None:
            return login_page(request, 200)
        person = await guard.person_of_token(token)
        if person is None:
            await refused_login(request)
            return login_page(request, 401, "That is not a valid token.")
        response = RedirectResponse(local_path(request.query_params.get("next")), 303)
        await guard.log_in(response, request, person)
        return response

    @app.post("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        person = await guard.person_of_token(token)
        if person is None:
            await refused_login(request)
            return login_page(request, 401, "That is not a valid token.")
        response = RedirectResponse(local_path((form.get("next") or ["/"])[0]), 303)
        await guard.log_in(response, request, person)
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", 303)
        await guard.log_out(request, response)
        return response

    @app.get("/api/me", tags=["people"])
    async def me(request: Request) -> Me:
        """Who you are here, your role and what it lets you do."""
        person: Person = request.state.person
        return Me(name=person.name, role=person.role, permissions=person.permissions)

    # -- pages ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(_asset("index.html"))

    @app.get("/sagas/{saga_id}", include_in_schema=False)
    async def saga_page(saga_id: str) -> HTMLResponse:
        return HTMLResponse(_asset("saga.html"))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404)
        return Response(_asset(name), media_type=_ASSETS[name])

    # -- API -----------------------------------------------------------------------------
    @app.get("/api/sagas", tags=["sagas"])
    async def list_sagas(
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        status: Annotated[list[str] | None, Query(description="saga statuses")] = None,
        q: Annotated[str | None, Query(max_length=200, description="words to find")] = None,
        min_amount: Annotated[int | None, Query(ge=0, description="minor units")] = None,
    ) -> list[SagaSummary]:
        """Sagas, newest first: by status, words of the request or summary, least amount."""
        try:
            return await (await sagas()).list(
                limit, statuses=status or [], words=q, min_amount=min_amount
            )
        except SagaError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.get("/api/sagas/{saga_id}", tags=["sagas"])
    async def get_saga(saga_id: str) -> SagaView:
        """The saga's live state (card numbers masked), its outcome and what can be done."""
        return await (await sagas()).view(saga_id)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus: the sagas waiting for a person now (needs attention, approval);
        any role may read it (a viewer's token is enough)."""
        text = await waiting_now((await sagas()).client)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/sagas/{saga_id}/cancel", tags=["actions"])
    async def cancel(
        saga_id: str,
        request: Request,
        response: Response,
        wait: Annotated[float, Query(ge=0, le=120)] = 0,
    ) -> CancelOutcome:
        """Cancel a running saga: its completed steps are compensated in reverse order.

        A saga that already closed is left alone ("already completed: nothing was
        cancelled"). With `wait`, wait up to that many seconds for the saga to close;
        202 means the compensation is still running.
        """
        service = await sagas()
        result = await decisions.decide(
            request,
            "cancel",
            saga_id,
            service.cancel(saga_id, wait=wait),
            outcome=lambda r: f"no effect: {r.message}" if r.cancelled is False else "done",
        )
        if result.cancelled is None:
            response.status_code = 202
        return result

    @app.post("/api/sagas/{saga_id}/approve", tags=["actions"])
    async def approve(saga_id: str, body: ApproveBody, request: Request) -> SagaView:
        """Approve the plan whose hash the operator saw; a stale hash is refused (409)."""
        run = (await sagas()).approve(saga_id, body.plan_hash, request.state.person.name)
        detail = f"plan hash {body.plan_hash}"
        return await decisions.decide(request, "approve", saga_id, run, detail=detail)

    @app.post("/api/sagas/{saga_id}/reject", tags=["actions"])
    async def reject(saga_id: str, body: RejectBody, request: Request) -> SagaView:
        """Reject the plan waiting for approval; nothing runs."""
        run = (await sagas()).reject(saga_id, body.reason, request.state.person.name)
        detail = f"reason {body.reason}" if body.reason else None
        return await decisions.decide(request, "reject", saga_id, run, detail=detail)

    @app.post("/api/sagas/{saga_id}/retry", tags=["actions"])
    async def retry(saga_id: str, body: StepBody, request: Request) -> SagaView:
        """Give a stuck compensation a fresh retry budget."""
        run = (await sagas()).retry(saga_id, body.step_id)
        return await decisions.decide(request, "retry", saga_id, run, step_id=body.step_id)

    @app.post("/api/sagas/{saga_id}/resolve", tags=["actions"])
    async def resolve(saga_id: str, body: ResolveBody, request: Request) -> SagaView:
        """Mark a stuck compensation resolved by hand; the saga moves on."""
        run = (await sagas()).resolve(saga_id, body.step_id, body.note)
        detail = f"note {body.note}" if body.note else None
        return await decisions.decide(
            request, "resolve", saga_id, run, step_id=body.step_id, detail=detail
        )

    @app.get("/api/sagas/{saga_id}/audit", tags=["sagas"])
    async def saga_audit(saga_id: str) -> list[AuditEntry]:
        """Who decided what about this saga, when, and how it turned out; oldest first."""
        return await decisions.of(saga_id)

    return app


def _harden(response: Response, path: str) -> Response:
    headers = response.headers
    if path not in ("/docs", "/redoc"):  # FastAPI's docs pages load their own scripts
        headers.setdefault("Content-Security-Policy", _CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("Cache-Control", "no-store")
    return response


def serve(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
) -> None:
    """Run the web app until interrupted (`saga web`); token defaults to SAGA_WEB_TOKEN."""
    import uvicorn

    app = create_app(settings, token=token)
    logging.getLogger("uvicorn.access").addFilter(_HideToken())
    log.info("saga web on http://%s:%s (log in with the operator token)", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")


class _HideToken(logging.Filter):
    """Keep `/login?token=...` out of the access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_PARAM.sub(r"\1[hidden]", a) if isinstance(a, str) else a for a in record.args
            )
        return True
