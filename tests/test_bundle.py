"""Bundles and keys: deterministic archives, signatures, and what a node refuses."""

from __future__ import annotations

import io
import logging
import os
import tarfile
from pathlib import Path

import pytest

from roost.cli import main
from roost.errors import ConfigurationError
from roost.federation.bundle import (
    MANIFEST_NAME,
    BundleRefusedError,
    SignedBundle,
    make_bundle,
    read_manifest,
    sign_bundle,
    unpack_bundle,
    verify_bundle,
)
from roost.federation.keys import (
    fingerprint,
    generate_key_pair,
    load_private_key,
    load_public_key,
    public_key_bytes,
    public_key_line,
    public_key_path,
)
from roost.federation.requirements import missing_requirements

PYPROJECT = """\
[project]
name = "tiny"
dependencies = ["numpy>=1.20", "flwr[simulation]>=1.42"]

[tool.roost.components]
client = "tiny.client:client_fn"
"""


def write_project(root: Path) -> Path:
    project = root / "tiny"
    (project / "tiny").mkdir(parents=True)
    (project / "pyproject.toml").write_text(PYPROJECT)
    (project / "tiny" / "client.py").write_text("def client_fn(context):\n    return None\n")
    (project / "run.sh").write_text("#!/bin/sh\n")
    (project / "run.sh").chmod(0o755)
    for skipped in ("tiny/__pycache__/client.pyc", ".git/HEAD", "out/history.json", ".venv/x"):
        (project / skipped).parent.mkdir(parents=True, exist_ok=True)
        (project / skipped).write_text("not bundled")
    (project / "tiny" / "state").mkdir()  # a package named state, deeper: bundled
    (project / "tiny" / "state" / "__init__.py").write_text("")
    return project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("keys")
    return generate_key_pair(root / "alice.pem"), generate_key_pair(root / "mallory.pem")


def names(bundle: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        return archive.getnames()


def test_bundle_is_deterministic_and_leaves_caches_and_outputs_out(project: Path) -> None:
    first = make_bundle(project)
    os.utime(project / "tiny" / "client.py", (1e9, 1e9))  # another time: the same bytes
    assert make_bundle(project) == first
    assert names(first) == [
        MANIFEST_NAME,
        "pyproject.toml",
        "run.sh",
        "tiny/client.py",
        "tiny/state/__init__.py",
    ]
    manifest = read_manifest(first)
    assert (manifest.name, manifest.kind) == ("tiny", "roost")
    assert manifest.requirements == ("numpy>=1.20", "flwr[simulation]>=1.42")
    (project / "tiny" / "client.py").write_text("changed = True\n")
    assert make_bundle(project) != first


def test_signed_bundle_unpacks_what_was_packed(project: Path, keys, tmp_path: Path) -> None:
    alice, _ = keys
    bundle = make_bundle(project)
    manifest = verify_bundle(bundle, sign_bundle(bundle, alice), alice.public_key(), [alice])
    assert manifest.name == "tiny"
    unpack_bundle(bundle, tmp_path / "app")
    assert (tmp_path / "app" / "tiny" / "client.py").read_text() == (
        project / "tiny" / "client.py"
    ).read_text()
    assert os.access(tmp_path / "app" / "run.sh", os.X_OK)
    with pytest.raises(ConfigurationError, match="not empty"):
        unpack_bundle(bundle, tmp_path / "app")


def test_a_tampered_bundle_is_refused(project: Path, keys) -> None:
    alice, _ = keys
    bundle = make_bundle(project)
    signature = sign_bundle(bundle, alice)
    tampered = bytearray(bundle)
    tampered[len(bundle) // 2] ^= 1
    with pytest.raises(BundleRefusedError, match="does not match its content"):
        verify_bundle(bytes(tampered), signature, alice.public_key(), [alice])


def test_an_untrusted_signer_is_refused_with_the_reason(project: Path, keys) -> None:
    alice, mallory = keys
    bundle = make_bundle(project)
    with pytest.raises(BundleRefusedError) as refused:
        verify_bundle(bundle, sign_bundle(bundle, mallory), mallory.public_key(), [alice])
    message = str(refused.value)
    assert fingerprint(mallory) in message and "does not trust" in message
    assert "\n" not in message


def test_unsigned_bundles_run_only_where_allowed_and_loudly(project: Path, keys, caplog) -> None:
    alice, _ = keys
    bundle = make_bundle(project)
    with pytest.raises(BundleRefusedError, match="unsigned"):
        verify_bundle(bundle, None, None, [alice])
    with caplog.at_level(logging.WARNING):
        assert verify_bundle(bundle, None, None, [alice], allow_unsigned=True).name == "tiny"
    assert "UNSIGNED" in caplog.text


def test_oversized_and_corrupt_bundles_are_refused_in_one_line(project: Path, keys) -> None:
    alice, _ = keys
    (project / "data.bin").write_bytes(os.urandom(4096))  # incompressible
    with pytest.raises(ConfigurationError, match="MiB cap; keep data out"):
        make_bundle(project, max_bytes=2048)
    bundle = make_bundle(project)
    with pytest.raises(BundleRefusedError, match="passes this node's cap"):
        verify_bundle(bundle, sign_bundle(bundle, alice), alice, [alice], max_bytes=1024)
    garbage = b"not a bundle at all"
    with pytest.raises(BundleRefusedError, match=r"not a readable tar\.gz"):
        verify_bundle(garbage, sign_bundle(garbage, alice), alice, [alice])


def hostile_bundle(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        manifest = b'{"name": "x", "kind": "roost", "requirements": [], "created_by": "0"}'
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size = len(manifest)
        archive.addfile(info, io.BytesIO(manifest))
        archive.addfile(member, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def test_unpack_refuses_traversal_links_and_devices_before_writing(tmp_path: Path) -> None:
    escape = tarfile.TarInfo("../escaped.py")
    escape.size = 3
    link = tarfile.TarInfo("innocent.py")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    cases = [(escape, b"bad", "outside"), (link, b"", "is a link"), (device, b"", "device")]
    for member, data, reason in cases:
        with pytest.raises(BundleRefusedError, match=reason):
            unpack_bundle(hostile_bundle(member, data), tmp_path / "app")
        assert not (tmp_path / "escaped.py").exists()
        assert not (tmp_path / "app").exists() or not any((tmp_path / "app").iterdir())


def test_missing_requirements_are_listed_and_roost_provides_flwr() -> None:
    wanted = ["numpy>=1.0", "flwr[simulation]>=1.42", "numpy>=999", "no-such-package-roost-xyz"]
    assert missing_requirements(wanted) == ["numpy>=999", "no-such-package-roost-xyz"]
    assert missing_requirements(['numpy>=999; python_version < "3"']) == []


def test_keys_load_in_every_form_and_bad_keys_say_so(tmp_path: Path, keys) -> None:
    alice, _ = keys
    raw = public_key_bytes(alice)
    pem = tmp_path / "k.pub"
    pem.write_text("not a key")
    for form in (public_key_line(alice), raw):
        assert public_key_bytes(load_public_key(form)) == raw
    with pytest.raises(ConfigurationError, match="not a PEM public key"):
        load_public_key(pem)
    with pytest.raises(ConfigurationError, match="not an Ed25519 public key"):
        load_public_key("ed25519:short")
    generate_key_pair(tmp_path / "a.pem")
    with pytest.raises(ConfigurationError, match="already exists"):
        generate_key_pair(tmp_path / "a.pem")
    assert (tmp_path / "a.pem").stat().st_mode & 0o777 == 0o600
    assert public_key_bytes(load_public_key(tmp_path / "a.pub")) == public_key_bytes(
        load_private_key(tmp_path / "a.pem")
    )


def test_roost_sign_writes_a_bundle_a_node_accepts(project: Path, tmp_path: Path, capsys) -> None:
    key = tmp_path / "publisher.pem"
    out = tmp_path / "tiny.tar.gz"
    assert main(["sign", str(project), "--new-key", str(key), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ed25519:" in printed and "tiny.sig" in printed
    signed = SignedBundle.read(out)
    trusted = [load_public_key(public_key_path(key))]
    assert verify_bundle(signed.data, signed.signature, signed.publisher, trusted).name == "tiny"
    out.write_bytes(signed.data + b"x")
    with pytest.raises(ConfigurationError, match="signs another bundle"):
        SignedBundle.read(out)
    assert main(["sign", str(project)]) == 2
    assert "needs --key" in capsys.readouterr().err
