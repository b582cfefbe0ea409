"""The rules the request edge (`service.api.edge`) applies before routing: untrusted hosts,
cross-site writes, bad names.

The trusted-host allowlist (`GRADUAL_TRUSTED_HOSTS`): a page on an attacker's domain that
rebinds its DNS to 127.0.0.1 still sends its own name in `Host`, and is refused.

Browsers send `Origin` with a cross-site write: a page elsewhere must not stop, resume or
checkpoint a model on 127.0.0.1 (bodiless POSTs pass the content-type check). A write whose
`Origin` is neither a trusted host nor a CORS origin is a 403.

The model name in `/v1/models/{name}` and `/v2/models/{name}` is checked on the raw, still
percent-encoded path: `..%2fx` decodes to `../x`, which no route matches (a 404 that hides the
real problem) or, worse, another route does. Such a name is a 422 naming `name` (400
`{"error"}` on the /v2 protocol routes), whatever follows it in the path.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from service.api.schemas import NAME_PATTERN

NAME = re.compile(NAME_PATTERN.encode())
NAMED = (b"/v1/models/", b"/v2/models/")
NAME_MESSAGE = f"name: String should match pattern '{NAME_PATTERN}'"


def trusted(host: str, hosts: frozenset[str]) -> bool:
    """`host` is listed, matches a `*.domain` entry, or the list has `*`."""
    if "*" in hosts or host in hosts:
        return True
    return any(entry.startswith("*.") and host.endswith(entry[1:]) for entry in hosts)


def host_name(header: str) -> str:
    """`Host` without its port; `[::1]:8000` → `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.split(":", 1)[0]


def valid_name_in(raw_path: bytes) -> bool:
    """False when the path names a model and the name, percent-decoded once, is not valid."""
    for prefix in NAMED:
        if raw_path.startswith(prefix):
            segment = raw_path[len(prefix) :].split(b"/", 1)[0]
            return not segment or NAME.fullmatch(unquote_to_bytes(segment)) is not None
    return True
