"""Enrich: one extracted acquisition becomes its package, the same way for every caller.

The chain is de-identification (``deidentify``: the site's patient-data policy, keyed by
the installation secret), the folder-template fields of the primary file's path
(``identity.path_fields``), the check of the configured instrument against the one the
file reports (``identity.identity_check``), the operator looked up in the people file
with the facility and license (``people.Attribution``), and the package document
(``package.build_package``), under the instrument block built once from the config
(``identity.instrument_block``).

The daemon (``runtime.Daemon``) and ``acqharvest extract`` (``commands.preview``) both
call ``enrich``, so what ``extract`` prints is what the daemon would send (with the
watch folder's ``path_template`` for a file inside one of the config's watch folders),
except what only a running daemon knows: the package this one replaces (``previous``)
and the host.

Pure: nothing here reads a file, writes or keeps state (the host name is looked up when
none is given). ``created`` is the newest member's mtime, so one id always has one body.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acqharvest.deidentify import Deidentifier
from acqharvest.identity import identity_check, path_fields
from acqharvest.model import Extraction, Package
from acqharvest.package import build_package, relative_path
from acqharvest.people import Attribution


def enrich(
    extraction: Extraction,
    deidentifier: Deidentifier,
    *,
    instrument: Mapping[str, Any],
    path_template: str | None,
    previous: str | None,
    host: str | None = None,
    attribution: Attribution | None = None,
) -> Package:
    """The package of one extraction: de-identified, with the fields its path carries.

    Identity and people are read from what the package carries, after de-identification:
    a serial number or operator name the policy removed is neither compared nor looked up.
    The operator is the path template's ``{operator}``, else the one the file names.
    """
    acquisition = extraction.acquisition
    primary = relative_path(acquisition.primary.settled.path, acquisition.root)
    fields = path_fields(path_template, primary)
    clean = deidentifier.apply(
        extraction.format,
        extraction.metadata,
        extraction.original_metadata,
        extraction.identifiers,
        started=extraction.started,
        # every name the package shows: the files' and the template's fields
        paths=[
            *(relative_path(m.settled.path, acquisition.root) for m in acquisition.members),
            *fields.values(),
        ],
    )
    named = fields.get("operator") or clean.metadata.get("operator")
    operator = named if isinstance(named, str) else None
    # a pseudonym the policy put in the name's place is nobody to look for in the file
    as_written = fields.get("operator") or extraction.metadata.get("operator")
    attribution = attribution or Attribution()
    return build_package(
        extraction,
        clean,
        instrument=instrument,
        acquisition_fields=fields,
        previous=previous,
        host=host,
        identity_check=identity_check(instrument, clean.metadata),
        attribution=attribution.fields(operator),
        unknown_operator=(
            operator if operator == as_written and attribution.unknown(operator) else None
        ),
    )
