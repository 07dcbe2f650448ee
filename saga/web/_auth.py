"""Who is asking: the bootstrap token, a person's token, or a login session; the
cross-site check on mutations; and the brake on guessed tokens.

Every request but the login page needs an identity: `Authorization: Bearer <token>` (the
bootstrap ``SAGA_WEB_TOKEN``, an admin, or a person's own token, see saga._people), or
the session cookie `/login` sets (HttpOnly, SameSite=Strict). Each login is a session of
its own: a random id (only its hash is stored) that expires, and that logout, revocation
and token rotation end. Every POST must come from this site: a browser says where a
request comes from (Sec-Fetch-Site, Origin, Referer) and it must be this host; a
cookie-authenticated POST that says nothing is refused. Wrong tokens from one client
are slowed down, more with each one (:class:`Brake`), and recorded in the audit trail.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from saga._errors import SagaError
from saga._people import BOOTSTRAP, MIN_TOKEN_CHARS, People, Person, Role

COOKIE = "saga_session"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD"})
How = Literal["bearer", "cookie"]


def check_bootstrap_token(token: str) -> str:
    if len(token) < MIN_TOKEN_CHARS:
        raise SagaError(
            f"SAGA_WEB_TOKEN: at least {MIN_TOKEN_CHARS} characters (got {len(token)}); "
            "e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return token


class Guard:
    """Tells who a request comes from: the bootstrap admin or a person."""

    def __init__(self, token: str, people: Callable[[], Awaitable[People]] | None = None) -> None:
        self._token = check_bootstrap_token(token).encode()
        self._people = people
        self.admin = Person(name=BOOTSTRAP, role=Role.ADMIN)

    async def people(self) -> People | None:
        """The people store (the ledger's database), opened on first use."""
        return None if self._people is None else await self._people()

    async def person_of_token(self, candidate: str | None) -> Person | None:
        if not candidate:
            return None
        if hmac.compare_digest(candidate.encode(), self._token):
            return self.admin
        people = await self.people()
        return None if people is None else await asyncio.to_thread(people.by_token, candidate)

    async def identify(self, request: Request) -> tuple[Person, How] | None:
        """Who the request comes from, and how it proves it."""
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            person = await self.person_of_token(value.strip())
            return (person, "bearer") if person is not None else None
        sid = request.cookies.get(COOKIE)
        people = await self.people() if sid else None
        if not sid or people is None:
            return None
        name = await asyncio.to_thread(people.session, sid)
        if name is None:
            return None
        if name == BOOTSTRAP:
            return self.admin, "cookie"
        person = await asyncio.to_thread(people.get, name)
        return (person, "cookie") if person is not None and person.revoked_at is None else None

    async def log_in(self, response: Response, request: Request, person: Person) -> None:
        people = await self.people()
        if people is None:
            raise SagaError("logins need the ledger's database (SAGA_DATABASE_URL)")
        sid = await asyncio.to_thread(
            people.open_session, person.name, timedelta(seconds=SESSION_SECONDS)
        )
        response.set_cookie(
            COOKIE,
            sid,
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def log_out(self, request: Request, response: Response) -> None:
        sid = request.cookies.get(COOKIE)
        people = await self.people() if sid else None
        if sid and people is not None:
            await asyncio.to_thread(people.end_session, sid)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


class Brake:
    """Slows down one client's wrong tokens: after ``free`` within ``window`` seconds,
    each further one waits twice as long as the last (``first`` seconds, at most
    ``most``). Kept in memory, per client address."""

    def __init__(
        self, free: int = 5, window: float = 600, first: float = 0.25, most: float = 8.0
    ) -> None:
        self.free, self.window, self.first, self.most = free, window, first, most
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def delay(self, client: str) -> float:
        """How long this client's next answer to a wrong token waits."""
        failures = self._failures[client]
        now = time.monotonic()
        while failures and now - failures[0] > self.window:
            failures.popleft()
        over = len(failures) - self.free
        return 0.0 if over < 0 else min(self.first * 2**over, self.most)

    async def failed(self, client: str) -> None:
        """Record a wrong token from ``client`` and wait as long as its record says."""
        wait = self.delay(client)
        self._failures[client].append(time.monotonic())
        if wait:
            await asyncio.sleep(wait)


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
