"""The gateway tests' platform and plain HTTP calls (urllib: the JSON API needs no more)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.config import load_settings
from services.main import RunningApp, start


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str = "GET",
    body: Any = None,
    key: str | None = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Answer:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, response.read(), response.headers["Content-Type"])
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.read(), err.headers.get("Content-Type", ""))


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            .encode()
        )  # fmt: skip
    for name, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{name}.png"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def start_platform(checkpoint: Path, store: Path, **sections: Any) -> RunningApp:
    """Target all on 127.0.0.1 with free ports; `server` entries and other sections merge in."""
    server = {"grpc_port": 0, "metrics_port": None, "shutdown_grace_s": 1}
    return start(
        load_settings(
            None,
            common={"model": {"checkpoint": str(checkpoint)}, "store": {"path": str(store)}},
            server={**server, **sections.pop("server", {})},
            **sections,
        )
    )


def start_gateway_alone(upstream: str = "127.0.0.1:1") -> RunningApp:
    """Target gateway in front of an address nothing answers on (UNAVAILABLE upstream)."""
    return start(
        load_settings(
            None,
            target="gateway",
            server={"grpc_port": 0, "metrics_port": None},
            gateway={"upstream": upstream, "timeout_s": 2},
        )
    )
