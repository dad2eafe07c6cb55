"""Pure checks on URLs for config and delivery: loopback hosts, credentials in a query, masking.

No network and no HTTP library, so validating a config does not load the delivery stage.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from acqharvest import logs


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (where plain http is acceptable)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: query parameter names that carry a credential: ``token``, ``api_key``, ``sig`` (SAS),
#: ``code`` (function keys), ``X-Amz-Signature``, ``client_secret``, ``subscription-key``...
_CREDENTIAL_PARAMETER = re.compile(
    r"(?:.*[-_.])?(?:access[-_]?token|token|api[-_]?key|apikey|key|secret|password|passwd|"
    r"pwd|pass|auth|authorization|sig|signature|code|credentials?|session(?:id)?|jwt|bearer)",
    re.IGNORECASE,
)


def credential_parameters(url: str) -> list[str]:
    """Names of the query parameters of ``url`` that look like they carry a credential."""
    return [
        name
        for name, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)
        if _CREDENTIAL_PARAMETER.fullmatch(name)
    ]


def safe_url(url: str) -> str:
    """The URL for messages: no user:password, every query value masked (a name cannot
    tell which value is a secret)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "&".join(
        f"{item.split('=', 1)[0]}={logs.MASK}" if "=" in item else item
        for item in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
