"""The ``wingmark`` command: every subcommand resolves and answers --help; the serving-side tools stay
torch-free; ``wingmark data`` dispatches its subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def test_usage_lists_every_command_and_rejects_unknown_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)
    assert main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main([name, "--help"])
    except SystemExit as exc:  # argparse exits after printing the help
        code = int(exc.code or 0)
    assert code == 0
    assert f"wingmark {name}" in capsys.readouterr().out


def test_cli_registers_data_and_its_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "--help"]) == 0
    assert "data real" in capsys.readouterr().out
    assert main(["data", "nonsense"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["data", "real", "--help"])
    assert exc.value.code == 0
    assert "--max-video-frames" in capsys.readouterr().out


def test_the_serving_side_tools_never_import_torch_or_train() -> None:
    """``wingmark serve / predict / bench`` and the client run where only the serving dependencies are."""
    code = """
import sys
import tools.cli, tools.predict, tools.bench, tools.client, tools.naive, tools.net
from tools.cli import _load
for name in ("serve", "predict", "bench"):
    _load(tools.cli.COMMANDS[name][0])
bad = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnx", "tensorrt", "train"})
print("IMPORTED", bad)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED []" in proc.stdout, proc.stdout
