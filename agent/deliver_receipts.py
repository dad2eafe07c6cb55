"""What an endpoint's answer means: a receipt that confirms, a page that is not one, a
refusal of the whole endpoint or of one package. Pure functions on status and body.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Any


def body_digest(body: bytes) -> str:
    """The ``sha256`` an endpoint's receipt may echo: hex SHA-256 of the request body."""
    return hashlib.sha256(body).hexdigest()


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(content)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def not_a_receipt(
    status: int, content_type: str, content: bytes, where: str, text: str
) -> str | None:
    """Why a 2xx or 409 cannot be an ingest endpoint's answer; None when it can.

    Only an empty body or a JSON object can be: a wrong URL that lands on a web page or
    a login portal answers 2xx to anything, with HTML, and must not empty the outbox.
    ``text`` is the masked answer, shown in short (the page title when there is one).
    """
    html = "html" in content_type.lower()
    if not html and (not content.strip() or _json_object(content) is not None):
        return None
    title = _TITLE.search(text)
    shown = " ".join((title.group(1) if title else text).split())[:120]
    what = f"{content_type or 'no Content-Type'}" + (f", {shown!r}" if shown else "")
    return (
        f"HTTP {status} from {where} is not a receipt ({what}): a web page or a login portal "
        "answers 2xx to anything, so check endpoint.url; only an empty answer or a JSON "
        "receipt confirms a package"
    )


def receipt_problem(
    package_id: str,
    body: bytes,
    status: int,
    content: bytes,
    *,
    require_receipt: bool,
    redact: Callable[[str], str],
) -> str | None:
    """Why a 2xx or 409 answer (empty or a JSON object) does not confirm the package; None
    when it does.

    A receipt is a JSON object with a ``package_id`` (and optionally the ``sha256`` of
    the body). Without one, the answer confirms unless ``require_receipt`` is set. Echoed
    values are masked by ``redact`` before they are cut, so no token prefix shows.
    """
    document = _json_object(content)
    if document is None or "package_id" not in document:
        if require_receipt:
            return (
                f"HTTP {status} without a receipt naming the package "
                "(endpoint.require_receipt is set); not counted as delivered"
            )
        return None
    echoed = str(document["package_id"])
    if echoed != package_id:
        return (
            f"endpoint confirmed a different package_id {redact(echoed)[:100]!r} "
            f"(sent {package_id}); not counted as delivered"
        )
    digest = document.get("sha256")
    if digest is not None and str(digest).lower() != body_digest(body):
        return (
            f"endpoint's receipt has sha256 {redact(str(digest))[:64]!r}, but the body sent "
            f"has {body_digest(body)}; not counted as delivered"
        )
    return None


#: answers that say the endpoint as a whole cannot take packages now (a wrong URL, an
#: expired token, a proxy wanting credentials), whichever package is sent.
_ENDPOINT_WIDE_ADVICE = {
    401: "the endpoint does not accept the token: check token_file/token_env (expired?)",
    403: "the endpoint refuses this client: check the token's permissions",
    404: "nothing at this URL takes packages: check endpoint.url",
    405: "this URL does not take POST requests: check endpoint.url",
    407: "the proxy wants credentials: put them in endpoint.proxy (http://user:pass@host:port)",
}
#: 4xx answers about the one package sent: it is kept aside as rejected.
PACKAGE_REJECTIONS = frozenset({400, 413, 415, 422})


def is_endpoint_wide(http_status: int | None) -> bool:
    """Whether an answer means the endpoint itself is misconfigured, not the package.

    Redirects, 401/403/404/405/407 and any 4xx that is not about the package
    (``PACKAGE_REJECTIONS``) or a plain retry (408, 425, 429).
    """
    if http_status is None:
        return False
    if 300 <= http_status < 400:
        return True
    return (
        400 <= http_status < 500
        and http_status not in PACKAGE_REJECTIONS
        and http_status not in (408, 409, 425, 429)
    )


def endpoint_wide_detail(
    status: int, location: str | None, text: str, advice: str | None = None
) -> str:
    if 300 <= status < 400:
        target = location or "(no Location header)"
        return (
            f"HTTP {status}: the endpoint redirects to {target}: set endpoint.url to it "
            "(redirects are never followed: a package must not silently go elsewhere)"
        )
    advice = advice or _ENDPOINT_WIDE_ADVICE.get(
        status, "the endpoint refuses every package this way"
    )
    return f"HTTP {status}: {advice}; retried with backoff, nothing is rejected: {text}"
