from __future__ import annotations

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


@pytest.mark.parametrize("name", TASKS.names())
def test_every_task_spec_is_complete_and_loads_generated_data(name, msrvtt_small):
    spec = TASKS.get(name).spec
    assert spec.name == name and spec.version and spec.reference
    assert spec.train_split in spec.splits and spec.test_split in spec.splits
    assert set(spec.directions) <= set(DIRECTIONS)
    assert spec.main_score.split("/")[0] in spec.directions
    root, _ = msrvtt_small
    clips = TASKS.get(name)().load(root, spec.test_split, limit=4)
    assert len(clips) == 4
    assert all(len(c.captions) == spec.captions_per_item for c in clips)
