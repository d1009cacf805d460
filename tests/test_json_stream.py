"""iter_json_array gives exactly json.load's items, in bounded chunks, and json.load's error positions."""

from __future__ import annotations

import json
import random

import pytest

from evaluators.errors import UserError
from evaluators.json_stream import iter_json_array

ATOMS = [0, -12, 3.5e-7, 1234567890123, True, False, None, "", "a]b", 'q"uote', "back\\slash", "é∑😀", "[,{"]


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.random()
    if depth > 2 or kind < 0.5:
        return rng.choice(ATOMS)
    if kind < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("seed", range(20))
def test_items_equal_json_load_for_any_chunk_size(tmp_path, seed: int) -> None:
    rng = random.Random(seed)
    items = [random_value(rng) for _ in range(rng.randint(0, 60))]
    text = json.dumps(items, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1, 4]))
    path = tmp_path / "x.json"
    path.write_text("\n " + text + " \n", encoding="utf-8")
    for chunk in (1, 2, 3, 7, 64, 1 << 20):
        assert list(iter_json_array(path, chunk_chars=chunk)) == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "text",
    [
        "[1 2]",
        '[{"a": 1},\n {"b" 2}]',
        "[1,]",
        '[\n\n  {"a": tru}]',
        "[1, 2",
        "[1] x",
        '["abc',
        "[\n1,\n2,\n",
    ],
)
def test_errors_name_json_loads_position(tmp_path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    for chunk in (1, 3, 1 << 20):
        with pytest.raises(UserError) as got:
            list(iter_json_array(path, chunk_chars=chunk))
        assert f"line {expected.value.lineno}, column {expected.value.colno}" in str(got.value), (
            chunk,
            got.value,
        )


def test_not_a_list(tmp_path) -> None:
    path = tmp_path / "obj.json"
    path.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(UserError, match="expected a JSON list"):
        list(iter_json_array(path))
