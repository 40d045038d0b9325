"""Name a TLS mismatch between a client and its server, in one short look at the server's port.

When one end speaks TLS and the other does not, or one end does not trust the other's
certificate, gRPC reports only a vague connection failure ("Socket closed", "Tls handshake
failed") and would be retried until the client gives up. Retrying cannot fix a configuration, so
after such a failure the client opens one TCP connection of its own, attempts a TLS handshake
with the same trust settings, and reads the server's first bytes:

- the handshake fails on bytes that are not TLS, or the server closes it: the server is plaintext;
- the server's certificate does not verify against the client's root certificate: untrusted server;
- the handshake completes and the server then closes the connection or sends a TLS alert: it
  refused this client's certificate (or its lack of one);
- the handshake completes and the server sends its HTTP/2 settings: TLS fits, the failure was
  something else (the client keeps reconnecting).
"""

from __future__ import annotations

import enum
import logging
import socket
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
"""Seconds each step of the probe (connect, handshake, first read) may take."""

# Substrings (lower case) of gRPC's error details when a connection failed in the TLS layer;
# "connection refused" and name resolution errors are not among them: those are retried.
_TLS_FAILURE_HINTS = (
    "socket closed",
    "connection reset",
    "ssl",
    "tls",
    "handshake",
    "wrong_version_number",
    "certificate",
)


def looks_like_tls_failure(details: str | None) -> bool:
    """Whether gRPC's error details are those of a connection that may have failed over TLS."""
    lowered = (details or "").lower()
    return any(hint in lowered for hint in _TLS_FAILURE_HINTS)


class Finding(enum.Enum):
    """What a probe found the server's port to speak."""

    UNREACHABLE = "nothing accepted a TCP connection"
    PLAINTEXT = "the server answered a TLS handshake with something else, or closed"
    SERVER_UNTRUSTED = "the server's certificate did not verify"
    CLIENT_REJECTED = "the server completed the handshake, then refused this client"
    ACCEPTED = "the server accepted the TLS connection"
    UNKNOWN = "the server did not answer in time"


@dataclass(frozen=True)
class ProbeResult:
    """A `Finding`, with the TLS library's reason where there is one."""

    finding: Finding
    reason: str = ""


def split_address(address: str) -> tuple[str, int] | None:
    """`(host, port)` of a `host:port`, `[v6]:port` or `dns:///host:port` target; None for
    targets a TCP probe cannot follow (unix sockets, several addresses, no port)."""
    if address.startswith("unix:") or "," in address:
        return None
    target = address.rsplit("/", 1)[-1] if "://" in address else address
    host, separator, port = target.rpartition(":")
    if not separator or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def probe_server(
    host: str, port: int, context: ssl.SSLContext, timeout: float = PROBE_TIMEOUT_S
) -> ProbeResult:
    """Attempt one TLS handshake with `context` at `host:port` and say what the server did."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        return ProbeResult(Finding.UNREACHABLE, str(error))
    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except ssl.SSLCertVerificationError as error:
            return ProbeResult(Finding.SERVER_UNTRUSTED, error.verify_message or str(error))
        except ssl.SSLError as error:
            reason = error.reason or str(error)
            # A TLS alert is an answer in TLS: the server speaks it and refused the handshake.
            finding = Finding.CLIENT_REJECTED if "ALERT" in reason else Finding.PLAINTEXT
            return ProbeResult(finding, reason)
        except ConnectionError as error:  # closed on a ClientHello: not a TLS server
            return ProbeResult(Finding.PLAINTEXT, str(error))
        except OSError as error:  # timed out: a slow or stuck server tells nothing
            return ProbeResult(Finding.UNKNOWN, str(error))
        with tls:
            return _first_answer(tls)


def _first_answer(tls: ssl.SSLSocket) -> ProbeResult:
    """After a completed handshake: a gRPC server sends its HTTP/2 settings at once, or closes
    the connection if it refused the client's certificate (TLS 1.3 decides that only now)."""
    try:
        data = tls.recv(1)
    except ssl.SSLError as error:
        return ProbeResult(Finding.CLIENT_REJECTED, error.reason or str(error))
    except ConnectionError as error:
        return ProbeResult(Finding.CLIENT_REJECTED, str(error))
    except OSError as error:
        return ProbeResult(Finding.UNKNOWN, str(error))
    if not data:
        return ProbeResult(Finding.CLIENT_REJECTED, "the server closed the connection")
    return ProbeResult(Finding.ACCEPTED)


def client_context(
    root_certificates: bytes | None, certificate: tuple[bytes, bytes] | None
) -> ssl.SSLContext:
    """A TLS context that trusts what the gRPC client trusts and presents what it presents.

    Without `root_certificates` (a client that does not use TLS) it verifies nothing: it only
    asks whether the server speaks TLS. Raises `ssl.SSLError` or `ValueError` for PEM data
    that holds no usable certificate or key.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if root_certificates is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.load_verify_locations(cadata=root_certificates.decode("ascii", errors="replace"))
    if certificate is not None:
        # The ssl module loads a certificate and key only from files: write them to a
        # directory only this user can read (mkdtemp's), for as long as loading takes.
        with tempfile.TemporaryDirectory(prefix="roost-tls-") as directory:
            chain_path, key_path = Path(directory, "chain.pem"), Path(directory, "key.pem")
            chain_path.write_bytes(certificate[0])
            key_path.write_bytes(certificate[1])
            context.load_cert_chain(chain_path, key_path)
    return context


def explain_tls_failure(
    address: str,
    root_certificates: bytes | None,
    certificate: tuple[bytes, bytes] | None,
    timeout: float = PROBE_TIMEOUT_S,
) -> str | None:
    """What is wrong with this client's TLS settings for the server at `address`, and how to fix
    it; None when the probe finds nothing wrong with them (the failure was something else).

    `root_certificates` and `certificate` are the client's PEM data (None: not used).
    """
    target = split_address(address)
    if target is None:
        return None
    try:
        context = client_context(root_certificates, certificate)
    except (ssl.SSLError, ValueError) as error:
        return (
            f"this client's TLS files are not usable ({error}); --root-certificate must be a "
            "PEM CA certificate and --certificate a PEM certificate with its own private key"
        )
    result = probe_server(*target, context, timeout)
    log.debug("TLS probe of %s: %s (%s)", address, result.finding.value, result.reason)
    return _explain(address, result, root_certificates is not None, certificate is not None)


def _explain(
    address: str, result: ProbeResult, uses_tls: bool, has_certificate: bool
) -> str | None:
    finding, reason = result.finding, result.reason
    prefix = f"no connection to the server at {address}"
    if not uses_tls:
        if finding not in (Finding.ACCEPTED, Finding.CLIENT_REJECTED):
            return None
        mutual = (
            ", and --certificate CERT KEY if the server requires client certificates"
            if finding is Finding.CLIENT_REJECTED
            else ""
        )
        return (
            f"{prefix}: the server uses TLS and this client does not; pass --root-certificate "
            f"PEM (root_certificates=), the CA certificate that signed the server's "
            f"certificate{mutual}"
        )
    if finding is Finding.PLAINTEXT:
        return (
            f"{prefix}: the server does not use TLS and this client does; drop "
            "--root-certificate (root_certificates=), or start the server with --certificates "
            "CERT KEY"
        )
    if finding is Finding.SERVER_UNTRUSTED:
        return (
            f"{prefix}: the server's certificate does not verify against --root-certificate "
            f"({reason}); pass the CA certificate that signed the server's certificate, and "
            "connect by a host name or address that certificate lists"
        )
    if finding is not Finding.CLIENT_REJECTED:
        return None
    if not has_certificate:
        return (
            f"{prefix}: the server requires a client certificate (mutual TLS) and this client "
            "has none; pass --certificate CERT KEY (certificate=), signed by the CA the server "
            "was given as --client-ca, with this node's id as its common name"
        )
    return (
        f"{prefix}: the server refused this client's certificate in the TLS handshake "
        f"({reason}); --certificate must be signed by the CA the server was given as "
        "--client-ca, and be valid now"
    )
