"""Bad files and settings as one line per problem, naming what to fix.

The command line's contract: whatever a user gives it (a file, a setting, a URL) that it
cannot use is reported as one line per problem, never as a traceback or a pydantic dump.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.service import RPCError

from saga._errors import PlanRejected, Refused
from saga._limits import MAX_FILE_BYTES, MAX_JSON_DEPTH
from saga._policy import Policy
from saga._settings import Settings

_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")


def first_line(text: object) -> str:
    """The first non-blank line of ``text`` (drivers add hints and links below it)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return type(text).__name__


def read_json_file(path: Traversable, what: str) -> Any:
    """The JSON value in a plan or policy file, or :class:`Refused` saying what is wrong."""
    if not path.is_file():
        raise Refused([f"{what} file not found: {path}"])
    try:
        if isinstance(path, Path) and (size := path.stat().st_size) > MAX_FILE_BYTES:
            raise Refused(
                [
                    f"{what} file {path} is {size:,} bytes, "
                    f"over the limit of {MAX_FILE_BYTES:,} bytes"
                ]
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Refused([f"{what} file {path}: cannot read it ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise Refused([f"{path}: not UTF-8 text"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refused([f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"]) from None
    except RecursionError:
        raise Refused(
            [f"{path}: nests too deeply to read (a {what} may nest {MAX_JSON_DEPTH} levels)"]
        ) from None


def model_problems(where: object, exc: ValidationError) -> list[str]:
    """One line per validation error of a file's content, naming the file and the field."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"])
        problems.append(f"{where}: {field + ': ' if field else ''}{error['msg']}")
    return problems


def problem_lines(exc: BaseException) -> list[str]:
    """What was refused, one line per problem, as the command line and the MCP server
    say it: a rejected plan's problems, a refusal's, a model's validation errors, a
    Temporal refusal, or the error's own text on one line."""
    if isinstance(exc, PlanRejected):
        return [f"plan rejected: {problem}" for problem in exc.problems]
    if isinstance(exc, Refused):
        return list(exc.problems)
    if isinstance(exc, ValidationError):
        return model_problems(exc.title, exc)
    if isinstance(exc, RPCError):
        return [f"Temporal refused: {exc.message}"]
    return [" ".join(str(exc).splitlines())]


def read_policy_file(path: Path) -> Policy:
    """The policy in ``path`` (``SAGA_POLICY_FILE``), or :class:`Refused` with one line per
    problem naming the file and the field. The CLI and the worker read it the same way."""
    data = read_json_file(path, "policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise Refused(model_problems(path, exc)) from None


def hide_password(url: str) -> str:
    """``url`` with any password replaced by ``***``, parseable or not."""
    return _PASSWORD.sub(r"\1***@", url)


def database_problem(variable: str, url: str, exc: BaseException) -> str:
    """One line on why the database at ``url`` (read from ``variable``) cannot be used."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    shown = hide_password(url)
    if isinstance(exc, NoSuchModuleError):  # an ArgumentError too
        reason = f"unknown kind of database in {shown} ({first_line(exc)})"
    elif isinstance(exc, ArgumentError):
        reason = (
            f"not a database URL: {shown!r} "
            "(e.g. postgresql+psycopg://user@host/db or sqlite:///path/file.db)"
        )
    elif isinstance(exc, ImportError):
        reason = f"the database driver for {shown} is not installed ({exc.name or exc})"
    elif isinstance(exc, DBAPIError):
        reason = f"cannot use {shown}: {first_line(exc.orig)}"
    else:
        reason = f"cannot use {shown}: {first_line(exc)}"
    return f"{variable}: {reason}"


@contextlib.contextmanager
def database_errors(variable: str, url: str) -> Iterator[None]:
    """Turn a database that cannot be opened into :class:`Refused` naming ``variable``."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise Refused([database_problem(variable, url, exc)]) from None


def check_database(variable: str, url: str) -> None:
    """Connect once to the database at ``url``; :class:`Refused` naming ``variable`` if not."""
    from sqlalchemy import create_engine

    with database_errors(variable, url):
        engine = create_engine(url)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()


def system_problem(settings: Settings, exc: BaseException) -> str | None:
    """One line on an external system `saga reconcile` could not read, naming its setting.

    None when ``exc`` is not about reaching a system (a bug keeps its traceback).
    """
    import httpx
    import stripe
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, stripe.StripeError):
        where = settings.stripe_api_base or "api.stripe.com"
        if isinstance(exc, stripe.AuthenticationError):
            return f"SAGA_STRIPE_API_KEY: Stripe at {where} refused the key"
        if isinstance(exc, stripe.APIConnectionError):
            return f"SAGA_STRIPE_API_BASE: cannot reach Stripe at {where}"
        return f"SAGA_STRIPE_API_BASE: Stripe at {where} answered: {first_line(exc)}"
    if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 401:
        return f"SAGA_REDMINE_API_KEY: Redmine at {settings.redmine_url} refused the key"
    if isinstance(exc, httpx.HTTPError):
        return f"SAGA_REDMINE_URL: cannot read Redmine at {settings.redmine_url}: {first_line(exc)}"
    if isinstance(exc, SQLAlchemyError):
        variable = "SAGA_INVENTORY_URL" if settings.inventory_url else "SAGA_DATA_DIR"
        return database_problem(variable, settings.inventory_db_url(), exc)
    return None
