"""Fixtures of the release tests: one real tiny run with ONNX, TFLite and Core ML artifacts, a
key pair, and a real S3 endpoint (moto's server on 127.0.0.1, spoken to by s3fs)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TINY = {"model": "mobilenet_v2", "width": 0.35, "resolution": 64, "num_classes": 10,
        "bench": {"warmup": 10, "runs": 50, "batch": 1}, "parity": {"n_random": 2}}


@pytest.fixture(scope="session")
def released_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A finished run of the tiny model to ONNX, TFLite and Core ML at fp32 (every gate passed),
    published to its artifacts folder the way ``make all`` does."""
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("released")
    config = PipelineConfig.model_validate({
        **TINY, "artifacts_dir": root / "artifacts", "targets": ["onnx", "tflite", "coreml"],
        "precisions": ["fp32"]})
    outcome = execute(config)
    assert outcome.exit_code == 0, [(n["name"], n["parity"]) for n in outcome.report["nodes"]]
    return {"run_dir": outcome.out_dir, "artifacts": root / "artifacts",
            "label": outcome.report["model"]["label"]}


@pytest.fixture()
def run_copy(released_run: dict, tmp_path: Path) -> dict:
    """A copy of the run's artifacts folder (reports and published files) a test may change."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(released_run["artifacts"], artifacts, symlinks=True,
                    ignore=shutil.ignore_patterns("cache"))
    return {"run_dir": artifacts / "reports" / released_run["label"], "artifacts": artifacts,
            "label": released_run["label"]}


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two key pairs: the signer's, and someone else's."""
    from pipeline.release.signing import keygen

    root = tmp_path_factory.mktemp("keys")
    private, public = keygen(root / "ours")
    other_private, other_public = keygen(root / "other")
    return {"private": private, "public": public, "other_private": other_private,
            "other_public": other_public}


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), with throwaway credentials in the
    environment for the session; yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing-key-id", AWS_SECRET_ACCESS_KEY="testing-secret",
                      AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A new, empty bucket on the moto server; the ``s3://`` URL of it."""
    import s3fs

    name = "rel-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    fs = s3fs.S3FileSystem(endpoint_url=s3_server)
    fs.mkdir(name)
    return f"s3://{name}"
