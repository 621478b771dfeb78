"""The ``wingmark`` console command.

Each subcommand lives in its own module and is imported only when it runs, so the
serving subcommands (``serve``, ``predict``, ``bench``) never import torch.
Every entry point has the signature ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "main"]

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("service.server:serve_main", "run the HTTP service (uvicorn)"),
    "predict": ("tools.predict:main", "landmarks for an image, via a running service or in-process"),
    "bench": ("tools.bench:main", "load-test a running service and write a JSON report"),
    "batch": ("runtime.batch.cli:main", "landmarks of many images and videos to Parquet/JSONL (or on Ray)"),
    "benchmark": (
        "tools.benchmark.cli:main",
        "bare models, service, peers and the CPU's peak: docs/benchmarks.md",
    ),
    "train": ("train.cli:train_main", "train a model from a YAML config (needs the 'train' extra)"),
    "eval": ("train.cli:eval_main", "evaluate a checkpoint or model version: NME, CED, AUC, failure rate"),
    "compare": ("tools.studies.compare:main", "rerun the paper's loss / PDB / cascade comparisons"),
    "export": ("train.export.cli:export_main", "export checkpoints to ONNX and publish a model version"),
    "build-engine": ("train.export.cli:build_engine_main", "build TensorRT engines for a model version"),
    "engines": (
        "runtime.backends.tensorrt:prebuild_main",
        "build the TensorRT engines the service loads (torch-free: runs in the GPU image)",
    ),
    "quantize": ("train.export.cli:quantize_main", "ONNX Runtime INT8 quantisation of a model version"),
    "gate": ("train.export.cli:gate_main", "a pose-gated version: a frontal model and a turned-face one"),
    "flip": ("train.export.cli:flip_main", "a version whose last stage averages each crop with its mirror"),
    "splice": ("train.export.cli:splice_main", "a cascade from stage 1 of one version, stage 2 of another"),
    "pose-eval": (
        "tools.studies.pose_eval:main",
        "head-pose error on synthetic faces of known pose (JSON + PNG)",
    ),
    "data": (
        "tools.data:main",
        "real-face cache (data real), re-posed faces (data repose), benchmarks (data bench, photos, levers)",
    ),
}


def _load(target: str) -> Callable[[list[str]], int]:
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    func: Callable[[list[str]], int] = getattr(module, func_name)
    return func


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: wingmark COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'wingmark COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"wingmark: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        func = _load(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name in {"torch", "onnx", "onnxslim", "scipy", "matplotlib", "tqdm"}:
            print(
                f"wingmark {name}: needs the optional package {exc.name!r}; "
                "install the training extra: pip install -e '.[train]'",
                file=sys.stderr,
            )
            return 2
        raise
    return int(func(rest) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
