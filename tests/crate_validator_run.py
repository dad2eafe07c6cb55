"""Validates RO-Crates with rocrate-validator, offline; run by ``tests/crate_validation.py``
with the interpreter of the validator's own environment (not the project's: roc-validator
pins ``rich<14``, import-linter needs ``rich>=14.2``).

Usage: ``python crate_validator_run.py CACHE_DIR CRATE_DIR...``; prints one JSON line per
crate: ``{"crate", "passed", "executed", "issues": [{"severity", "check", "message"}]}``.

The validator resolves the crate's ``@context`` (``https://w3id.org/ro/crate/1.1/context``)
over HTTP through its requests-cache, which this machine cannot reach. Its offline mode
serves that cache only, so the cache is filled first with the context the ``rocrate``
package ships, fetched through a requests transport that answers for that one URL from the
file and refuses every other. A cache miss would make the validator skip its checks
silently (zero executed, "passed"), so the number of executed checks is reported and the
test asserts on it.
"""

from __future__ import annotations

import io
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import requests
import urllib3
from requests.adapters import BaseAdapter, HTTPAdapter
from requests_cache import CachedSession
from rocrate_validator import models, services

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"


class _ShippedContext(BaseAdapter):
    """Answers GET of the RO-Crate 1.1 context with the copy the ``rocrate`` package ships."""

    def __init__(self) -> None:
        super().__init__()
        self.body = (resources.files("rocrate") / "data" / "ro-crate.jsonld").read_bytes()
        shipped = json.loads(self.body).get("@id")
        if shipped != CONTEXT_URL:
            raise SystemExit(
                f"the installed rocrate ships the context {shipped}, not {CONTEXT_URL}"
            )

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if request.url != CONTEXT_URL:
            raise requests.ConnectionError(
                f"only {CONTEXT_URL} is served offline, not {request.url}"
            )
        raw = urllib3.HTTPResponse(
            body=io.BytesIO(self.body),
            headers={"Content-Type": "application/ld+json", "Content-Length": str(len(self.body))},
            status=200,
            preload_content=False,
            request_url=request.url,
        )
        return HTTPAdapter().build_response(request, raw)

    def close(self) -> None:
        """Nothing to release."""


def fill_cache(cache: Path) -> None:
    with CachedSession(cache_name=str(cache), backend="sqlite", expire_after=-1) as session:
        session.mount("https://", _ShippedContext())
        session.mount("http://", _ShippedContext())
        response = session.get(CONTEXT_URL, headers={"Accept": "application/ld+json"})
        response.raise_for_status()
        if not session.cache.contains(url=CONTEXT_URL):
            raise SystemExit(f"{CONTEXT_URL} did not go into the cache {cache}")


def validate(crate: Path, cache: Path) -> dict[str, Any]:
    settings = models.ValidationSettings(
        rocrate_uri=str(crate),
        profile_identifier="ro-crate-1.1",
        requirement_severity="REQUIRED",
        metadata_only=True,
        offline=True,
        cache_path=cache,
    )
    result = services.validate(settings)
    return {
        "crate": str(crate),
        "passed": result.passed(),
        "executed": len(result.executed_checks),
        "issues": [
            {
                "severity": issue.severity.name,
                "check": issue.check.identifier if issue.check else None,
                "message": issue.message,
            }
            for issue in result.get_issues()
        ],
    }


def main(argv: list[str]) -> int:
    cache = Path(argv[0])
    fill_cache(cache)
    for crate in argv[1:]:
        print(json.dumps(validate(Path(crate), cache)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
