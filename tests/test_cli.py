from __future__ import annotations

import re

import pytest
from bad_inputs import BAD_PERF_ARGS
from helpers import one_line_stderr

from benchmark.cli import build_parser, main


def test_help_lists_the_verbs(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for verb in build_parser()._subparsers._group_actions[0].choices:  # each verb with its help (a long one's below)
        assert re.search(rf"^ +{verb}\s+\S", text, re.MULTILINE), verb


def test_tasks_lists_registered_tasks(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "msrvtt_retrieval  v1.0  MSR-VTT retrieval" in out
    assert "main score: t2va/R1" in out


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=msrvt_retrieval"], "unknown task 'msrvt_retrieval'; did you mean 'msrvtt_retrieval'?"),
        (["finetune.max_step=3"], "unknown config key 'finetune.max_step'; did you mean 'finetune.max_steps'?"),
    ],
)
def test_smoke_rejects_bad_input_before_any_work(tmp_path, capsys, overrides, message):
    out = tmp_path / "out"
    assert main(["smoke", "--out", str(out), *overrides]) == 2
    line = one_line_stderr(capsys)
    assert line.startswith("clip4vla: error: ") and message in line
    assert not (out / "data").exists()  # failed before generating anything


@pytest.mark.parametrize(("args", "message"), BAD_PERF_ARGS)
def test_bad_benchmark_arguments_are_one_line_before_any_work(capsys, args, message):
    assert main(["perf", *args]) == 2
    assert message in one_line_stderr(capsys)


def test_smoke_refuses_a_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "precious.txt").write_text("keep me")
    assert main(["smoke", "--out", str(tmp_path)]) == 2
    assert "is not a previous smoke output" in one_line_stderr(capsys)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_run_with_a_missing_config_is_one_line(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in one_line_stderr(capsys)


def test_parser_has_no_hidden_verbs():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert sorted(choices) == ["evaluate", "finetune", "import-checkpoint", "perf", "prepare", "pretrain", "report",
                               "run", "smoke", "sweep", "synth", "tasks"]


def test_pretrain_without_a_corpus_or_with_an_unknown_one_is_a_one_line_error(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "p"), f"data.root={tmp_path}"]) == 2
    assert "no pre-training corpus: set pretrain_corpus=" in one_line_stderr(capsys)
    assert main(["pretrain", "--out", str(tmp_path / "p"), f"data.root={tmp_path}", "pretrain_corpus=[audiosett]"]) == 2
    assert "did you mean 'audioset'?" in one_line_stderr(capsys)


def test_sweep_dry_run_prints_the_plan_without_creating_a_store(tmp_path, capsys):
    from configs import path

    assert main(["sweep", str(path("paper.yaml")), "--out", str(tmp_path / "paper"), "--dry-run",
                 "data.root=/data"]) == 0
    printed = capsys.readouterr().out
    assert "suite paper" in printed and "23 runs" in printed and "estimated time to finish" in printed
    assert not (tmp_path / "paper").exists()


def test_sweep_bad_suite_and_bad_override_are_one_line_errors(tmp_path, capsys):
    from configs import path

    assert main(["sweep", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    assert "config file not found" in one_line_stderr(capsys)
    assert main(["sweep", str(path("smoke.yaml")), "--out", str(tmp_path), "--dry-run", "pretrain.lrr=1"]) == 2
    assert "unknown config key 'pretrain.lrr'" in one_line_stderr(capsys)


def test_only_the_cli_composes_the_library_with_its_reports():
    """One direction of imports (issue 14 item 3): reports/ reads records and the tracking store and imports
    nothing that imports it back; in benchmark/ only the CLI imports reports/, and hands the writers on."""
    import ast
    from pathlib import Path

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    repo = Path(__file__).parents[1]
    importers = sorted(p.name for p in (repo / "benchmark").rglob("*.py")
                       if any(n.split(".")[0] == "reports" for n in imported(p)))
    assert importers == ["cli.py"]
    from_reports = {n for p in (repo / "reports").rglob("*.py") for n in imported(p) if n.startswith("benchmark")}
    assert not from_reports & {"benchmark.cli", "benchmark.pipeline", "benchmark.sweep", "benchmark.smoke"}
