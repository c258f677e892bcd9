"""pipeline.config: YAML validation, --set overrides, the ablation grid."""

from __future__ import annotations

import pytest
import yaml

from pipeline.config import (
    ConfigError,
    apply_overrides,
    config_id,
    expand_grid,
    expand_run,
    expand_policy,
    load_config,
    parse_config,
    PolicySpec,
)

BASE = {
    "input": "s3://bench/pie/mapping_file.json",
    "output": "s3://bench/runs/r1",
    "models": [
        {"name": "flux", "path": "s3://models/FLUX.1-Kontext-dev"},
        {"name": "qwen", "path": "/models/Qwen-Image-Edit"},
    ],
    "policies": [
        {"name": "full"},
        {"name": "tokendrop", "omega": [0.2, 0.4], "full_steps": 2},
        {"name": "random", "ratio": [0.3, 0.5, 0.7], "budget": [[10, 20]]},
    ],
    "resolutions": [1024, 2048],
    "seeds": [0, 1],
    "steps": 28,
    "guidance_scale": 2.5,
    "storage": {"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"},
    "actors": {"num_gpus": 1, "min_size": 1, "max_size": 4, "batch_size": 2},
    "metrics": {"compute": ["background", "vs_full", "lpips"], "lpips_weights": "/w/alexnet.pth"},
}


def cfg(**changes):
    raw = {**BASE, **changes}
    return parse_config({k: v for k, v in raw.items() if v is not None})


def test_parse_full_config():
    c = cfg()
    assert c.input.uri == BASE["input"] and c.input.format == "auto"
    assert [m.name for m in c.models] == ["flux", "qwen"]
    assert c.resolutions == ((1024, 1024), (2048, 2048))
    assert c.seeds == (0, 1) and c.steps == 28 and c.guidance_scale == 2.5
    assert c.storage.endpoint_url == "http://127.0.0.1:9000"
    assert c.actors.max_size == 4 and c.actors.batch_size == 2
    assert c.metrics.lpips_weights == "/w/alexnet.pth" and c.metrics.lpips_net == "squeeze"


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"input": None}, "input: is required"),
        ({"outputs": "x"}, "outputs: unknown key; accepted keys: run_id, input, output"),
        ({"resolutions": [1000]}, "resolutions.0: must be a multiple of 16"),
        ({"resolutions": ["big"]}, "resolutions.0: must be an integer"),
        ({"seeds": [0, 1.5]}, "seeds.1: must be an integer"),
        ({"steps": 0}, "steps: must be >= 1"),
        ({"models": [{"name": "a", "path": "  "}]}, "models.0.path: must be a non-empty string"),
        ({"models": [{"path": "/m"}]}, "models.0.name: must be a non-empty string"),
        ({"models": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]},
         "models.0.label: 'a' names more than one model entry"),
        ({"models": [{"name": "a", "label": "b"}, {"name": "b"}]}, "models.0.label: 'b' names more than one"),
        ({"models": [{"name": "a", "path": "x", "options": {"dtype": "x"}}]}, "models.0.options: unknown keys ['dtype']"),
        ({"policies": [{"name": "tokendrop", "omega": []}]}, "policies.0.omega: empty list"),
        ({"metrics": {"compute": ["fid"]}}, "metrics.compute.0: got 'fid'; accepted values: background, vs_full, lpips, clip, structure, judge"),
        ({"metrics": {"lpips_net": "resnet"}}, "metrics.lpips_net: got 'resnet'; accepted values: alex, squeeze, vgg"),
        ({"actors": {"min_size": 3, "max_size": 2}}, "actors.max_size: must be >= actors.min_size"),
        ({"actors": {"gpus": 1}}, "actors.gpus: unknown key"),
        ({"input": {"uri": "x", "format": "coco"}}, "input.format: got 'coco'; accepted values: auto, manifest"),
        ({"storage": {"endpoint": "x"}}, "storage.endpoint: unknown key"),
    ],
)
def test_bad_values_name_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        cfg(**changes)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "changes,key",
    [
        ({"storage": {"aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG"}}, "storage.aws_secret_access_key"),
        ({"storage": {"aws_access_key_id": "AKIAEXAMPLE"}}, "storage.aws_access_key_id"),
        ({"models": [{"name": "a", "path": "x", "options": {"token": "hf_secret"}}]}, "models.0.options.token"),
        ({"storage": {"endpoint_url": "http://AKIA:wJalr@host:9000"}}, "storage.endpoint_url"),
    ],
)
def test_credentials_are_rejected_and_not_echoed(changes, key):
    with pytest.raises(ConfigError) as err:
        cfg(**changes)
    msg = str(err.value)
    assert key in msg
    for secret in ("wJalrXUtnFEMI", "AKIAEXAMPLE", "hf_secret", "wJalr"):
        assert secret not in msg


def test_model_path_is_optional_for_builtin_models():
    c = cfg(models=[{"name": "tiny-flux-kontext"}])
    assert c.models[0].path is None
    assert expand_grid(c)[0].model_path is None


def test_known_policies_restrict_names():
    with pytest.raises(ConfigError, match=r"policies.1.name: unknown policy 'tokendrop'; accepted values: full, random"):
        parse_config(BASE, known_policies={"full", "random"})
    parse_config(BASE, known_policies={"full", "random", "tokendrop"})


def test_overrides_dotted_keys_yaml_values():
    raw = apply_overrides(
        BASE,
        [
            "steps=8",
            "seeds=[5, 6, 7]",
            "metrics.lpips_net=squeeze",
            "models.0.path=/local/flux",
            "policies.1.omega=1e-3",
            "actors.num_gpus=0.5",
            "new_section.deep.key=true",
        ],
    )
    assert raw["steps"] == 8 and raw["seeds"] == [5, 6, 7]
    assert raw["metrics"]["lpips_net"] == "squeeze"
    assert raw["models"][0]["path"] == "/local/flux" and BASE["models"][0]["path"].startswith("s3://")
    assert raw["policies"][1]["omega"] == pytest.approx(0.001)
    assert raw["actors"]["num_gpus"] == 0.5
    assert raw["new_section"] == {"deep": {"key": True}}
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(BASE, ["steps"])
    with pytest.raises(ConfigError, match="no list item '9'"):
        apply_overrides(BASE, ["models.9.path=x"])
    with pytest.raises(ConfigError, match="steps is a scalar"):
        apply_overrides(BASE, ["steps.x=1"])


def test_load_config_file_with_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(BASE))
    c = load_config(str(path), ["steps=4", "resolutions=[[512, 768]]"])
    assert c.steps == 4 and c.resolutions == ((512, 768),)
    with pytest.raises(ConfigError, match="outputz: unknown key"):
        load_config(str(path), ["outputz=x"])


def test_expand_policy_lists_are_axes_and_nested_lists_are_values():
    variants = expand_policy(PolicySpec("random", {"ratio": [0.3, 0.5], "budget": [[10, 20]], "seed": 1}))
    assert variants == [
        {"ratio": 0.3, "budget": [10, 20], "seed": 1},
        {"ratio": 0.5, "budget": [10, 20], "seed": 1},
    ]
    assert expand_policy(PolicySpec("full", {})) == [{}]


def test_grid_size_ids_and_full_reference():
    grid = expand_grid(cfg())
    # 2 models x (1 full + 2 tokendrop + 3 random) x 2 resolutions x 2 seeds
    assert len(grid) == 2 * 6 * 2 * 2
    ids = [g.config_id for g in grid]
    assert len(set(ids)) == len(ids) and all(len(i) == 12 for i in ids)
    for g in grid:
        full = next(x for x in grid if x.config_id == g.full_config_id)
        assert full.policy == "full"
        assert (full.model, full.height, full.seed) == (g.model, g.height, g.seed)
    first = grid[0]
    assert first.policy == "full" and first.model_path == "s3://models/FLUX.1-Kontext-dev"
    # stable: same inputs, same ids; parsing twice changes nothing
    assert [g.config_id for g in expand_grid(cfg())] == ids


def test_config_id_depends_on_each_field_and_is_stable():
    base = {"model": "flux", "policy": "tokendrop", "policy_params": {"omega": 0.4, "full_steps": 2},
            "height": 1024, "width": 1024, "seed": 0, "steps": 28, "guidance_scale": 2.5}
    cid = config_id(base)
    assert cid == config_id({**base, "policy_params": {"full_steps": 2, "omega": 0.4}})  # key order
    assert cid == config_id({**base, "guidance_scale": 2.5, "steps": 28.0})  # 28 == 28.0
    assert cid == config_id({**base, "model_path": "/elsewhere"})  # location is not identity
    for key, value in [("model", "qwen"), ("policy", "random"), ("policy_params", {"omega": 0.5, "full_steps": 2}),
                       ("height", 2048), ("width", 2048), ("seed", 1), ("steps", 20), ("guidance_scale", 4.0)]:
        assert config_id({**base, key: value}) != cid, key


def test_full_is_added_only_when_vs_full_is_requested():
    no_full = [p for p in BASE["policies"] if p["name"] != "full"]
    grid = expand_grid(cfg(policies=no_full))
    assert sum(g.policy == "full" for g in grid) == 2 * 2 * 2  # one per model/size/seed
    assert all(g.full_config_id for g in grid)
    grid = expand_grid(cfg(policies=no_full, metrics={"compute": ["background"]}))
    assert not any(g.policy == "full" for g in grid)
    assert all(g.full_config_id is None for g in grid)


def test_one_name_under_two_labels_gives_two_sets_of_configurations():
    # a fine-tuned copy of a model: same registry name, another folder; rows must stay apart by label
    grid = expand_grid(cfg(models=[{"name": "tiny", "path": "/a", "label": "base"},
                                   {"name": "tiny", "path": "/b", "label": "tuned"}], resolutions=[64], seeds=[0]))
    by_label = {label: [g for g in grid if g.model == label] for label in ("base", "tuned")}
    assert len(by_label["base"]) == len(by_label["tuned"]) == len(grid) // 2 > 0
    assert {g.model_name for g in grid} == {"tiny"}
    assert {g.model_path for g in by_label["tuned"]} == {"/b"}
    assert not {g.config_id for g in by_label["base"]} & {g.config_id for g in by_label["tuned"]}
    tuned_full = {g.config_id for g in by_label["tuned"] if g.policy == "full"}
    assert {g.full_config_id for g in by_label["tuned"]} == tuned_full   # compared with its own full


def test_duplicate_configurations_are_dropped():
    grid = expand_grid(cfg(policies=[{"name": "full"}, {"name": "full"}], seeds=[0, 0]))
    assert len(grid) == 2 * 2  # models x resolutions


def test_shorthands_and_metric_switches():
    c = cfg(policies=["full", "tokendrop"], seeds=3, metrics={"compute": []})
    assert [p.name for p in c.policies] == ["full", "tokendrop"] and c.seeds == (3,)
    assert c.metrics.compute == ()
    assert cfg(metrics=None).metrics.compute == ("background", "vs_full", "lpips", "clip", "structure", "judge")  # all


def test_each_labelled_entry_gets_its_own_pool_and_loads_by_name():
    from pipeline.graph import edit_actor

    models = [{"name": "tiny", "label": "base"}, {"name": "tiny", "path": "/b", "label": "tuned"}]
    expanded = expand_run(cfg(models=models, resolutions=[64], seeds=[0]))
    assert expanded.model_keys() == ["base", "tuned"]     # one actor pool each, for the whole run
    for label, path in (("base", None), ("tuned", "/b")):
        _, kwargs = edit_actor(expanded.of_model(label), expanded.config, "r")
        assert kwargs["model"] == "tiny" and kwargs["model_path"] == path
        assert {c["model"] for c in kwargs["configs"].values()} == {label}   # plain rows: what crosses Ray


def test_unset_steps_and_guidance_follow_the_model_family_protocol():
    raw = {**BASE, "models": [{"name": "tiny-flux-kontext"}, {"name": "tiny-qwen-image-edit"}],
           "policies": [{"name": "full"}], "resolutions": [64], "seeds": [0]}
    unset = parse_config({k: v for k, v in raw.items() if k not in ("steps", "guidance_scale")})
    assert unset.steps is None and unset.guidance_scale is None
    by_model = {g.model: g for g in expand_grid(unset)}
    assert (by_model["tiny-flux-kontext"].steps, by_model["tiny-flux-kontext"].guidance_scale) == (28, 3.5)
    assert (by_model["tiny-qwen-image-edit"].steps, by_model["tiny-qwen-image-edit"].guidance_scale) == (50, 4.0)
    # unset resolves to the same configuration (and id) as writing the protocol's values out
    explicit = parse_config({**raw, "models": [{"name": "tiny-flux-kontext"}], "steps": 28, "guidance_scale": 3.5})
    assert expand_grid(explicit)[0].config_id == by_model["tiny-flux-kontext"].config_id
    # one set, the other from the protocol
    half = parse_config({**raw, "steps": 8, "guidance_scale": None})
    assert {(g.steps, g.guidance_scale) for g in expand_grid(half)} == {(8, 3.5), (8, 4.0)}


def test_explicit_sampling_settings_keep_their_config_ids():
    # the id a config with explicit steps/guidance had before protocol defaults existed
    grid = expand_grid(cfg())
    assert all((g.steps, g.guidance_scale) == (28, 2.5) for g in grid)
    assert grid[0].config_id == "87caabd7c433"   # computed before unset meant "the model's protocol"


def test_the_cache_axis_composes_with_every_policy_and_keeps_uncached_ids():
    plain = expand_grid(cfg(policies=["full", "tokendrop"], resolutions=[64], seeds=[0]))
    cached = expand_grid(cfg(policies=["full", "tokendrop"], resolutions=[64], seeds=[0],
                             caches=["none", {"name": "magcache", "threshold": [0.1, 0.25]}]))
    assert len(cached) == 3 * len(plain)
    uncached = [c for c in cached if c.cache is None]
    assert [c.config_id for c in uncached] == [c.config_id for c in plain]   # ids of earlier runs stay
    labels = [c.label for c in cached]
    assert labels[0] == "full" and "tokendrop + magcache threshold=0.25" in labels
    fulls = {c.model: c.config_id for c in uncached if c.policy == "full"}
    assert all(c.full_config_id == fulls[c.model] for c in cached)   # the uncached full is the reference
    # no `none` listed: the uncached full is still there as the vs-full reference
    only = expand_grid(cfg(policies=["tokendrop"], resolutions=[64], seeds=[0], caches=[{"name": "first-block"}]))
    assert [(c.policy, c.cache_label) for c in only][0] == ("full", None)
