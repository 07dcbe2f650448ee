"""The operator token, the login cookie, and the cross-site check on mutations.

Every request but the login page needs the token: as `Authorization: Bearer <token>`, or
as the session cookie `/login` sets (HttpOnly, SameSite=Strict; its value is derived
from the token, never the token itself). Every POST must come from this site: a browser
says where a request comes from (Sec-Fetch-Site, Origin, Referer) and it must be this
host; a cookie-authenticated POST that says nothing is refused. Bearer clients (the CLI,
curl) send no Origin, and a cross-site page cannot set the Authorization header.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "saga_session"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD"})


class Guard:
    """Checks one request against the operator token."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an operator token is required")
        self._token = token.encode()
        self._session = hmac.new(self._token, b"saga-web-session", hashlib.sha256).hexdigest()

    def valid_token(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), self._token)

    def authenticated(self, request: Request) -> Literal["bearer", "cookie"] | None:
        """How the request proves it holds the token, if it does."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.valid_token(value.strip()):
            return "bearer"
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return "cookie"
        return None

    def log_in(self, response: Response, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            self._session,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    @staticmethod
    def log_out(response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def same_site(request: Request, *, via_cookie: bool) -> bool:
    """True when a state-changing request comes from a page of this very site."""
    host = request.headers.get("host", "")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer:
        return urlsplit(referer).netloc == host
    return not via_cookie


def local_path(target: str | None) -> str:
    """A redirect target that stays on this site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
