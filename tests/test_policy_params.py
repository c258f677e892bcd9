import pytest

import policies
from policies import PolicyError


def test_make_known_policies():
    assert policies.make("full").name == "full"
    assert policies.make("random", ratio=0.3).ratio == 0.3
    assert policies.make("tokendrop", omega="0.2").omega == 0.2


@pytest.mark.parametrize("name,params,fragment", [
    ("nope", {}, "accepted: full, random, sparse_context, spotedit, tokendrop, topi"),
    ("random", {"ratio": 1.0}, "ratio"),
    ("random", {"ratio": -0.1}, "ratio"),
    ("random", {"ratio": "half"}, "must be a number"),
    ("tokendrop", {"omega": "abc"}, "omega"),
    ("tokendrop", {"kernel": 4}, "odd"),
    ("tokendrop", {"reg": "maybe"}, "boolean"),
    ("tokendrop", {"bogus": 1}, "accepted: omega"),
    ("random", {"budget": "3"}, "budget"),
])
def test_bad_parameters_are_named(name, params, fragment):
    with pytest.raises(PolicyError, match=fragment):
        policies.make(name, **params)
