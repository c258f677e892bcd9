"""core.assignments: the one `key=value` parser's rules, each asserted directly."""
import pytest

from core.assignments import (AssignmentError, apply_assignments, assign, parse_assignment, parse_assignments,
                              parse_inline, parse_value, split_items)


@pytest.mark.parametrize("text, value", [
    ("8", 8), ("-3", -3), ("0.5", 0.5), ("1e-3", 0.001), ("2E4", 20000.0), ("1.5e-2", 0.015),
    ("true", True), ("false", False), ("null", None), ("", None), ("  ", None),
    ("[3, 7]", [3, 7]), ("[1.0;1.1;0.9]", [1.0, 1.1, 0.9]), ("[a;b]", ["a", "b"]), ("[]", []),
    ("{a: 1}", {"a": 1}), ("flux", "flux"), ("s3://bucket/x", "s3://bucket/x"), ("last", "last"),
])
def test_values_are_typed(text, value):
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_assignment_keys_and_errors():
    assert parse_assignment(" omega = 0.4") == ("omega", 0.4)
    assert parse_assignment("models.0.path=/x") == ("models.0.path", "/x")
    assert parse_assignment("url=http://h:8000/v1?a=b") == ("url", "http://h:8000/v1?a=b")   # first = splits
    assert parse_assignment("init_from=") == ("init_from", None)
    for bad in ("omega", "=1", " =1"):
        with pytest.raises(AssignmentError, match=f"--set {bad!r}: expected key=value"):
            parse_assignment(bad)
    with pytest.raises(AssignmentError, match=r"--set layers: value '\[3, 7' is not valid YAML"):
        parse_assignment("layers=[3, 7")


def test_repeated_key_last_wins():
    assert parse_assignments(["a=1", "b=[1, 2]", "a=2"]) == {"a": 2, "b": [1, 2]}


def test_inline_form_splits_outside_brackets():
    assert split_items("a=1, b=[1,2],c={x: 1},") == ["a=1", "b=[1,2]", "c={x: 1}"]
    assert parse_inline("threshold=0.1,warmup=2,ratios=[1;2]") == {"threshold": 0.1, "warmup": 2, "ratios": [1, 2]}
    assert parse_inline("budget=[1,2],keep=0.5") == {"budget": [1, 2], "keep": 0.5}
    assert parse_inline("") == {}


def test_dotted_keys_build_and_index_the_tree():
    tree = {"models": [{"path": "a"}], "steps": 8, "judge": None}
    out = apply_assignments(tree, ["models.0.path=b", "new.deep.key=true", "judge.model=m", "steps=9"])
    assert out == {"models": [{"path": "b"}], "steps": 9, "judge": {"model": "m"}, "new": {"deep": {"key": True}}}
    assert tree["models"][0]["path"] == "a" and tree["judge"] is None   # the input is not changed


@pytest.mark.parametrize("key, message", [
    ("models.3.path", "--set models.3: no list item '3' (length 1)"),
    ("models.x", "--set models.x: no list item 'x'"),
    ("steps.x", "--set steps.x: steps is a scalar"),
    ("a..b", "bad dotted key"),
])
def test_dotted_key_errors_name_the_key(key, message):
    with pytest.raises(AssignmentError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        assign({"models": [{}], "steps": 8}, key, 1)


def test_is_a_value_error():
    assert issubclass(AssignmentError, ValueError)   # commands report ValueError as bad input, not a traceback
