"""API keys: kept as SHA-256 hashes with their roles in a YAML file (or a Kubernetes Secret
mounted as one), compared in constant time, re-read when the file changes.

Keys are 256 random bits, so a plain SHA-256 is the right hash: a slow password hash buys
nothing against a key nobody can guess, and would cost every request.

    keys:
      - name: web-frontend
        sha256: 5f0c...            # python -m services.security new-key --name web-frontend
        roles: [search]
        rate_per_s: 20             # optional: requests per second for this key
        burst: 40
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

KEY_PREFIX = "teran_"
RELOAD_CHECK_S = 1.0


class Role(enum.StrEnum):
    SEARCH = "search"
    """Search, SearchSentences, SearchSimilarImages, Stats and the encoders' query RPCs."""
    INGEST = "ingest"
    """Ingest, IngestSentences, Delete."""
    ADMIN = "admin"
    """The Admin service (upgrades, dropping versions) and server reflection."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str
    roles: frozenset[Role]
    rate_per_s: float | None = None
    burst: int | None = None


def new_key() -> str:
    """A fresh key: the prefix makes a leaked one easy to recognise (secret scanners)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str, origin: str) -> list[ApiKey]:
    """The key entries of a keys file; ValueError naming the entry at fault."""
    doc = yaml.safe_load(text) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("keys", []), list):
        raise ValueError(f"{origin}: expected a mapping with a 'keys' list")
    keys: list[ApiKey] = []
    for i, entry in enumerate(doc.get("keys") or []):
        where = f"{origin}: keys[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping")
        digest = str(entry.get("sha256", "")).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}.sha256: 64 hex digits expected")
        try:
            roles = frozenset(Role(r) for r in entry.get("roles") or [])
        except ValueError as err:
            raise ValueError(f"{where}.roles: {err}; roles are {[r.value for r in Role]}") from err
        rate = entry.get("rate_per_s")
        burst = entry.get("burst")
        if rate is not None and (not isinstance(rate, int | float) or rate <= 0):
            raise ValueError(f"{where}.rate_per_s: a positive number expected")
        if burst is not None and (not isinstance(burst, int) or burst < 1):
            raise ValueError(f"{where}.burst: a positive integer expected")
        name = str(entry.get("name") or f"key-{i}")
        keys.append(ApiKey(name, digest, roles, None if rate is None else float(rate), burst))
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError(f"{origin}: key names must be unique")
    return keys


class KeyRing:
    """The keys of one file, re-read when its modification time or size changes.

    A file that fails to parse keeps the previous keys (and is logged), so a bad edit never
    opens or closes the door by itself.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._keys: list[ApiKey] = []
        self._load(initial=True)

    def _load(self, initial: bool = False) -> None:
        stat = os.stat(self.path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        try:
            keys = parse_keys(self.path.read_text(), str(self.path))
        except (OSError, ValueError, yaml.YAMLError) as err:
            if initial:
                raise
            log.error("keeping the previous API keys: %s", err)
            self._stamp = stamp
            return
        self._keys, self._stamp = keys, stamp
        log.info("loaded %d API keys from %s", len(keys), self.path)

    def _fresh(self) -> list[ApiKey]:
        now = time.monotonic()
        if now - self._checked >= RELOAD_CHECK_S:
            with self._lock:
                if now - self._checked >= RELOAD_CHECK_S:
                    self._checked = now
                    try:
                        self._load()
                    except OSError as err:
                        log.error("keeping the previous API keys: %s", err)
        return self._keys

    def lookup(self, key: str) -> ApiKey | None:
        """The entry for `key`; every entry is compared, in constant time, whatever matches."""
        digest = hash_key(key)
        found = None
        for entry in self._fresh():
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        return found
