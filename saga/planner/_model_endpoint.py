"""The planner's OpenAI-compatible endpoint, and its failures in words a person can act on.

Runs in the model activity, on the worker. Each failure of the endpoint becomes one
``ApplicationError`` whose message says what happened and where:

- not reached (refused, DNS, TLS, time-out): "the model could not be reached at <base
  url>: <reason>"; retried by the activity's retry policy.
- an HTTP error status: "the model endpoint <url> answered HTTP 401 Unauthorized: <the
  server's own message>"; 408/409/429/5xx are retried, other 4xx are not (a wrong key or
  model name does not heal), and the server's ``x-should-retry`` / ``retry-after`` win.
- a 2xx whose body is not a chat completion or a response (a proxy's HTML login page, some
  other JSON): "the model endpoint <url> answered 200 with something that is not an OpenAI
  response (text/html: '<!DOCTYPE html>...')"; not retried.

The ``openai`` client returns a 2xx body that is not JSON as a plain string, and the agents
SDK then fails on it far from the cause (``'tuple' object has no attribute 'choices'``).
A response hook on the client's HTTP connection checks the body's shape where it arrives.

The API key never appears in a message: it is redacted from whatever the server says, and
the ``openai`` exception (whose text quotes the server) is not chained into the failure
that Temporal stores in history. URLs are shown without user info or query.
"""

from __future__ import annotations

import http
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, TypeVar

import httpx2
from agents import Model, ModelResponse
from agents.items import TResponseStreamEvent
from openai import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AsyncOpenAI,
    DefaultAsyncHttpxClient,
    OpenAIError,
)
from temporalio.exceptions import ApplicationError

MODEL_UNREACHABLE = "ModelUnreachable"
MODEL_HTTP_ERROR = "ModelHTTPError"
MODEL_BAD_RESPONSE = "ModelBadResponse"
MODEL_FAILURES = frozenset({MODEL_UNREACHABLE, MODEL_HTTP_ERROR, MODEL_BAD_RESPONSE})
"""``ApplicationError.type`` of the failures raised here; their message is the headline."""

SNIPPET = 80  # characters of a bad 2xx body shown
MESSAGE = 300  # characters of a server's error message shown
RETRYABLE_STATUS = frozenset({408, 409, 429})
# What a successful answer of each API is, at the least: the list the agents SDK reads.
_PAYLOAD_KEY = {"/chat/completions": "choices", "/responses": "output"}
_TAG = re.compile(r"<[^>]*>")
E = TypeVar("E", bound=BaseException)


class NotAnOpenAIResponse(APIResponseValidationError):
    """A 2xx answer whose body is not the payload the API returns."""


def shown_url(url: httpx2.URL | str) -> str:
    """``url`` without user info, query or fragment (which may hold credentials)."""
    u = httpx2.URL(str(url))
    return str(u.copy_with(userinfo=b"", query=None, fragment=None)).rstrip("/")


class ModelEndpoint:
    """The ``openai`` client of one endpoint, and the translation of its failures."""

    def __init__(
        self, api_key: str, base_url: str | None, model: str, timeout_seconds: float
    ) -> None:
        self._key = api_key
        self._model = model
        self._timeout = timeout_seconds
        self.client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # the activity's retry policy retries, durably
            timeout=timeout_seconds,
            http_client=DefaultAsyncHttpxClient(
                timeout=timeout_seconds, event_hooks={"response": [self._check_payload]}
            ),
        )
        self.base_url = shown_url(self.client.base_url)

    def model(self, inner: Model) -> Model:
        """``inner`` (a model on ``self.client``) with its failures translated."""
        return EndpointModel(inner, self)

    # -- the body of a 2xx answer ------------------------------------------------------
    async def _check_payload(self, response: httpx2.Response) -> None:
        if not response.is_success:
            return  # the client raises its status error
        path = response.request.url.path
        key = next((k for end, k in _PAYLOAD_KEY.items() if path.endswith(end)), None)
        if key is None or "event-stream" in response.headers.get("content-type", ""):
            return
        await response.aread()
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get(key), list):
            return
        # An OpenAIError: the client passes it on as it is, not as a connection error.
        raise NotAnOpenAIResponse(response, body=None, message=self._bad_payload(response))

    def _bad_payload(self, response: httpx2.Response) -> str:
        kind = response.headers.get("content-type", "no content type").split(";")[0].strip()
        text = " ".join(response.text.split())
        snippet = text[:SNIPPET] + ("..." if len(text) > SNIPPET else "")
        return (
            f"the model endpoint {shown_url(response.request.url)} answered "
            f"{response.status_code} with something that is not an OpenAI response "
            f"({kind or 'no content type'}: '{self._redact(snippet)}')"
        )

    # -- failures ------------------------------------------------------------------------
    def failure(self, exc: OpenAIError) -> ApplicationError | None:
        """The failure to raise for ``exc``; None when it is not the endpoint's."""
        if isinstance(exc, APIResponseValidationError):
            message = (
                str(exc)
                if isinstance(exc, NotAnOpenAIResponse)
                else self._bad_payload(exc.response)
            )
            return ApplicationError(message, type=MODEL_BAD_RESPONSE, non_retryable=True)
        if isinstance(exc, APIStatusError):
            return self._status_failure(exc)
        if isinstance(exc, APIConnectionError):  # APITimeoutError included
            return ApplicationError(
                f"the model could not be reached at {self.base_url}: {self._reason(exc)}",
                type=MODEL_UNREACHABLE,
            )
        return None

    def _status_failure(self, exc: APIStatusError) -> ApplicationError:
        response = exc.response
        code = response.status_code
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = response.reason_phrase
        should_retry = response.headers.get("x-should-retry")
        if should_retry in ("true", "false"):
            retryable = should_retry == "true"
        else:
            retryable = code in RETRYABLE_STATUS or code >= 500
        hint = ""
        if code in (401, 403):
            hint = " (check OPENAI_API_KEY)"
        elif code == 404:
            hint = f" (check the model name {self._model!r}, SAGA_MODEL, and OPENAI_BASE_URL)"
        return ApplicationError(
            f"the model endpoint {shown_url(response.request.url)} answered HTTP {code} "
            f"{phrase}: {self._server_message(response)}{hint}",
            type=MODEL_HTTP_ERROR,
            non_retryable=not retryable,
            next_retry_delay=_retry_after(response),
        )

    def _server_message(self, response: httpx2.Response) -> str:
        """The server's own words: the JSON error's message, else the text's first line."""
        text = response.text
        message: Any = None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                message = error.get("message")
            elif isinstance(error, str):
                message = error
            message = message or data.get("message") or data.get("detail")
        if message is None:
            if "html" in response.headers.get("content-type", ""):
                text = _TAG.sub(" ", text)
            message = next((line for line in text.splitlines() if line.strip()), "")
        words = " ".join(str(message).split()) if message else ""
        if len(words) > MESSAGE:
            words = words[: MESSAGE - 3] + "..."
        return self._redact(words) or "(no message)"

    def _reason(self, exc: APIConnectionError) -> str:
        if isinstance(exc, APITimeoutError):
            what = "no connection" if _in_chain(exc, httpx2.ConnectTimeout) else "no answer"
            return f"{what} within {self._timeout:g} s (SAGA_MODEL_TIMEOUT_SECONDS)"
        if _in_chain(exc, ConnectionRefusedError):
            return "connection refused (is the server running?)"
        dns = _in_chain(exc, socket.gaierror)
        if dns is not None:
            host = exc.request.url.host if exc.request is not None else "?"
            return f"the host name {host!r} does not resolve ({dns.strerror or dns})"
        tls = _in_chain(exc, ssl.SSLError)
        if tls is not None:
            return f"TLS failed: {tls.reason or tls}"
        inner: BaseException = exc
        while inner.__cause__ is not None:
            inner = inner.__cause__
        return self._redact(str(inner) or type(inner).__name__)

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


class EndpointModel(Model):
    """A model whose endpoint failures are raised as the endpoint's ``ApplicationError``."""

    def __init__(self, wrapped: Model, endpoint: ModelEndpoint) -> None:
        self.wrapped = wrapped
        self._endpoint = endpoint

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        try:
            return await self.wrapped.get_response(*args, **kwargs)
        except OpenAIError as exc:
            failure = self._endpoint.failure(exc)
            if failure is None:
                raise
            # ``from None``: the openai error, whose text quotes the server, is neither
            # the cause nor the context of the failure Temporal records.
            raise failure from None

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        try:
            async for event in self.wrapped.stream_response(*args, **kwargs):
                yield event
        except OpenAIError as exc:
            failure = self._endpoint.failure(exc)
            if failure is None:
                raise
            raise failure from None

    async def close(self) -> None:
        await self.wrapped.close()


def _in_chain(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` in ``exc``'s causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _retry_after(response: httpx2.Response) -> timedelta | None:
    for header, unit in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return timedelta(seconds=float(value) * unit)
        except ValueError:
            return None  # an HTTP date: let the retry policy decide
    return None
