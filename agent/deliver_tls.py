"""TLS for the HTTP endpoint: the verifying client context, the client certificate, and the
OpenSSL codes whose failures get their own advice. Errors name files, never their content.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from acqharvest.deliver_token import DeliveryConfigError, warn_if_readable_by_others
from acqharvest.model import EndpointSettings

#: OpenSSL certificate verification codes that call for their own advice.
CERT_NOT_YET_VALID = 9
CERT_EXPIRED = 10
HOSTNAME_MISMATCH = 62
#: TLS alerts by which a server says it wants a (different) client certificate.
CLIENT_CERT_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "HANDSHAKE_FAILURE",
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "ACCESS_DENIED",
)


def _no_password() -> bytes:
    # Without a callback OpenSSL asks for the pass phrase on the terminal: a service would
    # hang. An empty answer makes an encrypted key fail to load, with a clear error.
    return b""


def verifying_context(cafile: Path | None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names and logs no TLS keys.

    Built by hand rather than with ``ssl.create_default_context``, which opens the file
    named by ``SSLKEYLOGFILE`` and would write every session key there: anyone setting
    that variable on the service could decrypt the traffic, token included.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.keylog_filename = None  # type: ignore[assignment]
    if cafile is not None:
        context.load_verify_locations(cafile=str(cafile))
    else:
        context.load_default_certs()
        context.load_verify_locations(cafile=certifi.where())
    return context


def tls_context(settings: EndpointSettings) -> ssl.SSLContext:
    """The verifying TLS context for https, with the client certificate when one is set.

    Trust comes from ``ca_bundle`` alone when it is set, else from the operating system's
    store plus the certifi (Mozilla) bundle. Errors name the files, never their content.
    """
    try:
        context = verifying_context(settings.ca_bundle)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryConfigError(
            f"cannot load endpoint.ca_bundle {settings.ca_bundle}: {exc}"
        ) from None
    if settings.client_key is not None and settings.client_cert is None:
        raise DeliveryConfigError("endpoint.client_key is set but endpoint.client_cert is not")
    if settings.client_cert is not None:
        _load_client_certificate(context, settings.client_cert, settings.client_key)
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: Path, key: Path | None) -> None:
    key_file = key or cert  # a PEM file may hold the certificate and its key
    for name, path in (("client_cert", cert), ("client_key", key_file)):
        if not path.is_file():
            raise DeliveryConfigError(f"endpoint.{name} {path} does not exist or is not a file")
    warn_if_readable_by_others(key_file, "client_key_permissions")
    try:
        context.load_cert_chain(str(cert), str(key_file), password=_no_password)
    except ssl.SSLError as exc:
        raise DeliveryConfigError(
            f"cannot use endpoint.client_cert {cert} with the key in {key_file} "
            f"({exc.reason or 'unreadable or encrypted key'}); both must be PEM, the key "
            "unencrypted and matching the certificate"
        ) from None
    except OSError as exc:
        raise DeliveryConfigError(
            f"cannot read endpoint.client_cert {cert} or its key {key_file}: {exc.strerror}"
        ) from None


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
