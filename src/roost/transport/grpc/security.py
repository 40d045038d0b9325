"""TLS credentials and per-client token authentication for the gRPC transport.

Each client presents a token in the `authorization` call metadata. The server's interceptor checks
it before the call reaches roost's handler, so a client without a valid token is refused before a
single byte it sent is parsed. A token belongs to one node id: a client may only join under the id
its token was issued for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc
import grpc.aio

from roost.errors import ConfigurationError
from roost.transport.grpc.conduct import Summary

AUTH_METADATA_KEY = "authorization"
_BEARER = "Bearer "
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

PemSource = bytes | str | Path


def check_node_id(node_id: str) -> str:
    """Node ids name clients in logs, token files and histories: keep them short and plain."""
    if not isinstance(node_id, str) or not NODE_ID_PATTERN.fullmatch(node_id):
        raise ConfigurationError(
            f"node id {node_id!r} is not valid: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return node_id


def read_pem(source: PemSource, what: str) -> bytes:
    """PEM data given as bytes, as PEM text, or as a path to a file."""
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    path = Path(source)
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the {what} at {path}: {error.strerror}") from None


def server_credentials(
    certificates: Sequence[PemSource], client_ca: PemSource | None = None
) -> grpc.ServerCredentials:
    """TLS credentials from `(certificate_chain, private_key)` or `(ca, certificate_chain, key)`.

    The CA certificate of the 3-tuple form (Flower's order) is not needed to serve TLS and is
    ignored; clients verify the server with it. With `client_ca` (mutual TLS), every client must
    present a certificate that CA signed; its subject's common name is the client's node id.
    """
    if len(certificates) == 3:
        certificates = certificates[1:]
    if len(certificates) != 2:
        raise ConfigurationError(
            "certificates must be (certificate_chain, private_key) or "
            "(ca_certificate, certificate_chain, private_key)"
        )
    chain = read_pem(certificates[0], "server certificate")
    key = read_pem(certificates[1], "server private key")
    if client_ca is None:
        return grpc.ssl_server_credentials([(key, chain)])
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=read_pem(client_ca, "client CA certificate"),
        require_client_auth=True,
    )


def channel_credentials(
    root_certificates: PemSource, certificate: Sequence[PemSource] | None = None
) -> grpc.ChannelCredentials:
    """Credentials that accept only a server whose certificate `root_certificates` signed.

    `certificate`, a `(certificate_chain, private_key)` pair, is this client's own certificate,
    for servers that require one (mutual TLS).
    """
    root = read_pem(root_certificates, "root certificate")
    if certificate is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    if len(certificate) != 2:
        raise ConfigurationError("certificate must be (certificate_chain, private_key)")
    return grpc.ssl_channel_credentials(
        root_certificates=root,
        private_key=read_pem(certificate[1], "client private key"),
        certificate_chain=read_pem(certificate[0], "client certificate"),
    )


def certificate_node(context: grpc.aio.ServicerContext) -> str | None:
    """The node id a client's verified certificate names (its common name), if it sent one.

    gRPC fills the peer's certificate fields only after verifying the chain against the
    server's client CA, so with mutual TLS this is a proven identity.
    """
    names = context.auth_context().get("x509_common_name")
    if not names:
        return None
    name = names[0]
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def read_tokens_file(path: str | Path) -> dict[str, str]:
    """Read `node-id token` pairs, one per line; blank lines and `#` comments are skipped."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise ConfigurationError(f"cannot read the tokens file {path}: {error.strerror}") from None
    tokens: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigurationError(
                f"{path}:{number}: expected 'node-id token', got {len(parts)} field(s)"
            )
        node_id, token = parts
        if node_id in tokens:
            raise ConfigurationError(f"{path}:{number}: node id {node_id!r} appears twice")
        tokens[check_node_id(node_id)] = token
    if not tokens:
        raise ConfigurationError(f"{path} lists no tokens; add lines of the form 'node-id token'")
    return tokens


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """Admitted tokens, each bound to one node id.

    Tokens are looked up by their SHA-256 digest, so the time a lookup takes says nothing useful
    about how close a guess was.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self._node_of: dict[bytes, str] = {}
        for node_id, token in tokens.items():
            check_node_id(node_id)
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigurationError(
                    f"the token of node {node_id!r} is shorter than 16 characters; generate one "
                    'with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
                )
            digest = _digest(token)
            if digest in self._node_of:
                raise ConfigurationError(
                    f"nodes {self._node_of[digest]!r} and {node_id!r} share a token"
                )
            self._node_of[digest] = node_id

    @classmethod
    def from_source(cls, source: Mapping[str, str] | str | Path) -> TokenStore:
        """From a `{node_id: token}` mapping or a tokens file path."""
        if isinstance(source, Mapping):
            return cls(source)
        return cls(read_tokens_file(source))

    def identify(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
        """The node id whose token the call metadata carries, or None."""
        for key, value in metadata or ():
            if key == AUTH_METADATA_KEY and isinstance(value, str) and value.startswith(_BEARER):
                return self._node_of.get(_digest(value[len(_BEARER) :]))
        return None


def token_metadata(token: str) -> tuple[tuple[str, str], ...]:
    return ((AUTH_METADATA_KEY, _BEARER + token),)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose metadata lacks a token of `store`, before any handler runs.

    Args:
        store: the admitted tokens.
        refusals: where refused calls are counted and logged.
    """

    def __init__(self, store: TokenStore, refusals: Summary) -> None:
        self._store = store
        self._refusals = refusals
        self._refusal = grpc.stream_stream_rpc_method_handler(self._refuse)

    async def _refuse(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        # Never touches request_iterator: nothing the caller sent is read, let alone parsed.
        self._refusals.add(f"from {context.peer()}: missing or unknown token")
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or unknown token; pass the token this server issued for your node id",
        )

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        if self._store.identify(handler_call_details.invocation_metadata) is None:
            return self._refusal
        return await continuation(handler_call_details)
