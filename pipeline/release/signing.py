"""Signatures of releases: sigstore's ``model_signing`` with an EC P-256 key, offline.

``model_signing`` hashes every file of the release folder (sha256 per file) into an in-toto
statement and signs it into a sigstore bundle (``model.sig``), so the signature covers the
artifacts, the reports, the sidecars and ``manifest.json``; ``model.sig`` itself and the
``COMPLETE`` marker are the only files it leaves out. Verification recomputes the file hashes
and names each file that differs from what was signed.

A private key protected by a password is read with the password in ``MOBILE_EXPORT_KEY_PASSWORD``.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from pipeline.errors import UserInputError
from pipeline.files import atomic_write_bytes
from pipeline.release.manifest import COMPLETE, SIGNATURE

PASSWORD_ENV = "MOBILE_EXPORT_KEY_PASSWORD"
PRIVATE_KEY, PUBLIC_KEY = "release-key.pem", "release-key.pub"
_MAX_KEY_BYTES = 64 << 10
#: a bundle lists one digest per file: a few KB for a release
MAX_SIGNATURE_BYTES = 16 << 20


def _read_key(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{what} {path} does not exist; `mobile-export keygen DIR` writes "
                             "a key pair")
    if path.stat().st_size > _MAX_KEY_BYTES:
        raise UserInputError(f"{what} {path} is too large to be a PEM key")
    return path.read_bytes()


def check_private_key(path: Path) -> None:
    """Refuse, before anything is uploaded, a key ``model_signing`` could not sign with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    password = os.environ.get(PASSWORD_ENV)
    try:
        key = load_pem_private_key(_read_key(path, "the private key"),
                                   password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        hint = (f"set {PASSWORD_ENV}" if "password" in str(exc).lower()
                else "pass an EC P-256 private key in PEM (mobile-export keygen writes one)")
        raise UserInputError(f"{path}: not a usable private key ({exc}); {hint}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise UserInputError(f"{path}: releases are signed with an EC P-256 key; this is a "
                             f"{type(key).__name__.lstrip('_')}; `mobile-export keygen DIR`")


def keygen(folder: Path) -> tuple[Path, Path]:
    """Write a new EC P-256 key pair (``release-key.pem`` mode 0600, ``release-key.pub``);
    never over an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    private, public = folder / PRIVATE_KEY, folder / PUBLIC_KEY
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise UserInputError(f"{path} exists; keygen never replaces a key (move it away "
                                 "or pick another folder)")
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    atomic_write_bytes(public, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _hashing():
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE, COMPLETE])


def sign(folder: Path, private_key: Path) -> Path:
    """Sign every file of ``folder`` into ``folder/model.sig``."""
    from model_signing import signing

    check_private_key(private_key)
    signature = Path(folder) / SIGNATURE
    password = os.environ.get(PASSWORD_ENV)
    # model_signing 1.1.1 types the password as str but hands it to cryptography, which takes bytes
    (signing.Config().set_hashing_config(_hashing())
     .use_elliptic_key_signer(private_key=private_key,
                              password=password.encode() if password else None)  # type: ignore[arg-type]
     .sign(Path(folder), signature))
    return signature


def _signed_digests(signature: Path) -> dict[str, str]:
    """File -> sha256 as the signed statement lists them. Read only after ``model_signing``
    verified the bundle's signature (it reports a content mismatch only after that check), so
    this is the signer's own list; it names the files that differ, one by one."""
    import base64
    import json

    statement = json.loads(base64.b64decode(json.loads(signature.read_text())
                                            ["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}


def _content_problems(actual: dict[str, str], signed: dict[str, str]) -> list[tuple[str, str]]:
    """``actual``: file -> sha256 of the folder's files, ``signed``: what the signature lists."""
    actual = {n: d for n, d in actual.items() if PurePosixPath(n).name not in (SIGNATURE, COMPLETE)}
    problems = [(n, "missing: it was signed") for n in sorted(set(signed) - set(actual))]
    problems += [(n, "differs from what was signed") for n in sorted(set(signed) & set(actual))
                 if actual[n] != signed[n]]
    problems += [(n, "not covered by the signature") for n in sorted(set(actual) - set(signed))]
    return problems


def file_digests(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (relative POSIX name) -> its sha256."""
    from pipeline.artifact import sha256_file

    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def signature_problems(folder: Path, public_key: Path,
                       digests: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(file, problem) for each way ``folder`` fails its signature; empty when it holds.
    ``digests``: :func:`file_digests` of ``folder`` where the caller has them already."""
    from model_signing import verifying

    _read_key(public_key, "the public key")
    bundle = Path(folder) / SIGNATURE
    if not bundle.is_file():
        return [(SIGNATURE, "no signature: the release is unsigned (publish it with --key)")]
    if bundle.stat().st_size > MAX_SIGNATURE_BYTES:
        return [(SIGNATURE, f"over the {MAX_SIGNATURE_BYTES:,} bytes a signature bundle may "
                            "take; not a signature")]
    try:
        (verifying.Config().use_elliptic_key_verifier(public_key=public_key)
         .verify(Path(folder), Path(folder) / SIGNATURE))
    except ValueError as exc:
        text = str(exc)
        if text.startswith("Signature mismatch"):
            actual = digests if digests is not None else file_digests(Path(folder))
            return _content_problems(actual, _signed_digests(bundle)) \
                or [(SIGNATURE, f"content differs from what was signed ({text[:200]})")]
        if text.startswith("Key mismatch"):
            return [(SIGNATURE, f"signed with another key than {Path(public_key).name} "
                                "(wrong key, or the signature was replaced)")]
        return [(SIGNATURE, f"does not verify with {Path(public_key).name} ({text[:160]})")]
    except Exception as exc:  # noqa: BLE001 - a crafted bundle fails inside protobuf/json/crypto
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return [(SIGNATURE, f"not a valid signature bundle ({type(exc).__name__}: {first})")]
    return []
