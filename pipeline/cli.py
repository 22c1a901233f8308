"""The ``mobile-export`` command: run, zoo, report, verify, publish, verify-release, keygen,
sweep."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from pipeline.cli_guard import console, guard as _guard
from pipeline.errors import EXIT_OK, EXIT_PARITY_FAILED

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="PyTorch vision models to verified, benchmarked deployment artifacts.")
out = Console(width=None if sys.stdout.isatty() else 160)


def _csv(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


class _TerminalTask:
    """A step inside a running stage (training): a bar in the stage's spinner line when the
    console is a terminal, and one kept line per finished step (pipeline.progress)."""

    def __init__(self, owner: _Progress, title: str, total: int) -> None:
        self.owner, self.title, self.total = owner, title, max(1, total)

    def update(self, completed: int, text: str) -> None:
        status = self.owner._status
        if status is None or not console.is_terminal:
            return
        grid = Table.grid(padding=(0, 1))
        grid.add_row(f"[cyan]{escape(self.title)}[/]",
                     ProgressBar(total=self.total, completed=completed, width=30),
                     f"{100 * completed / self.total:3.0f} %", escape(text))
        status.update(grid)

    def line(self, text: str) -> None:
        console.print(f"          {escape(self.title)}: {escape(text)}", highlight=False)

    def close(self) -> None:
        return None


class _Progress:
    """One line per stage with its elapsed time; a spinner while a stage runs, with a bar for
    the steps a stage reports (pipeline.progress.ProgressSink)."""

    def __init__(self) -> None:
        self._status = None
        self._start = time.perf_counter()

    def task(self, title: str, total: int) -> _TerminalTask:
        return _TerminalTask(self, title, total)

    def __call__(self, name: str, status: str, seconds: float) -> None:
        if status in ("running", "preparing"):   # preparing: conversions side by side
            self._status = console.status(f"[cyan]{name}[/] {status} …")
            self._status.start()
            return
        if self._status is not None:
            self._status.stop()
            self._status = None
        colour = {"ran": "green", "cached": "blue", "failed": "red", "prepared": "cyan"}.get(status, "yellow")
        total = time.perf_counter() - self._start
        console.print(f"  [{colour}]{status:>7}[/] {name:<24} {seconds:7.2f} s   "
                      f"(elapsed {total:6.1f} s)", highlight=False)


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML file; CLI options win."),
    model: Optional[str] = typer.Option(None, help="Zoo name, package.module:factory or "
                                        "path/to/file.py:factory."),
    weights: Optional[Path] = typer.Option(None, help=".safetensors or .pt/.pth state_dict."),
    width: Optional[float] = typer.Option(None, help="Width multiplier α (zoo models)."),
    resolution: Optional[int] = typer.Option(None, help="Input resolution (square)."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes"),
    targets: Optional[str] = typer.Option(None, help="Comma list of targets, e.g. onnx."),
    precisions: Optional[str] = typer.Option(None, help="Comma list: fp32,fp16,int8."),
    calib: Optional[Path] = typer.Option(None, help="Image folder added to the parity inputs."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Report folder "
                                           "(default: <artifacts-dir>/reports/<model>)."),
    artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir", help="Root of the "
                                                 "cache and the published artifacts."),
    force: Optional[str] = typer.Option(None, help="Rerun these stages (comma list) and "
                                        "everything downstream."),
    threads: Optional[int] = typer.Option(None, help="Threads for every runtime."),
    mean: Optional[str] = typer.Option(None, help="Input normalisation mean R,G,B (0-1)."),
    std: Optional[str] = typer.Option(None, help="Input normalisation std R,G,B."),
    latency_budget_ms: Optional[float] = typer.Option(None, "--latency-budget-ms", help="Fail "
                                                      "(exit 1) every node slower than this."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="Labelled image folder "
                                            "root/<class>/<image> for accuracy at every node."),
    dataset: Optional[str] = typer.Option(None, help="Built-in labelled dataset: digits "
                                          "(evaluation, calibration and fine-tuning)."),
    finetune_epochs: Optional[int] = typer.Option(None, "--finetune-epochs",
                                                  help="Train this many epochs first."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Fine-tuning learning rate "
                                       "(default: the model family's recipe)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size",
                                             help="Fine-tuning batch size."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay",
                                                 help="Fine-tuning AdamW weight decay."),
    warmup_epochs: Optional[float] = typer.Option(None, "--warmup-epochs",
                                                  help="Fine-tuning linear warm-up, epochs."),
    quant_method: Optional[str] = typer.Option(None, "--quant-method",
                                               help="int8 calibration: minmax|entropy|percentile"),
    calib_images: Optional[int] = typer.Option(None, "--calib-images",
                                               help="Number of calibration images for int8."),
    int8_fallback: Optional[bool] = typer.Option(None, "--int8-fallback/--no-int8-fallback",
                                                 help="When int8 fails its gates, keep the most "
                                                 "sensitive layers in float until they pass."),
    int8_max_float_layers: Optional[int] = typer.Option(None, "--int8-max-float-layers",
                                                        help="Cap on the layers kept in float."),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="Gate on the "
                                                 "fine-tuned model's held-out accuracy (0-1)."),
    prune: Optional[float] = typer.Option(None, help="Pruning ratio in (0, 1)."),
    prune_mode: Optional[str] = typer.Option(None, "--prune-mode",
                                             help="structured (channels) | unstructured"),
    distill: Optional[bool] = typer.Option(None, "--distill/--no-distill", help="Recover the "
                                           "pruned model by distillation from the unpruned one."),
    tflite_layout: Optional[str] = typer.Option(None, "--tflite-layout",
                                                help="NHWC (Android default) or NCHW."),
    tflite_int8_io: Optional[bool] = typer.Option(None, "--tflite-int8-io/--tflite-float-io",
                                                  help="int8 .tflite takes/returns int8."),
    labels: Optional[str] = typer.Option(None, help="Class names: a text file with one name "
                                         "per line, or 'dataset' (the evaluation set's names); "
                                         "the TFLite sidecar and a Core ML classifier use them."),
    coreml_deployment_target: Optional[str] = typer.Option(
        None, "--coreml-deployment-target", help="Core ML minimum iOS: iOS15..iOS18 "
        "(default iOS17)."),
    coreml_input_type: Optional[str] = typer.Option(None, "--coreml-input-type",
                                                    help="Core ML input: tensor or image."),
    coreml_compute_units: Optional[str] = typer.Option(
        None, "--coreml-compute-units", help="Comma list the macOS check runs on "
        "(default CPU_ONLY,ALL)."),
    localise: Optional[str] = typer.Option(None, "--localise", help="Localise layer by "
                                           "layer: failed (default), all or off."),
    debug: bool = typer.Option(False, help="Show tracebacks."),
) -> None:
    """Convert a model, check parity and latency at every stage, write the report."""

    def body() -> int:
        from pipeline.api import config_overrides, run_config
        from pipeline.cli_output import print_nodes, print_problems
        from pipeline.config import load_config
        from pipeline.progress import use_sink

        cfg = load_config(config, config_overrides({
            "model": model, "weights": weights, "width": width, "resolution": resolution,
            "num_classes": num_classes, "targets": _csv(targets), "precisions": _csv(precisions),
            "calib": calib, "out_dir": out_dir, "artifacts_dir": artifacts_dir,
            "force": _csv(force), "threads": threads, "latency_budget_ms": latency_budget_ms,
            "mean": mean, "std": std,
            "eval_dir": eval_dir, "dataset": dataset,
            "finetune_epochs": finetune_epochs, "quant_method": quant_method,
            "calib_images": calib_images, "int8_fallback": int8_fallback,
            "int8_max_float_layers": int8_max_float_layers, "min_accuracy": min_accuracy,
            "prune": prune, "prune_mode": prune_mode, "distill": distill,
            "tflite_layout": tflite_layout, "tflite_int8_io": tflite_int8_io, "labels": labels,
            "coreml_deployment_target": coreml_deployment_target,
            "coreml_input_type": coreml_input_type,
            "coreml_compute_units": _csv(coreml_compute_units), "lr": lr,
            "batch_size": batch_size, "weight_decay": weight_decay,
            "warmup_epochs": warmup_epochs, "localise": localise}))
        progress = _Progress()
        with use_sink(progress):
            _, outcome = run_config(cfg, progress)   # the Python API's runner (pipeline.api)
        print_nodes(outcome.report, out)
        print_problems(outcome.report, console)
        console.print(f"report: {outcome.out_dir / 'report.json'}", highlight=False)
        if not outcome.pages_rendered:
            console.print("report.md and report.html unchanged (same artifacts and verdicts); "
                          "`mobile-export report DIR` renders them again", highlight=False)
        return outcome.exit_code

    _guard(debug, body)


@app.command()
def zoo(fmt: str = typer.Option("table", "--format", help="table or json"),
        nas: bool = typer.Option(False, "--nas", help="The mobilenet_nas search space (36 "
                                 "points at width 1.0, 224 px) instead of the papers' grid."),
        debug: bool = typer.Option(False)) -> None:
    """The papers' standard grid with parameter and multiply-add counts."""

    def body() -> int:
        from pipeline.errors import UserInputError
        from pipeline.zoo_table import nas_rows, nas_table, zoo_rows

        if fmt not in ("table", "json"):
            raise UserInputError(f"--format {fmt!r}: use table or json")
        if nas:
            found = nas_rows()
            out.print(json.dumps(found, indent=1) if fmt == "json" else nas_table(found))
            return EXIT_OK
        rows = zoo_rows()
        if fmt == "json":
            print(json.dumps([{k: r[k] for k in ("name", "width", "resolution", "params", "macs")}
                              for r in rows], indent=1))
            return EXIT_OK
        table = Table(title="mobile-export zoo (MACs = multiply-adds, batch 1)")
        for column in ("name", "α", "resolution", "params", "MACs", "fp32 size", "paper params",
                       "paper MACs"):
            table.add_column(column, justify="left" if column == "name" else "right")
        for r in rows:
            table.add_row(r["name"], f"{r['width']:g}", str(r["resolution"]), f"{r['params']:,}",
                          f"{r['macs'] / 1e6:,.1f} M", f"{r['fp32_bytes'] / 2**20:.1f} MiB",
                          f"{r['paper_params_m']} M", f"{r['paper_macs_m']} M")
        out.print(table)
        return EXIT_OK

    _guard(debug, body)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="The --out folder of a run."),
           debug: bool = typer.Option(False)) -> None:
    """Re-render report.md and the table from a run's report.json."""

    def body() -> int:
        from pipeline.cli_output import print_nodes
        from pipeline.errors import UserInputError
        from pipeline.report.writer import read_report, write_report

        data = read_report(run_dir)       # checked for report.json's shape
        try:
            write_report(data, run_dir)
            print_nodes(data, out)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UserInputError(f"{run_dir}/report.json cannot be rendered: a field holds "
                                 f"an unexpected value ({type(exc).__name__}: "
                                 f"{str(exc)[:120]}); rerun the pipeline") from None
        return int(data.get("exit_code", EXIT_OK))

    _guard(debug, body)


@app.command()
def verify(artifact: Path = typer.Argument(..., help="An artifact (.onnx, .pt2, .tflite, .mlpackage)."),
           run_dir: Path = typer.Option(..., "--run", help="The run whose reference to use."),
           threads: int = typer.Option(1), debug: bool = typer.Option(False)) -> None:
    """Re-check one artifact file against a run's fp32 reference."""

    def body() -> int:
        from pipeline.verify_artifact import verify_artifact

        result = verify_artifact(artifact, run_dir, threads)
        out.print(json.dumps(result, indent=1, default=str))
        return 0 if result["verdict"] == "pass" else 1

    _guard(debug, body)


@app.command()
def publish(run_dir: Path = typer.Argument(..., help="The report folder of a run."),
            to: str = typer.Option(..., "--to", help="Folder or URL: file://, s3://, gs://."),
            key: Optional[Path] = typer.Option(None, "--key", help="EC P-256 private key (PEM)."),
            name: Optional[str] = typer.Option(None, help="Release name (default: the model)."),
            version: Optional[str] = typer.Option(None, help="Default: the content's digest."),
            allow_unverified: bool = typer.Option(False, "--allow-unverified"),
            artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir"),
            endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url",
                                                       help="S3-compatible endpoint."),
            debug: bool = typer.Option(False)) -> None:
    """Publish a run's verified artifacts as a signed release at URL/NAME/VERSION/."""

    def body() -> int:
        from pipeline.release.upload import publish_release

        done = publish_release(run_dir, to, key=key, name=name, version=version,
                               allow_unverified=allow_unverified, artifacts_dir=artifacts_dir,
                               endpoint_url=endpoint_url)
        state = "already published, unchanged" if done.already else "published"
        signed = "signed" if done.manifest.signed else "UNSIGNED (no --key)"
        out.print(f"{state}: {done.url} ({done.files} files, {done.bytes:,} bytes, {signed}, "
                  f"{done.seconds:.1f} s)", highlight=False, soft_wrap=True)
        if not done.manifest.verified:
            console.print("[yellow]unverified nodes in this release:[/] "
                          + ", ".join(done.manifest.unverified_nodes), highlight=False)
        return EXIT_OK

    _guard(debug, body)


@app.command("verify-release")
def verify_release(url: str = typer.Argument(..., help="URL or folder of NAME/VERSION."),
                   public_key: Optional[Path] = typer.Option(None, "--public-key"),
                   require_verified: bool = typer.Option(False, "--require-verified"),
                   endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url"),
                   debug: bool = typer.Option(False)) -> None:
    """Check a release: COMPLETE marker, manifest, every digest, no extra file, signature."""

    def body() -> int:
        from pipeline.release.verify import verify_release as check

        found = check(url, public_key, endpoint_url=endpoint_url,
                      require_verified=require_verified)
        for note in found.notes:
            console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
        for problem in found.problems:
            out.print(f"problem: {escape(problem)}", highlight=False, soft_wrap=True)
        if found.problems:
            return EXIT_PARITY_FAILED
        key_note = f", signature by {public_key.name}" if public_key else ""
        out.print(f"release OK: {found.url} ({found.files} files{key_note}, "
                  f"{found.seconds:.1f} s)", highlight=False, soft_wrap=True)
        return EXIT_OK

    _guard(debug, body)


@app.command()
def keygen(folder: Path = typer.Argument(..., help="Where to write the key pair."),
           debug: bool = typer.Option(False)) -> None:
    """Write an EC P-256 key pair for signing releases (never over an existing key)."""

    def body() -> int:
        from pipeline.release.signing import keygen as write_keys

        private, public = write_keys(folder)
        out.print(f"private key: {private} (keep it secret)\npublic key:  {public}",
                  highlight=False)
        return EXIT_OK

    _guard(debug, body)


def _register_commands() -> None:
    from pipeline.localise.cli import localise
    from pipeline.sweep.cli import sweep

    app.command()(sweep)
    app.command()(localise)


_register_commands()


def main() -> None:
    """Console-script entry point: the command, then a fast exit (pipeline.fast_exit)."""
    from pipeline.fast_exit import exit_now

    try:
        app()
    except SystemExit as done:   # how typer ends every command
        exit_now(done.code)


if __name__ == "__main__":
    sys.exit(main())
