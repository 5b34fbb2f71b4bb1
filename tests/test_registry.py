from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.evaluate import DIRECTIONS
from benchmark.registry import Registry, load_tasks

TASKS = load_tasks()


def test_unknown_task_suggests_the_closest_name():
    with pytest.raises(UserError) as err:
        TASKS.get("msrvt_retrieval")
    assert "unknown task 'msrvt_retrieval'; did you mean 'msrvtt_retrieval'?" in str(err.value)


def test_duplicate_registration_is_an_error():
    registry = Registry("thing")
    registry.register("a")(object)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(object)


def test_the_six_tasks_and_two_corpora_are_registered():
    kinds = {name: TASKS.get(name).spec.kind for name in TASKS}
    assert kinds == {"msrvtt_retrieval": "retrieval", "msrvtt_caption": "caption", "vatex_retrieval": "retrieval",
                     "vatex_caption": "caption", "audiocaps_retrieval": "retrieval", "audiocaps_caption": "caption",
                     "audioset": "corpus", "howto100m": "corpus"}


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_spec_is_complete_and_loads_generated_data(name, msrvtt_small, generated):
    spec = TASKS.get(name).spec
    assert spec.name == name and spec.version and spec.reference and spec.data_dir
    assert spec.train_split in spec.splits
    assert set(spec.directions) <= set(DIRECTIONS) and set(spec.modalities) <= {"text", "video", "audio"}
    if spec.kind == "retrieval":
        assert spec.main_score.split("/")[0] in spec.directions
    elif spec.kind == "caption":
        assert spec.main_score in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr") and not spec.directions
    else:
        assert spec.test_split is None and spec.main_score is None
    root = msrvtt_small[0] if spec.data_dir == "msrvtt" else generated[0] / spec.data_dir
    split = spec.test_split or spec.train_split
    clips = TASKS.get(name)().load(root, split, limit=4)
    assert len(clips) == 4 and len({c.id for c in clips}) == 4
    if spec.kind != "corpus":
        assert all(len(c.captions) == spec.captions_per_item for c in clips)


def test_third_party_tasks_come_from_the_entry_point_group(monkeypatch):
    import benchmark.registry as registry

    class FakeEntryPoint:
        name, value = "acme", "acme_tasks:register"

        def __init__(self, fail):
            self.fail = fail

        def load(self):
            if self.fail:
                raise ImportError("No module named 'acme_tasks'")
            if "acme_retrieval" not in registry.TASKS:
                registry.register_task("acme_retrieval")(type("AcmeRetrieval", (), {}))

    monkeypatch.setattr(registry.TASKS, "_items", dict(registry.TASKS._items))  # registrations stay in this test
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint(fail=False)])
    assert "acme_retrieval" in registry.load_tasks()
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", lambda group: [FakeEntryPoint(fail=True)])
    with pytest.raises(UserError, match="task plugin 'acme' .* failed to import"):
        registry.load_tasks()


def test_a_task_kind_is_one_registered_class_that_the_pipeline_asks():
    """Adding a task kind is one class (issue 14 item 1): registered under its name, it is what a task of that
    kind gets; benchmark/ never tests a task's kind itself."""
    from types import SimpleNamespace

    from benchmark.task_kinds import TASK_KINDS, TaskKind, kind_of

    @TASK_KINDS.register("counting")
    class Counting(TaskKind):
        name = "counting"

        def token_length(self, max_words: int) -> int:
            return 7

    try:
        assert kind_of(SimpleNamespace(kind="counting")).token_length(32) == 7
        with pytest.raises(ValueError, match="registered twice"):
            TASK_KINDS.register("counting")(Counting)
    finally:
        TASK_KINDS._items.pop("counting")
    with pytest.raises(UserError, match="unknown task kind 'retrieve'; did you mean 'retrieval'"):
        kind_of(SimpleNamespace(kind="retrieve"))
    library = Path(__file__).parents[1] / "benchmark"
    branches = [f"{path.name}:{n}" for path in library.rglob("*.py")
                for n, line in enumerate(path.read_text().splitlines(), 1)
                if re.search(r"spec\.kind\s*[!=]=|kind\s*[!=]=\s*[\"'](retrieval|caption|corpus)[\"']", line)]
    assert branches == []
