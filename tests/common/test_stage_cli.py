"""The stage command line: ``--config`` + ``--set`` build the config; every mistake is one line and exit 2."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from adapters.user_errors import UserInputError
from tasks.common.stage_cli import config_from_args, run_stage_cli, stage_parser


class Trainer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float = Field(1e-4, description="Peak learning rate")
    max_steps: int = Field(10, ge=1, description="Optimizer steps")


class DemoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field("template", description="Teacher name")
    examples: int = Field(8, ge=0, description="Examples to generate")
    trainer: Trainer = Field(default_factory=Trainer, description="Trainer settings")
    passthrough: dict = Field(default_factory=dict, description="Handed on as is (as sft.trainer is to TRL)")


def parse(argv: list[str], **fixed) -> DemoConfig:
    parser = stage_parser("python -m tasks.demo.stage", None, DemoConfig)
    return config_from_args(DemoConfig, parser.parse_args(argv), parser, raw_keys=("teacher",), **fixed)


def one_line_exit_2(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: invalid config") and "Traceback" not in err, err
    return err


def test_set_overrides_a_yaml_file_key_by_key(tmp_path):
    yaml_file = tmp_path / "stage.yaml"
    yaml_file.write_text("examples: 4\ntrainer:\n  max_steps: 50\n  learning_rate: 3.0e-4\n")
    cfg = parse(["--config", str(yaml_file), "--set", "trainer.learning_rate=1e-3", "--set", "teacher=0123"])
    assert cfg.trainer == Trainer(learning_rate=1e-3, max_steps=50), "one --set leaves the file's other keys as they were"
    assert cfg.examples == 4
    assert cfg.teacher == "0123", "a raw key keeps its text as typed"
    assert parse(["--set", "passthrough.learning_rate=1e-3"]).passthrough == {"learning_rate": 0.001}, \
        "YAML reads 1e-3 as text; a block handed on unvalidated must still get the number"
    assert parse(["--set", "examples=4"], examples=None, teacher="anthropic").teacher == "anthropic"


def test_an_unknown_key_names_the_valid_keys_at_its_level(capsys):
    err = one_line_exit_2(["--set", "trainer.max_step=20"], capsys)
    assert "unknown key 'trainer.max_step' (valid keys here: learning_rate, max_steps)" in err


def test_a_bad_value_names_the_key_what_was_given_and_how_to_fix_it(capsys):
    err = one_line_exit_2(["--set", "examples=-1", "--set", "trainer.max_steps=many"], capsys)
    assert "'examples': Input should be greater than or equal to 0 (got -1)" in err
    assert "'trainer.max_steps'" in err and "(got 'many')" in err, "every problem is reported at once"
    assert "--set examples=VALUE" in err


@pytest.mark.parametrize("argv, says", [
    (["--config", "/nonexistent/stage.yaml"], "No such file or directory"),
    (["--set", "examples"], "--set 'examples': expected KEY=VALUE"),
])
def test_a_missing_config_file_or_a_set_without_a_value_is_one_line(argv, says, capsys):
    assert says in one_line_exit_2(argv, capsys)


def test_a_user_error_from_the_stage_is_one_line_and_exit_2_other_errors_keep_their_traceback(capsys):
    def refuses():
        raise UserInputError("lab http://127.0.0.1:9 is unreachable\nstart it with: make lab")

    with pytest.raises(SystemExit) as exit_:
        run_stage_cli(refuses)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: lab http://127.0.0.1:9 is unreachable; start it with: make lab\n"

    with pytest.raises(SystemExit) as exit_:
        run_stage_cli(lambda: None)
    assert exit_.value.code == 0

    def crashes():
        raise RuntimeError("a bug, not the user's doing")

    with pytest.raises(RuntimeError):
        run_stage_cli(crashes)
