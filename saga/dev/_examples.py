"""The example plans shipped inside the package (`saga/examples/*.json`).

They are package data read through `importlib.resources`, so `saga demo` and
`saga start --plan order` work from any install, not only from a source checkout.
"""

from __future__ import annotations

import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from saga._errors import SagaError


def _folder() -> Traversable:
    return resources.files("saga").joinpath("examples")


def example_names() -> list[str]:
    """The bundled example plans by name: the file name without `.json`."""
    folder = _folder()
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json") and entry.is_file()
    )


def find_example(name: str) -> Traversable | None:
    """The bundled plan called `name` (`order` or `order.json`), or None."""
    stem = name.removesuffix(".json")
    if stem not in example_names():
        return None
    return _folder().joinpath(f"{stem}.json")


def read_example(name: str) -> Any:
    """The bundled plan called `name`, parsed."""
    found = find_example(name)
    if found is None:
        raise SagaError(
            f"no example plan {name!r} in this install "
            f"(bundled: {', '.join(example_names()) or 'none'})"
        )
    return json.loads(found.read_text(encoding="utf-8"))
