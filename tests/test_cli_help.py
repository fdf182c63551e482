"""What a new user meets first: every command's --help ends with one runnable example (on one line, however
narrow the terminal), `rewardkit --version`, and the top-level imports, which stay cheap (no torch)."""

import importlib
import os
import shlex
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import rewardkit
from rewardkit.cli import app, split_example

runner = CliRunner()
COMMANDS = ["score", "eval", "probe", "compare", "calibrate-length", "rerank", "sample", "overopt", "overopt prepare", "overopt rl", "serve", "data inspect",
            "data convert", "ensemble create", "ensemble average", "train", "export", "demo", "doctor"]
GROUPS = ("data", "ensemble")  # groups that are not commands themselves (overopt is both)


def help_of(command: str, columns: int = 80) -> str:
    result = runner.invoke(app, [*command.split(), "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def example_of(command: str, columns: int = 80) -> str:
    lines = [line.strip() for line in help_of(command, columns).splitlines()]
    examples = [line for line in lines if line.startswith(f"rewardkit {command} ")]
    assert len(examples) == 1, help_of(command, columns)
    assert lines[lines.index(examples[0]) - 1] == "Example:"
    return examples[0]


def test_every_command_is_covered():
    group = typer.main.get_command(app)
    names = [n for n in group.list_commands(None) if n not in GROUPS]
    subgroups = [n for n in names if isinstance(group.get_command(None, n), typer.core.TyperGroup)]
    grouped = [f"{g} {n}" for g in (*GROUPS, *subgroups) for n in group.get_command(None, g).list_commands(None)]
    assert sorted(names + grouped) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_ends_with_one_example_that_parses(command):
    example = example_of(command)
    assert example_of(command, columns=40) == example  # not wrapped at the terminal's width
    args = shlex.split(example)[1:]
    # The example's options are the command's own, with every required one given: it parses as written.
    group = typer.main.get_command(app)
    ctx = group.make_context("rewardkit", list(args), resilient_parsing=False)
    path = command.split()
    cmd, sub_args = group, list(args)
    while path:
        name = path.pop(0)
        assert sub_args.pop(0) == name
        cmd = cmd.get_command(ctx, name)
    cmd.make_context(command, sub_args)  # raises on an unknown option or a missing required one
    # Runnable after `rewardkit demo`: its data, its model, or the packaged offline backbone.
    for value in args:
        if "/" in value and "=" not in value:
            assert value.startswith("runs/"), example
    if "-m" in args:
        model = args[args.index("-m") + 1].split("=")[-1]
        assert model in ("minilm", "runs/demo/train/best"), example


def test_top_level_and_group_help_show_examples():
    assert example_of("data") == "rewardkit data inspect runs/demo/data/synthetic_test.jsonl"
    output = runner.invoke(app, ["--help"]).output
    assert any(line.strip() == "rewardkit demo --out runs/demo" for line in output.splitlines())
    assert "--version" in output


def test_split_example_joins_a_wrapped_example_into_one_line():
    help_text = "Do it.\n\nMore.\n\nExample: rewardkit do -x 1\n    --long runs/x\n\nAfter."
    assert split_example(help_text) == ("Do it.\n\nMore.\n\nAfter.", "rewardkit do -x 1 --long runs/x")
    assert split_example("No example.") == ("No example.", None)
    assert split_example(None) == (None, None)


def test_example_is_not_read_as_rich_markup():
    example = example_of("compare")
    assert example == ("rewardkit compare -m before=minilm -m after=runs/demo/train/best "
                       "-d runs/demo/data/synthetic_test.jsonl -o runs/demo/compare")


# ----------------------------------------------------------------------------------------------- version


def test_version_option():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"rewardkit {rewardkit.__version__}\n"
    from importlib.metadata import version

    assert rewardkit.__version__ == version("rewardkit") == "0.1.0"


def test_version_from_the_console_script_without_torch():
    exe = os.path.join(os.path.dirname(sys.executable), "rewardkit")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "rewardkit 0.1.0\n", proc.stderr
    code = ("import sys\nfrom rewardkit.cli import main\nsys.argv = ['rewardkit', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["rewardkit 0.1.0", "False False"], proc.stderr


# ------------------------------------------------------------------------------------ top-level names


def test_import_rewardkit_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import rewardkit, sys; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize("name, module", [
    ("RewardModel", "rewardkit.models.reward_model"),
    ("RewardModelScorer", "rewardkit.models.rm_scorer"),
    ("load_scorer", "rewardkit.models.spec"),
    ("load_records", "rewardkit.data.loader"),
    ("load_split", "rewardkit.data.loader"),
    ("PreferenceRecord", "rewardkit.data.record"),
    ("evaluate", "rewardkit.eval.evaluate"),
    ("write_report", "rewardkit.eval.report"),
    ("run_benchmark", "rewardkit.eval.benchmarks"),
    ("Scorer", "rewardkit.models.scorer"),
    ("DataError", "rewardkit.errors"),
])
def test_top_level_names_are_the_submodules_objects(name, module):
    assert getattr(rewardkit, name) is getattr(importlib.import_module(module), name)
    assert name in rewardkit.__all__ and name in dir(rewardkit)


def test_the_names_users_reach_for_first():
    from rewardkit import RewardModel, evaluate, load_records, load_scorer  # noqa: F401
    from rewardkit.models import RewardModel as from_models

    assert RewardModel is from_models
    assert set(rewardkit.__all__) <= set(dir(rewardkit)) and "__version__" in dir(rewardkit)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        rewardkit.nope  # noqa: B018
