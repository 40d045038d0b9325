"""Bundles: a project directory packed for a federation, signed by its publisher.

A bundle is a deterministic tar.gz of a roost or Flower project (the same files give the same
bytes, so its sha256 names its content) with a manifest, `roost-bundle.json`, inside: the project's
name, its kind, its Python requirements and the roost version that made it. A publisher signs
sha256(bundle) with an Ed25519 key (`roost.federation.keys`); a node runs only bundles signed by a
publisher it trusts, after checking the archive holds nothing but plain files inside its own
directory, within a size cap.

    data = make_bundle("my-project")
    signature = sign_bundle(data, load_private_key("publisher.pem"))
    manifest = verify_bundle(data, signature, publisher_key, trusted_keys)  # on the node
    unpack_bundle(data, "runs/7/app")
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from roost.errors import ConfigurationError
from roost.federation.keys import (
    PublicKeySource,
    b64decode,
    b64encode,
    fingerprint,
    load_public_key,
    public_key_bytes,
    public_key_line,
    sign,
    verify,
)
from roost.federation.manifest import (
    MANIFEST_NAME,
    BundleRefusedError,
    Manifest,
    project_manifest,
)

__all__ = [
    "MANIFEST_NAME",
    "MAX_BUNDLE_BYTES",
    "BundleRefusedError",
    "Manifest",
    "SignedBundle",
    "bundle_sha256",
    "make_bundle",
    "read_manifest",
    "sign_bundle",
    "unpack_bundle",
    "verify_bundle",
]

logger = logging.getLogger(__name__)

MAX_BUNDLE_BYTES = 50 << 20
"""The default cap on a bundle's size (compressed) and on each file in it: 50 MiB. Data stays
with the nodes; a bundle carries code and small files."""

UNPACKED_FACTOR = 4
"""A bundle may unpack to at most this many times its cap (a compressed bomb stops there)."""

SKIPPED_ANYWHERE = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
)
"""Directories never bundled, wherever they are: caches, version control, environments."""

SKIPPED_AT_TOP = frozenset({"out", "state", "outputs", "dist", "build"})
"""Top-level directories never bundled: a run's outputs and checkpoints, build results (deeper,
a package of the project may be called `state`)."""


def bundle_sha256(bundle: bytes) -> str:
    """The hex sha256 of a bundle: its name in the federation."""
    return hashlib.sha256(bundle).hexdigest()


def _project_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(name in the bundle, path) of each file to bundle, in sorted order."""

    def walk(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        for path in sorted(folder.iterdir(), key=lambda p: p.name):
            name = f"{prefix}{path.name}"
            if path.is_symlink():
                raise ConfigurationError(
                    f"{path} is a link: bundles carry plain files only; copy what it points to"
                )
            if path.is_dir():
                skipped = path.name in SKIPPED_ANYWHERE or (
                    not prefix and path.name in SKIPPED_AT_TOP
                )
                if not skipped:
                    yield from walk(path, name + "/")
            # A stale manifest in the project is replaced, never carried.
            elif path.is_file() and path.suffix not in {".pyc", ".pyo"} and name != MANIFEST_NAME:
                yield name, path

    yield from walk(directory, "")


def _tar_entry(name: str, data: bytes, executable: bool = False) -> tarfile.TarInfo:
    # Zeroed times and owners: the same files give the same bytes on any machine.
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o755 if executable else 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def make_bundle(project_dir: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
    """The bundle of the project in `project_dir`: a deterministic tar.gz of its files (without
    caches, environments, `.git`, `out/` and `state/`) and its manifest; refused in one line when
    it would pass `max_bytes`."""
    directory = Path(project_dir)
    if not directory.is_dir():
        raise ConfigurationError(f"{directory} is not a directory: bundle a project directory")
    manifest = project_manifest(directory)
    limit = max_bytes * UNPACKED_FACTOR
    buffer = io.BytesIO()
    total = 0
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        archive.addfile(
            _tar_entry(MANIFEST_NAME, manifest.to_json()), io.BytesIO(manifest.to_json())
        )
        for name, path in _project_files(directory):
            data = path.read_bytes()
            total += len(data)
            if len(data) > max_bytes or total > limit:
                raise _too_large(directory, f"{name} makes it pass", max_bytes)
            executable = bool(path.stat().st_mode & 0o100)
            archive.addfile(_tar_entry(name, data, executable), io.BytesIO(data))
    bundle = buffer.getvalue()
    if len(bundle) > max_bytes:
        raise _too_large(directory, f"it is {len(bundle) / (1 << 20):.1f} MiB bundled,", max_bytes)
    return bundle


def _too_large(directory: Path, what: str, max_bytes: int) -> ConfigurationError:
    return ConfigurationError(
        f"cannot bundle {directory}: {what} the {max_bytes / (1 << 20):g} MiB cap; keep data "
        "out of the project directory (a node reads data from its own data paths)"
    )


def sign_bundle(bundle: bytes, private_key: Ed25519PrivateKey) -> bytes:
    """The publisher's signature of a bundle: Ed25519 over the bundle's sha256 digest."""
    return sign(private_key, hashlib.sha256(bundle).digest())


@dataclass(frozen=True)
class SignedBundle:
    """A bundle as it travels: its bytes, the publisher's signature and public key (32 bytes).

    On disk it is two files: `NAME.tar.gz` and `NAME.sig`, the signature file, a small JSON
    object `{"sha256": HEX, "signature": B64, "publisher": "ed25519:B64"}`.
    """

    data: bytes
    signature: bytes
    publisher: bytes

    @classmethod
    def sign(cls, bundle: bytes, private_key: Ed25519PrivateKey) -> SignedBundle:
        """`bundle` signed with `private_key`."""
        return cls(bundle, sign_bundle(bundle, private_key), public_key_bytes(private_key))

    @property
    def sha256(self) -> str:
        """The bundle's hex sha256."""
        return bundle_sha256(self.data)

    def signature_json(self) -> str:
        """The signature file's text."""
        record = {
            "sha256": self.sha256,
            "signature": b64encode(self.signature),
            "publisher": public_key_line(load_public_key(self.publisher)),
        }
        return json.dumps(record, indent=1) + "\n"

    def write(self, bundle_path: str | Path) -> tuple[Path, Path]:
        """Write the bundle to `bundle_path` and its signature file beside it; both paths."""
        path = Path(bundle_path)
        signature_path = signature_path_for(path)
        path.write_bytes(self.data)
        signature_path.write_text(self.signature_json())
        return path, signature_path

    @classmethod
    def read(cls, bundle_path: str | Path) -> SignedBundle:
        """The bundle at `bundle_path` with its signature file; one-line errors when either is
        missing or malformed, or when the signature file names another bundle."""
        path = Path(bundle_path)
        signature_path = signature_path_for(path)
        try:
            data = path.read_bytes()
            record = json.loads(signature_path.read_text())
            signature = b64decode(record["signature"])
            publisher = public_key_bytes(load_public_key(record["publisher"]))
            sha256 = record["sha256"]
        except OSError as error:
            raise ConfigurationError(
                f"cannot read {error.filename}: {error.strerror}; `roost sign DIR --key KEY.pem` "
                "writes a bundle and its .sig"
            ) from None
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(
                f"{signature_path} is not a signature file ({error})"
            ) from None
        if sha256 != bundle_sha256(data):
            raise ConfigurationError(f"{signature_path} signs another bundle than {path}")
        return cls(data, signature, publisher)


def signature_path_for(bundle_path: Path) -> Path:
    """Where a bundle's signature file lives: `app.tar.gz` -> `app.sig`."""
    name = bundle_path.name.removesuffix(".tar.gz").removesuffix(".tgz")
    return bundle_path.with_name(name + ".sig")


def verify_bundle(
    bundle: bytes,
    signature: bytes | None,
    publisher_key: PublicKeySource | None,
    trusted_keys: Iterable[PublicKeySource],
    *,
    allow_unsigned: bool = False,
    max_bytes: int = MAX_BUNDLE_BYTES,
) -> Manifest:
    """The manifest of a bundle this node may run: signed by `publisher_key`, one of
    `trusted_keys`, with a signature that matches its bytes (or unsigned, where `allow_unsigned`
    says so, with a warning). Raises BundleRefusedError with the reason otherwise."""
    if len(bundle) > max_bytes:
        raise BundleRefusedError(
            f"bundle of {len(bundle)} bytes passes this node's cap of {max_bytes} bytes"
        )
    if signature is None or publisher_key is None:
        if not allow_unsigned:
            raise BundleRefusedError(
                "bundle is unsigned and this node runs signed bundles only: sign it with "
                "`roost sign DIR --key KEY.pem` (or submit with --sign-key KEY.pem)"
            )
        logger.warning(
            "RUNNING AN UNSIGNED BUNDLE (sha256 %s): allow_unsigned is for development only; "
            "nobody vouches for this code",
            bundle_sha256(bundle)[:16],
        )
        return read_manifest(bundle, max_bytes)
    try:
        publisher = public_key_bytes(load_public_key(publisher_key))
        trusted = {public_key_bytes(load_public_key(key)) for key in trusted_keys}
    except (ConfigurationError, ValueError) as error:
        raise BundleRefusedError(f"the publisher key is malformed ({error})") from None
    if publisher not in trusted:
        raise BundleRefusedError(
            f"bundle is signed by publisher {fingerprint(publisher)}, whom this node does not "
            "trust (its operator adds the publisher's public key to trusted_publishers)"
        )
    digest = hashlib.sha256(bundle).digest()
    if not verify(load_public_key(publisher), signature, digest):
        raise BundleRefusedError(
            f"bundle signature does not match its content for publisher {fingerprint(publisher)}"
            " (tampered with or corrupt)"
        )
    return read_manifest(bundle, max_bytes)


def _members(bundle: bytes, max_bytes: int) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Each member of a bundle, after checking it is a plain file with a safe name and size."""
    limit, total = max_bytes * UNPACKED_FACTOR, 0
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
            for member in archive:
                _check_member(member, max_bytes)
                total += member.size
                if total > limit:
                    raise BundleRefusedError(f"bundle unpacks to more than {limit} bytes")
                yield member, archive
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as error:
        raise BundleRefusedError(f"bundle is not a readable tar.gz ({error})") from None


def _check_member(member: tarfile.TarInfo, max_bytes: int) -> None:
    name = member.name
    path = PurePosixPath(name)
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "device or directory entry"
        raise BundleRefusedError(f"bundle member {name!r} is a {kind}; bundles hold plain files")
    if path.is_absolute() or ".." in path.parts or "\\" in name or not name or name[0] == "/":
        raise BundleRefusedError(f"bundle member {name!r} points outside the bundle's directory")
    if member.size > max_bytes:
        raise BundleRefusedError(f"bundle member {name!r} of {member.size} bytes passes the cap")


def read_manifest(bundle: bytes, max_bytes: int = MAX_BUNDLE_BYTES) -> Manifest:
    """The manifest of a bundle, checking every member on the way (BundleRefusedError)."""
    manifest = None
    for member, archive in _members(bundle, max_bytes):
        if member.name == MANIFEST_NAME:
            file = archive.extractfile(member)
            manifest = Manifest.from_json(file.read() if file else b"")
    if manifest is None:
        raise BundleRefusedError(f"bundle has no {MANIFEST_NAME}: make it with `roost sign DIR`")
    return manifest


def unpack_bundle(bundle: bytes, dest: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Manifest:
    """Write a bundle's files under `dest` (created; it must not hold files) and return its
    manifest. Refuses links, devices, names that leave `dest` and oversized members before
    writing anything."""
    manifest = read_manifest(bundle, max_bytes)  # checks every member first
    target = Path(dest)
    if target.exists() and any(target.iterdir()):
        raise ConfigurationError(f"cannot unpack a bundle into {target}: it is not empty")
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for member, archive in _members(bundle, max_bytes):
        path = (root / member.name).resolve()
        if root not in path.parents:
            raise BundleRefusedError(f"bundle member {member.name!r} points outside {target}")
        path.parent.mkdir(parents=True, exist_ok=True)
        source = archive.extractfile(member)
        path.write_bytes(source.read() if source else b"")
        path.chmod(0o755 if member.mode & 0o100 else 0o644)
    return manifest
