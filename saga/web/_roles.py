"""What each request needs of its person's role, and the 403 that says so."""

from __future__ import annotations

import re

from pydantic import BaseModel

from saga._people import PERMISSIONS, Permission, Person, Role
from saga.web._auth import SAFE_METHODS


class Me(BaseModel):
    name: str
    role: Role
    permissions: list[str]


_ACTIONS = {
    "cancel": Permission.CANCEL,
    "approve": Permission.APPROVE,
    "reject": Permission.REJECT,
    "retry": Permission.RETRY,
    "resolve": Permission.RESOLVE,
}
_ACTION_PATH = re.compile(r"^/api/sagas/[^/]+/(?P<action>[a-z_]+)$")


def required_permission(method: str, path: str) -> Permission | None:
    """What a request needs: reading for every GET; a saga action its own; None for
    logging out (anyone may)."""
    if method in SAFE_METHODS:
        return Permission.READ
    if path == "/logout":
        return None
    match = _ACTION_PATH.match(path)
    if match is None or match.group("action") not in _ACTIONS:
        return Permission.PEOPLE  # any other change: only an admin
    return _ACTIONS[match.group("action")]


def forbidden(person: Person, needed: Permission) -> str:
    roles = [r.value for r in Role if needed in PERMISSIONS[r]]
    return (
        f"forbidden: {person.name} is {'an' if person.role.value[0] in 'aeiou' else 'a'} "
        f"{person.role.value}; {needed.value} needs the role {' or '.join(roles)}"
    )
