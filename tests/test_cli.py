from __future__ import annotations

import re

import pytest
from bad_inputs import BAD_PERF_ARGS
from helpers import one_line_stderr

from benchmark.cli import build_parser, main
from tasks.msrvtt import MSRVTTCaption


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
    assert sorted(choices) == ["config", "evaluate", "finetune", "import-checkpoint", "perf", "prepare", "pretrain", "report",
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


def test_version_names_the_package_and_the_commit(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"clip4vla \S+( \(git [0-9a-f]{12}(, dirty)?\))?", out), out


def test_every_verb_has_a_description_and_an_example(capsys):
    for verb in build_parser()._subparsers._group_actions[0].choices:
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        usage, _, rest = text.partition("\n\n")
        assert rest.split("\n\n")[0].strip(), f"{verb}: no description"
        assert re.search(r"^example:\n  clip4vla " + re.escape(verb.split()[0]), text, re.MULTILINE), verb


def test_a_mistyped_verb_says_which_one_was_meant(capsys):
    assert main(["evalute", "msrvtt_retrieval"]) == 2
    line = one_line_stderr(capsys)
    assert "unknown verb 'evalute'; did you mean 'evaluate'?" in line


def test_tasks_name_json_gives_folder_splits_with_sizes_and_the_main_score(msrvtt_small, capsys):
    import json

    root, planted = msrvtt_small
    assert main(["tasks", "msrvtt_caption", "--root", str(root.parent), "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["main_score"] == "CIDEr" and info["data_folder"] == str(root.resolve())
    assert info["split_clips"]["test"] == len(MSRVTTCaption().load(root, "test"))
    assert main(["tasks", "audioset"]) == 0
    out = capsys.readouterr().out
    assert "main score: none (pre-training corpus)" in out and "clips unknown, no data root given" in out


def test_config_show_prints_the_resolved_config_with_each_keys_meaning(capsys):
    import yaml

    from benchmark.config import RunConfig, flatten, load_config, meanings, to_dict

    assert all(meanings(RunConfig).values()), [k for k, v in meanings(RunConfig).items() if not v]
    assert main(["config", "show", "protocol=released-code", "finetune.lr=1e-5"]) == 0
    out = capsys.readouterr().out
    resolved = load_config({}, ["protocol=released-code", "finetune.lr=1e-5"])
    assert yaml.safe_load(out) == to_dict(resolved)  # a valid --config file, every switch concrete
    assert "learnable_logit_scale: false" in out and "# similarity scale learnable" in out
    assert len([line for line in out.splitlines() if "  # " in line]) == len(meanings(RunConfig))
    assert set(flatten(to_dict(resolved))) <= set(meanings(RunConfig))


def test_a_shipped_suite_is_found_by_name(tmp_path, capsys):
    assert main(["sweep", "smoke", "--out", str(tmp_path / "out"), "--dry-run", f"data.root={tmp_path}"]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert main(["sweep", "smok", "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "did you mean 'smoke'?" in one_line_stderr(capsys)


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "msrvt_retrieval", "data.root={empty}"], "did you mean 'msrvtt_retrieval'?"),
    (["evaluate", "msrvtt_retrieval", "data.root={missing}"], "no such folder"),
    (["finetune", "vatex_retrieval", "data.root={empty}"], "its dataset folder"),
], ids=["bad-task", "missing-root", "no-dataset-folder"])
def test_a_bad_task_or_data_root_fails_before_any_tracking_store_is_opened(tmp_path, capsys, args, message):
    out, empty = tmp_path / "out", tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(missing=tmp_path / "missing", empty=empty) for a in args]
    assert main([*argv, "--out", str(out)]) == 2
    assert message in one_line_stderr(capsys)
    assert not (out / "mlruns.db").exists() and not list(out.glob("mlartifacts"))


def test_dry_run_says_when_the_store_cannot_be_read(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mlruns.db").write_bytes(b"not a database at all" * 100)
    assert main(["sweep", "smoke", "--out", str(out), "--dry-run", f"data.root={tmp_path}"]) == 2
    line = one_line_stderr(capsys)
    assert line.startswith("clip4vla: error: --dry-run: cannot read the tracking store") and "unknown" in line
