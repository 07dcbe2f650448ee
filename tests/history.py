"""Workflow history as searchable text: payloads are base64 in the JSON form."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from google.protobuf.json_format import ParseDict
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory

from saga import PayloadKeys, Settings, payload_keys
from saga._codec import EncryptionCodec

_DATA = re.compile(r'"data":\s*"([A-Za-z0-9+/=]+)"')


def raw_history_text(history: WorkflowHistory) -> str:
    """The history's JSON plus every payload's bytes as stored (encrypted ones stay so):
    what someone reading Temporal's database sees."""
    raw = history.to_json()
    decoded = []
    for blob in _DATA.findall(raw):
        try:
            decoded.append(base64.b64decode(blob).decode("utf-8", "replace"))
        except (binascii.Error, ValueError):
            continue
    return raw + "\n" + "\n".join(decoded)


def history_text(history: WorkflowHistory, keys: PayloadKeys | None = None) -> str:
    """The history's JSON plus every payload decrypted (with ``keys``, default: the
    session's) and decoded, so a search sees inputs and results."""
    codec = EncryptionCodec(keys or payload_keys(Settings()))
    plain: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("metadata"), dict) and "data" in node:
                payload = codec.decode_payload(ParseDict(node, Payload()))
                plain.append(payload.data.decode("utf-8", "replace"))
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    raw = history.to_json()
    walk(json.loads(raw))
    return raw + "\n" + "\n".join(plain)


def local_activities(history: WorkflowHistory) -> list[str]:
    """The activity types of the local activities ``history`` recorded, in order."""
    found = []
    for event in history.events:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name == "core_local_activity":
            found.append(json.loads(marker.details["data"].payloads[0].data)["activity_type"])
    return found
