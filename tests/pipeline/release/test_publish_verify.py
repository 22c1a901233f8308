"""publish -> verify-release round trips (a local folder and S3 through moto's server), and every
way a release can be tampered with, each caught with its own line."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from pipeline.release.collect import ReleaseRefused
from pipeline.release.manifest import COMPLETE, MANIFEST, SIGNATURE
from pipeline.release.upload import publish_release
from pipeline.release.verify import verify_release

pytestmark = pytest.mark.slow


def _publish(run: dict, to: str, keys: dict, **kw) -> object:
    return publish_release(run["run_dir"], to, key=keys["private"], version="1.0", **kw)


@pytest.fixture()
def local_release(released_run: dict, keys: dict, tmp_path: Path) -> Path:
    """A signed release of the tiny run in a local folder; the release's folder."""
    done = _publish(released_run, f"file://{tmp_path}/releases", keys)
    return tmp_path / "releases" / done.manifest.name / "1.0"


def _problems(folder: Path, public: Path) -> list[str]:
    return verify_release(str(folder), public).problems


def test_local_round_trip_holds_every_artifact_checked(released_run, keys, local_release):
    found = verify_release(f"file://{local_release}", keys["public"])
    assert found.ok, found.problems
    manifest = json.loads((local_release / MANIFEST).read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert {"report.json", "report.md", "report.html", "onnx/model.onnx",
            "android/model_fp32.tflite", "android/model.json"} <= paths
    assert any(p.startswith("ios/Model_fp32.mlpackage/") and p.endswith("model.mlmodel")
               for p in paths)
    report = json.loads((released_run["run_dir"] / "report.json").read_text())
    by_name = {n["name"]: n for n in report["nodes"]}
    for entry in manifest["files"]:
        assert len(entry["sha256"]) == 64 and entry["bytes"] > 0
        if entry["role"] == "artifact":
            node = by_name[entry["node"]["name"]]
            assert entry["node"]["artifact_sha256"] == node["artifact"]["sha256"]
            assert entry["node"]["verdict"] == "pass" and entry["verified"]
    coreml = next(f for f in manifest["files"] if f["path"].startswith("ios/"))
    tflite = next(f for f in manifest["files"] if f["path"] == "android/model_fp32.tflite")
    assert coreml["node"]["proxy"] is True             # the MIL evaluator, not Core ML
    assert "MIL reference evaluator" in coreml["node"]["checked_on"]
    assert tflite["node"]["proxy"] is False and tflite["node"]["checked_on"] == "litert-xnnpack"
    assert manifest["verified"] and manifest["signed"] and not manifest["unverified_nodes"]
    assert manifest["reference_sha256"] == report["run"]["reference"]["sha256"]
    assert manifest["toolchain"]["onnxruntime"] and manifest["machine"]["cpu_model"]
    assert not (local_release.parent / ".staging").exists()


def test_publishing_again_is_idempotent_and_other_content_is_refused(released_run, keys,
                                                                      local_release, run_copy):
    before = {p: p.stat().st_mtime_ns for p in local_release.rglob("*")}
    again = _publish(released_run, f"file://{local_release.parent.parent}", keys)
    assert again.already and {p: p.stat().st_mtime_ns for p in local_release.rglob("*")} == before
    (run_copy["run_dir"] / "report.md").write_text("# another report\n")
    with pytest.raises(UserInputError, match="already published with other content"):
        _publish(run_copy, f"file://{local_release.parent.parent}", keys)


@pytest.mark.parametrize("tamper, expected", [
    ("byte", "android/model_fp32.tflite: tampered"),
    ("remove", "onnx/model.onnx: missing"),
    ("add", "android/extra.tflite: extra"),
    ("manifest", "manifest.json: edited"),
    ("resign", "model.sig: signed with another key"),
    ("no-signature", "model.sig: no signature"),
])
def test_each_tamper_is_caught_with_its_file(local_release, keys, tamper, expected):
    if tamper == "byte":
        path = local_release / "android" / "model_fp32.tflite"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    elif tamper == "remove":
        (local_release / "onnx" / "model.onnx").unlink()
    elif tamper == "add":
        (local_release / "android" / "extra.tflite").write_bytes(b"TFL3")
    elif tamper == "manifest":           # an attacker lists a changed model under its new digest
        manifest = json.loads((local_release / MANIFEST).read_text())
        manifest["files"][0]["bytes"] += 1
        (local_release / MANIFEST).write_text(json.dumps(manifest))
    elif tamper == "resign":            # a valid signature, by someone else's key
        from pipeline.release.signing import sign

        (local_release / SIGNATURE).unlink()
        sign(local_release, keys["other_private"])
    elif tamper == "no-signature":
        (local_release / SIGNATURE).unlink()
    problems = _problems(local_release, keys["public"])
    assert any(p.startswith(expected) for p in problems), problems


def test_a_tampered_file_with_a_matching_manifest_fails_the_signature(local_release, keys):
    """Change a model and rewrite the manifest and the marker to match: only the signature can
    tell, and it names both files."""
    import hashlib

    from pipeline.release.manifest import complete_marker, parse_manifest, release_digest

    path = local_release / "onnx" / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    manifest = parse_manifest((local_release / MANIFEST).read_bytes(), "test")
    entry = next(f for f in manifest.files if f.path == "onnx/model.onnx")
    entry.bytes, entry.sha256 = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.release_sha256 = release_digest(manifest.files)
    data = manifest.to_bytes()
    (local_release / MANIFEST).write_bytes(data)
    (local_release / COMPLETE).write_bytes(complete_marker(data, manifest))
    problems = _problems(local_release, keys["public"])
    assert "onnx/model.onnx: differs from what was signed" in problems
    assert "manifest.json: differs from what was signed" in problems
    assert verify_release(str(local_release)).ok     # without the key nothing else could tell


def test_verifying_with_another_key_fails(local_release, keys):
    problems = _problems(local_release, keys["other_public"])
    assert problems == [f"{SIGNATURE}: signed with another key than release-key.pub (wrong key, "
                        "or the signature was replaced)"]


def test_an_unfinished_upload_is_absent_and_republishing_completes_it(released_run, keys,
                                                                      local_release):
    (local_release / COMPLETE).unlink()              # killed before the marker was written
    (local_release / "report.md").unlink()           # ... and before every file arrived
    problems = _problems(local_release, keys["public"])
    assert len(problems) == 1 and problems[0].startswith("COMPLETE: missing")
    done = _publish(released_run, f"file://{local_release.parent.parent}", keys)
    assert not done.already
    assert verify_release(str(local_release), keys["public"]).ok


def test_a_run_with_a_failed_gate_is_refused_unless_allowed(run_copy, keys, tmp_path):
    path = run_copy["run_dir"] / "report.json"
    report = json.loads(path.read_text())
    node = next(n for n in report["nodes"] if n["name"] == "tflite:fp32")
    node["parity"].update(verdict="fail", reason="max_rel 0.5 > 1e-4")
    path.write_text(json.dumps(report))
    with pytest.raises(ReleaseRefused, match=r"1 node\(s\) did not pass.*tflite:fp32 \(fail"):
        _publish(run_copy, str(tmp_path / "out"), keys)
    done = _publish(run_copy, str(tmp_path / "out"), keys, allow_unverified=True)
    manifest = done.manifest
    assert not manifest.verified and manifest.unverified_nodes == ["tflite:fp32"]
    by_path = {f.path: f for f in manifest.files}
    assert not by_path["android/model_fp32.tflite"].verified
    assert not by_path["report.json"].verified and by_path["onnx/model.onnx"].verified
    release = tmp_path / "out" / manifest.name / "1.0"
    assert verify_release(str(release), keys["public"]).ok
    strict = verify_release(str(release), keys["public"], require_verified=True)
    assert strict.problems == ["manifest.json: published with --allow-unverified: nodes "
                               "tflite:fp32 did not pass their gates"]


def test_a_published_file_changed_after_the_run_is_refused(run_copy, keys, tmp_path):
    path = run_copy["artifacts"] / "onnx" / run_copy["label"] / "model.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(UserInputError, match="is not the file node export_onnx checked"):
        _publish(run_copy, str(tmp_path / "out"), keys)
    assert not (tmp_path / "out").exists()


def test_s3_round_trip_through_moto(released_run, keys, bucket, s3_server):
    import s3fs

    done = _publish(released_run, f"{bucket}/models", keys, endpoint_url=s3_server)
    url = f"{bucket}/models/{done.manifest.name}/1.0"
    found = verify_release(url, keys["public"], endpoint_url=s3_server)
    assert found.ok and found.files == len(done.manifest.files), found.problems
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    keys_there = fs.find(bucket)
    assert not [k for k in keys_there if "/.staging/" in k]
    assert any(k.endswith("/1.0/COMPLETE") for k in keys_there)
    again = _publish(released_run, f"{bucket}/models", keys, endpoint_url=s3_server)
    assert again.already
    tflite = f"{url[5:]}/android/model_fp32.tflite"
    fs.pipe_file(tflite, fs.cat_file(tflite) + b"\0")
    fs.rm_file(f"{url[5:]}/{COMPLETE}")
    problems = verify_release(url, keys["public"], endpoint_url=s3_server).problems
    assert problems[0].startswith("COMPLETE: missing")


def test_s3_tamper_is_caught(released_run, keys, bucket, s3_server):
    import s3fs

    done = _publish(released_run, bucket, keys, endpoint_url=s3_server)
    url = f"{bucket}/{done.manifest.name}/1.0"
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    fs.pipe_file(f"{url[5:]}/android/model_fp32.tflite", b"TFL3 not the model")
    problems = verify_release(url, keys["public"], endpoint_url=s3_server).problems
    assert problems == ["android/model_fp32.tflite: tampered (its sha256 differs from the "
                        "manifest's)"]


def test_unsigned_release_says_so(released_run, tmp_path, keys):
    done = publish_release(released_run["run_dir"], str(tmp_path), version="u1")
    release = tmp_path / done.manifest.name / "u1"
    unchecked = verify_release(str(release))
    assert unchecked.ok and unchecked.notes == ["the release is unsigned"]
    assert _problems(release, keys["public"]) == [
        f"{SIGNATURE}: no signature: the release is unsigned (publish it with --key)"]


def test_a_link_in_a_local_release_is_reported_not_followed(local_release, keys, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of any release")
    (local_release / "android" / "leak.tflite").symlink_to(secret)
    problems = _problems(local_release, keys["public"])
    assert "android/leak.tflite: extra: a link (not followed)" in problems


def test_a_release_is_copied_whole(local_release, keys, tmp_path):
    """A release verifies wherever it is copied to (an app's build fetches it as files)."""
    copy = tmp_path / "fetched" / "1.0"
    shutil.copytree(local_release, copy)
    assert verify_release(str(copy), keys["public"]).ok


def test_an_artifact_replaced_by_a_link_is_refused(run_copy, keys, tmp_path):
    path = run_copy["artifacts"] / "android" / run_copy["label"] / "model_fp32.tflite"
    real = tmp_path / "elsewhere.tflite"
    real.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(real)
    with pytest.raises(UserInputError, match="outside|is a link"):
        _publish(run_copy, str(tmp_path / "out"), keys)


def test_a_report_page_missing_is_named_with_the_fix(run_copy, keys, tmp_path):
    (run_copy["run_dir"] / "report.html").unlink()
    with pytest.raises(UserInputError, match="report.html is missing; run `mobile-export report"):
        _publish(run_copy, str(tmp_path / "out"), keys)
