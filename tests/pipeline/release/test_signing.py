"""Keys: keygen writes a usable P-256 pair and never replaces one; other keys are refused
before anything is uploaded."""
from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.errors import UserInputError
from pipeline.release.signing import check_private_key, keygen, sign, signature_problems


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path):
    private, public = keygen(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert serialization.load_pem_public_key(public.read_bytes()).public_numbers() == \
        key.public_key().public_numbers()
    with pytest.raises(UserInputError, match="keygen never replaces a key"):
        keygen(tmp_path / "k")


def test_a_key_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "rsa.pem"
    path.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(UserInputError, match="signed with an EC P-256 key"):
        check_private_key(path)
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(UserInputError, match="not a usable private key"):
        check_private_key(tmp_path / "junk.pem")
    with pytest.raises(UserInputError, match="does not exist"):
        check_private_key(tmp_path / "absent.pem")


def test_a_password_protected_key_needs_its_password(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "locked.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"pw")))
    monkeypatch.delenv("MOBILE_EXPORT_KEY_PASSWORD", raising=False)
    with pytest.raises(UserInputError, match="MOBILE_EXPORT_KEY_PASSWORD"):
        check_private_key(path)
    monkeypatch.setenv("MOBILE_EXPORT_KEY_PASSWORD", "pw")
    folder = tmp_path / "rel"
    folder.mkdir()
    (folder / "a.bin").write_bytes(b"model")
    sign(folder, path)
    public = tmp_path / "locked.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    assert signature_problems(folder, public) == []


def test_a_garbage_signature_is_a_problem_not_a_crash(tmp_path):
    _, public = keygen(tmp_path / "k")
    folder = tmp_path / "rel"
    folder.mkdir()
    (folder / "model.sig").write_text('{"mediaType": 1}')
    [(name, problem)] = signature_problems(folder, public)
    assert name == "model.sig" and "not a valid signature bundle" in problem
