"""`saga people add NAME --role ROLE | list | revoke NAME | rotate NAME`: who may use the
web app and its API, in the ledger's database (saga._people). A token is printed once,
when it is made; the ledger keeps only its hash."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich import box
from rich.table import Table

from saga._people import People, PeopleError, Role
from saga._settings import Settings
from saga.cli._loading import UsageError, open_ledger
from saga.cli._render import err, out


def add_parser(sub: Any) -> None:
    """The `people` command and its verbs, on the CLI's sub-command set ``sub``."""
    people = sub.add_parser("people", help="people who may use the web app, and their roles")
    verbs = people.add_subparsers(dest="people_command", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a person; prints their token once")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=[r.value for r in Role])
    listing = verbs.add_parser("list", help="everyone, with their role and state")
    listing.add_argument("--json", action="store_true")
    for verb, what in (("revoke", "their token stops working, their logins end"),
                       ("rotate", "a new token; the old one stops working")):  # fmt: skip
        verbs.add_parser(verb, help=what).add_argument("name")
    people.set_defaults(func=cmd_people)


async def cmd_people(args: argparse.Namespace, settings: Settings) -> int:
    ledger = open_ledger(settings)
    try:
        people = People(ledger)
        verb = args.people_command
        try:
            if verb == "add":
                token = people.add(args.name, Role(args.role))
                err.print(f"added {args.name} ({args.role}); their token, shown only now:")
                out.print(token, soft_wrap=True)
            elif verb == "rotate":
                token = people.rotate(args.name)
                err.print(f"new token for {args.name}, shown only now (the old one is void):")
                out.print(token, soft_wrap=True)
            elif verb == "revoke":
                people.revoke(args.name)
                out.print(f"revoked {args.name}: their token no longer works")
            else:
                _show(people, args.json)
        except PeopleError as exc:
            raise UsageError(str(exc)) from None
    finally:
        ledger.close()
    return 0


def _show(people: People, as_json: bool) -> None:
    everyone = people.all()
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in everyone], indent=2))
        return
    if not everyone:
        out.print("no people yet: `saga people add NAME --role ROLE`")
        return
    table = Table("name", "role", "state", "since", box=box.SIMPLE_HEAD)
    for p in everyone:
        state = "revoked" if p.revoked_at else "active"
        since = p.revoked_at or p.rotated_at or p.created_at
        when = since.astimezone().strftime("%Y-%m-%d %H:%M") if since else ""
        table.add_row(p.name, p.role.value, state, when)
    out.print(table)
