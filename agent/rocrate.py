"""Renders a package document as an RO-Crate 1.1 metadata document (``ro-crate-metadata.json``).

A pure function of the package dict (``package.build_package``'s body): no clock, no I/O, so
the same package always renders to the same bytes and a resend stays idempotent. Plain
dicts, no ``rocrate`` library, to keep the daemon light. RO-Crate 1.1 is what
rocrate-validator's ``ro-crate-1.1`` profile checks; its context lacks ``sha256`` and
``localPath``, which are added with the IRIs the later RO-Crate contexts give them, so the
crate reads the same under 1.2+. The mapping, entity by entity, is in the admin guide's
"FAIR metadata" page. Fields other parts of the package gained in schema 1.1 (people,
facility, license, the PIDINST instrument fields, ``files[].media_type``, annotations) are
rendered when present; a package without them still renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from posixpath import basename
from typing import Any
from urllib.parse import quote

from acqharvest.adapter_api import CHANNEL_FIELDS, NORMALIZED_FIELDS, FieldSpec

SPEC = "https://w3id.org/ro/crate/1.1"
CONTEXT: tuple[str, Mapping[str, str]] = (
    f"{SPEC}/context",
    {
        "sha256": "http://schema.org/sha256",
        "localPath": "https://w3id.org/ro/terms#localPath",
    },
)
METADATA_FILE = "ro-crate-metadata.json"
#: the media type an RO-Crate metadata document is sent with (RO-Crate 1.1, "Metadata").
MEDIA_TYPE = f'application/ld+json; profile="{SPEC}"'
PACKAGE_URN = "urn:acqharvest:package:"

#: units of the field catalogue as Units of Measurement Ontology terms, where one exists
UNIT_CODES = {
    "um": "http://purl.obolibrary.org/obo/UO_0000017",
    "nm": "http://purl.obolibrary.org/obo/UO_0000018",
    "mm": "http://purl.obolibrary.org/obo/UO_0000016",
    "s": "http://purl.obolibrary.org/obo/UO_0000010",
    "T": "http://purl.obolibrary.org/obo/UO_0000228",
}
_SPDX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_NOT_SLUG = re.compile(r"[^A-Za-z0-9._-]+")
#: acquisition keys rendered as their own properties, not as PropertyValues
_ACQUISITION_OWN = frozenset({"format", "complete", "started", "annotations"})
#: instrument keys rendered as their own properties, not as PropertyValues
_INSTRUMENT_OWN = frozenset(
    "id id_type name description landing_page manufacturer manufacturer_identifier model "  # noqa: SIM905 - a word list reads shorter
    "model_identifier serial_number type type_identifier owner owners alternate_identifiers "
    "related_identifiers".split()
)


def render_crate(package: Mapping[str, Any]) -> dict[str, Any]:
    """The RO-Crate metadata document of one package."""
    context = [CONTEXT[0], dict(CONTEXT[1])]  # the caller's to change, not the module's
    return {"@context": context, "@graph": list(_Graph(package).entities())}


def crate_bytes(package: Mapping[str, Any]) -> bytes:
    """The crate as sent and written: UTF-8 JSON, deterministic for a package."""
    return json.dumps(render_crate(package), ensure_ascii=False, indent=1).encode()


def render_body(body: bytes) -> bytes:
    """A spooled package's bytes rendered as its crate's bytes.

    Raises ``ValueError`` naming what is wrong when the bytes are not a package.
    """
    package = json.loads(body)
    if not isinstance(package, dict) or "package_id" not in package or "files" not in package:
        raise ValueError("not a package document (no package_id or files)")
    try:
        return crate_bytes(package)
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise ValueError(
            f"package does not fit the schema: {type(error).__name__}: {error}"
        ) from None


def _ref(identifier: str) -> dict[str, str]:
    return {"@id": identifier}


def _slug(text: str) -> str:
    return _NOT_SLUG.sub("-", text).strip("-") or "x"


def _is_uri(text: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", text) is not None


def file_id(entry: Mapping[str, Any]) -> str:
    """A ``files[]`` entry's ``@id``: its path as a relative URI, so a crate placed at the
    watch folder's root names the files where they are. A name in the percent form
    (``path_encoding``) keeps its ``%XX``: they decode to the name's exact bytes."""
    safe = "/%" if entry.get("path_encoding") == "percent" else "/"
    return quote(str(entry["path"]), safe=safe)


def _license(value: str | None) -> dict[str, Any]:
    if value is None:
        return {
            "@id": "#license-not-stated",
            "@type": "CreativeWork",
            "name": "No licence stated",
            "description": "The harvesting facility's configuration names no licence "
            "(acqharvest's `license` key): reuse terms are the facility's to give.",
        }
    if _is_uri(value):
        return {"@id": value, "@type": "CreativeWork", "name": value}
    if _SPDX_ID.fullmatch(value):
        return {
            "@id": f"https://spdx.org/licenses/{value}",
            "@type": "CreativeWork",
            "name": value,
            "identifier": value,
        }
    return {"@id": "#license", "@type": "CreativeWork", "name": value}


class _Graph:
    """Collects the entities of one crate, each ``@id`` once, in a stable order."""

    def __init__(self, package: Mapping[str, Any]) -> None:
        self.package = package
        self._entities: dict[str, dict[str, Any]] = {}

    def add(self, entity: dict[str, Any]) -> dict[str, str]:
        """Adds an entity (merging into one with the same ``@id``) and returns a reference."""
        known = self._entities.setdefault(entity["@id"], entity)
        for key, value in entity.items():
            known.setdefault(key, value)
        return _ref(entity["@id"])

    def value(
        self, identifier: str, name: str, value: Any, property_id: str | None = None
    ) -> dict[str, str]:
        """Adds a ``PropertyValue`` and returns a reference to it."""
        return self.add(_property(identifier, name, value, property_id))

    def entities(self) -> Iterator[dict[str, Any]]:
        package = self.package
        files = package["files"]
        acquisition = package.get("acquisition", {})
        self.add(
            {
                "@id": METADATA_FILE,
                "@type": "CreativeWork",
                "conformsTo": _ref(SPEC),
                "about": _ref("./"),
            }
        )
        root: dict[str, Any] = {"@id": "./", "@type": "Dataset"}
        self.add(root)
        file_refs = [self.add(self._file(entry)) for entry in files]
        people = [self.add(person) for person in self._people()]
        instrument = self.add(self._instrument(package["instrument"]))
        acquisition_ref = self.add(self._acquisition(acquisition, instrument, people))
        harvest_ref = self.add(self._harvest(file_refs))
        root.update(self._root(files, acquisition, people))
        root["hasPart"] = file_refs
        root["mentions"] = [acquisition_ref, harvest_ref]
        for entity in self._entities.values():
            # RO-Crate 1.1 recommends one value, not a one-item array (JSON-LD reads both alike)
            yield {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in entity.items()}

    # ----------------------------------------------------------------- root and files

    def _root(
        self, files: list[Mapping[str, Any]], acquisition: Mapping[str, Any], people: list[Any]
    ) -> dict[str, Any]:
        package = self.package
        instrument = package["instrument"]
        first = basename(str(files[0]["path"]))
        others = len(files) - 1
        more = f" and {others} more file{'s' if others > 1 else ''}" if others else ""
        fmt = acquisition.get("format", "unknown format")
        harvester = package.get("harvester", {})
        root: dict[str, Any] = {
            "identifier": PACKAGE_URN + package["package_id"],
            "name": f"{first}{more} — {instrument.get('name') or instrument['id']}",
            "description": f"One {fmt} acquisition ({len(files)} file"
            f"{'s' if len(files) > 1 else ''}) on {instrument.get('name') or instrument['id']}, "
            f"harvested by acqharvest {harvester.get('version', '')} with its "
            f"{harvester.get('adapter', 'none')} adapter"
            + ("" if acquisition.get("complete", True) else "; the acquisition is incomplete"),
            "datePublished": package["created"],
            "license": self.add(_license(package.get("license"))),
        }
        if started := acquisition.get("started"):
            root["dateCreated"] = started
        if modality := package.get("metadata", {}).get("modality"):
            root["measurementTechnique"] = modality
        if people:
            root["author"] = people
        if facility := package.get("facility"):
            root["publisher"] = self.add(_organization(facility.get("ror"), facility["name"]))
        if replaces := package.get("replaces"):
            root["isBasedOn"] = _ref(PACKAGE_URN + replaces)
        return root

    def _file(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        entity: dict[str, Any] = {
            "@id": file_id(entry),
            "@type": "File",
            "name": basename(str(entry["path"])),
            "localPath": entry["path"],
            "contentSize": str(entry["size"]),
            "sha256": entry["sha256"],
            "dateModified": entry["modified"],
        }
        if media_type := entry.get("media_type"):
            entity["encodingFormat"] = media_type
        if role := entry.get("role"):
            entity["description"] = f"{role} file"
        return entity

    # ----------------------------------------------------------------- people

    def _people(self) -> Iterator[dict[str, Any]]:
        """The package's people; without any, the operator the folder or file names."""
        people = self.package.get("people") or []
        for index, person in enumerate(people):
            entity: dict[str, Any] = {
                "@id": person.get("orcid") or f"#person-{index}",
                "@type": "Person",
                "name": person["name"],
            }
            if email := person.get("email"):
                entity["email"] = email
            if affiliation := person.get("affiliation"):
                entity["affiliation"] = self.add(_organization(None, affiliation))
            yield entity
        if people:
            return
        acquisition = self.package.get("acquisition", {})
        operator = acquisition.get("operator") or self.package.get("metadata", {}).get("operator")
        if isinstance(operator, str) and operator:
            yield {"@id": "#operator", "@type": "Person", "name": operator}

    # ----------------------------------------------------------------- instrument

    def _instrument(self, instrument: Mapping[str, Any]) -> dict[str, Any]:
        identifier = str(instrument["id"])
        entity: dict[str, Any] = {
            "@id": _instrument_uri(identifier, instrument.get("id_type")),
            "@type": "IndividualProduct",
            "name": instrument.get("name") or identifier,
            "identifier": [
                self.value("#instrument-id", "identifier", identifier, instrument.get("id_type"))
            ],
        }
        for key, schema_key in (
            ("description", "description"),
            ("landing_page", "url"),
            ("serial_number", "serialNumber"),
            ("model", "model"),
            ("type", "category"),
        ):
            if value := instrument.get(key):
                entity[schema_key] = value
        if type_identifier := instrument.get("type_identifier"):
            entity["additionalType"] = _ref(type_identifier["identifier"])
        if manufacturer := instrument.get("manufacturer"):
            known = instrument.get("manufacturer_identifier") or {}
            entity["manufacturer"] = self.add(
                _organization(known.get("identifier"), manufacturer, known.get("identifier_type"))
            )
        for index, alternate in enumerate(instrument.get("alternate_identifiers") or []):
            kind = alternate["identifier_type"]
            name = alternate.get("name") or kind
            entity["identifier"].append(
                self.value(f"#instrument-id-{index}", name, alternate["identifier"], kind)
            )
        properties = [
            self.value(
                f"#instrument-related-{index}",
                related.get("name") or related["relation_type"],
                related["identifier"],
                f"{related['relation_type']} ({related['identifier_type']})",
            )
            for index, related in enumerate(instrument.get("related_identifiers") or [])
        ]
        if model := instrument.get("model_identifier"):
            properties.append(
                self.value(
                    "#instrument-model-id",
                    "model identifier",
                    model["identifier"],
                    model["identifier_type"],
                )
            )
        for key, value in instrument.items():
            if key not in _INSTRUMENT_OWN:
                properties.append(self.value(f"#instrument-{_slug(key)}", key, value))
        if properties:
            entity["additionalProperty"] = properties
        owners = list(instrument.get("owners") or [])
        if not owners and instrument.get("owner"):
            owners = [{"name": instrument["owner"]}]
        for owner in owners:
            organization = _organization(
                owner.get("identifier"), owner["name"], owner.get("identifier_type")
            )
            if contact := owner.get("contact"):
                organization["email" if "@" in contact else "url"] = contact
            organization["owns"] = _ref(entity["@id"])
            self.add(organization)
        return entity

    # ----------------------------------------------------------------- the two actions

    def _acquisition(
        self, acquisition: Mapping[str, Any], instrument: dict[str, str], people: list[Any]
    ) -> dict[str, Any]:
        files = self.package["files"]
        action: dict[str, Any] = {
            "@id": "#acquisition",
            "@type": "CreateAction",
            "name": f"{acquisition.get('format', 'Data')} acquisition",
            "instrument": [instrument],
            "result": [_ref(file_id(entry)) for entry in files if entry.get("role") != "sidecar"],
            "endTime": self.package["created"],
        }
        reported = self.package.get("metadata", {}).get("instrument_reported", {})
        if software := reported.get("software"):
            entity = {"@id": "#acquisition-software", "@type": "SoftwareApplication"}
            entity["name"] = software
            if version := reported.get("software_version"):
                entity["version"] = version
            action["instrument"].append(self.add(entity))
        if people:
            action["agent"] = people
        if started := acquisition.get("started"):
            action["startTime"] = started
        if acquisition.get("complete"):
            action["actionStatus"] = _ref("http://schema.org/CompletedActionStatus")
        annotations = acquisition.get("annotations") or {}
        if sample := annotations.get("sample"):
            action["object"] = self.add({"@id": "#sample", "@type": "Thing", "name": str(sample)})
        properties = [
            self.value(f"#acquisition-{_slug(key)}", f"acquisition.{key}", value)
            for key, value in acquisition.items()
            if key not in _ACQUISITION_OWN
        ]
        properties += [
            self.value(f"#annotation-{_slug(key)}", key, value, "annotation")
            for key, value in annotations.items()
        ]
        properties += [
            self.add(_measured(key, value, unit))
            for key, value, unit in _flatten(self.package.get("metadata", {}))
        ]
        if properties:
            action["additionalProperty"] = properties
        return action

    def _harvest(self, file_refs: list[dict[str, str]]) -> dict[str, Any]:
        harvester = self.package.get("harvester", {})
        tools = [
            self.add(
                {
                    "@id": "#acqharvest",
                    "@type": "SoftwareApplication",
                    "name": "acqharvest",
                    "version": harvester.get("version", ""),
                }
            )
        ]
        if (adapter := harvester.get("adapter")) and adapter != "none":
            tools.append(
                self.add(
                    {
                        "@id": f"#adapter-{_slug(adapter)}",
                        "@type": "SoftwareApplication",
                        "name": f"acqharvest {adapter} adapter",
                        "version": harvester.get("adapter_version", ""),
                    }
                )
            )
        provenance = self.package.get("provenance", {})
        deidentification = provenance.get("deidentification") or {}
        profile = deidentification.get("profile") or "no de-identification profile"
        options = ", ".join(deidentification.get("options") or []) or "no options"
        description = (
            f"Header harvest and de-identification: {profile}; {options}; "
            f"{deidentification.get('removed', 0)} attributes removed"
        )
        action: dict[str, Any] = {
            "@id": "#harvest",
            "@type": "CreateAction",
            "name": "Metadata harvest and de-identification",
            "description": description,
            "instrument": tools,
            "object": file_refs,
            "result": _ref(METADATA_FILE),
        }
        if warnings := provenance.get("warnings"):
            action["error"] = list(warnings)
        return action


#: each PID type's resolver, for ids written without it (10.5281/..., doi:..., ark:/...)
_RESOLVERS = dict(DOI="https://doi.org/", Handle="https://hdl.handle.net/", ARK="https://n2t.net/")


def _instrument_uri(identifier: str, id_type: str | None) -> str:
    """The instrument's ``@id``: its PID as a resolvable URI, or ``#instrument`` for a local
    id. n2t.net takes an ARK whole (``ark:/12345/x``); ``doi:`` and ``hdl:`` are dropped."""
    name = re.sub(r"^(doi|hdl):", "", identifier, flags=re.IGNORECASE)
    resolvable = id_type == "ARK" or not _is_uri(name)
    if id_type in _RESOLVERS and resolvable and re.fullmatch(r"[^\s/]+/\S+", name):
        return _RESOLVERS[id_type] + quote(name, safe="/;:@&=+$,.-_~!*'()")
    if id_type != "local" and _is_uri(identifier):
        return identifier
    return "#instrument"


def _organization(
    identifier: str | None, name: str, identifier_type: str | None = None
) -> dict[str, Any]:
    """An Organization: its identifier (a ROR) as ``@id`` when it is a URI, else local."""
    if identifier and _is_uri(identifier):
        entity: dict[str, Any] = {"@id": identifier, "@type": "Organization", "name": name}
        if identifier.startswith(("https://", "http://")):
            entity["url"] = identifier
    else:
        entity = {"@id": f"#org-{_slug(name)}", "@type": "Organization", "name": name}
    if identifier:
        entity["identifier"] = identifier
    if identifier_type:
        entity["description"] = f"identifier type: {identifier_type}"
    return entity


def _property(
    identifier: str, name: str, value: Any, property_id: str | None = None
) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "@id": identifier,
        "@type": "PropertyValue",
        "name": name,
        "value": value if _plain(value) else json.dumps(value, ensure_ascii=False),
    }
    if property_id:
        entity["propertyID"] = property_id
    return entity


def _plain(value: Any) -> bool:
    """A value JSON-LD reads as literals: never an object, which it would take for a node."""
    if isinstance(value, list):
        return all(_plain(item) and not isinstance(item, list) for item in value)
    return isinstance(value, str | int | float | bool)


def _measured(key: str, value: Any, unit: str | None) -> dict[str, Any]:
    entity = _property(f"#metadata-{_slug(key)}", key, value)
    if unit:
        entity["unitText"] = unit
        if code := UNIT_CODES.get(unit):
            entity["unitCode"] = _ref(code)
    return entity


def _flatten(
    metadata: Mapping[str, Any],
    prefix: str = "",
    catalogue: Mapping[str, FieldSpec] = NORMALIZED_FIELDS,
    relative: str = "",
) -> Iterator[tuple[str, Any, str | None]]:
    """(dotted key, value, unit) of every leaf of the normalized metadata.

    Items of a list of objects get their index (``channels.0.excitation_nm``) and their
    units from the catalogue of their kind (a channel's, or the top level's for a series);
    a list of values stays one value (``laser_lines_nm``).
    """
    for key, value in metadata.items():
        dotted, within = f"{prefix}{key}", f"{relative}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{dotted}.", catalogue, f"{within}.")
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            items = CHANNEL_FIELDS if within == "channels" else catalogue
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    yield from _flatten(item, f"{dotted}.{index}.", items)
                else:
                    yield f"{dotted}.{index}", item, None
        elif value is not None:
            spec = catalogue.get(within)
            leaf = list(value) if isinstance(value, tuple) else value
            yield dotted, leaf, spec.unit if spec else None
