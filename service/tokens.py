"""Bearer tokens with scopes: parsing, hashing and constant-time lookup. Nothing of HTTP here.

Tokens are configured as `scope=token` pairs (`read`, `write`, `admin`; a scope may appear
several times so that tokens can be rotated). Only their SHA-256 digests are kept: a leaked
settings object or core dump shows no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum
from pathlib import Path


class Scope(IntEnum):
    """Ordered: a token of one scope may do everything the lower scopes may."""

    READ = 1
    WRITE = 2
    ADMIN = 3


TokenDigests = tuple[tuple[str, str], ...]  # (scope name, sha256 hex) pairs


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_pairs(text: str, *, source: str) -> list[tuple[str, str]]:
    """`scope=token` pairs separated by commas or newlines; `#` starts a comment."""
    pairs: list[tuple[str, str]] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            if not item.strip():
                continue
            scope, sep, token = (part.strip() for part in item.partition("="))
            if not sep or not token:
                raise ValueError(f"{source}: expected scope=token, got {scope!r}=…")
            if scope.upper() not in Scope.__members__:
                raise ValueError(f"{source}: unknown scope {scope!r} (read, write or admin)")
            pairs.append((scope.lower(), token))
    return pairs


def hashed(pairs: list[tuple[str, str]]) -> TokenDigests:
    return tuple((scope, digest(token)) for scope, token in pairs)


def read_token_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"api_tokens_file: cannot read {path}: {exc.strerror}") from exc


def scope_of(token: str, table: TokenDigests) -> Scope | None:
    """The highest scope the token grants, or None. Every entry is compared, in constant time."""
    candidate = digest(token).encode()
    granted: Scope | None = None
    for scope, expected in table:
        if hmac.compare_digest(candidate, expected.encode()):
            found = Scope[scope.upper()]
            granted = found if granted is None else max(granted, found)
    return granted
