"""Releases: one run's verified artifacts, signed, at ``URL/NAME/VERSION/`` on any storage.

Layout of a release::

    NAME/VERSION/
        manifest.json        every file: path, bytes, sha256, role, the node that checked it
        report.json, report.md, report.html
        <platform>/<file>    onnx/model.onnx, android/model_int8.tflite, ios/Model_fp16.mlpackage/…
        <platform>/model.json  the target's sidecar, where it has one
        model.sig            model_signing's sigstore bundle over every file above
        COMPLETE             written last; without it the release does not exist

Modules: :mod:`storage` (fsspec), :mod:`collect` (the files of a run, digest-checked),
:mod:`manifest`, :mod:`signing` (model_signing, EC P-256), :mod:`upload` (publish) and
:mod:`verify` (verify-release).
"""
