"""Where an edit runs and how it is timed (issue 31): the attention backend chosen and recorded, text encoders
offloaded between prompts, per-step times from device events resolved once per edit, the warm-up size."""
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch

import policies
from actors.adapter import EditInputError
from actors.attention_backend import backend_label, set_backend
from actors.editor import Editor
from actors.loading import load_pipeline
from actors.step_clock import StepClock
from actors.text_encoders import encoders_on_card, is_offloaded, placement_of, text_encoder_modules
from pipeline.edit_stage import largest_size
from pipeline.records import output_schema


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-flux-kontext", device="cpu")


def _edit(pipe, **kw):
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return Editor(pipe, policies.make("random", ratio=0.5)).edit(image, "make it red", seed=1, steps=3,
                                                                  height=64, width=64, **kw)


def test_the_backend_is_recorded_and_a_chosen_one_gives_the_same_edit(pipe):
    default = _edit(pipe)
    assert default.attention_backend == "native (default)" and default.text_encoders == "resident"
    assert default.encoder_move_s == 0.0 and all(s.seconds > 0 for s in default.trace)
    try:
        set_backend(pipe.transformer, "_native_math")
        chosen = _edit(pipe)
    finally:
        pipe.transformer.set_attention_backend("native")
    assert chosen.attention_backend == "_native_math"
    np.testing.assert_allclose(chosen.pixels, default.pixels, atol=1e-4)
    with pytest.raises(ValueError, match="unknown attention backend 'nope'"):
        set_backend(pipe.transformer, "nope")


def test_a_live_step_callback_still_gets_each_step_timed(pipe):
    seen = []
    result = _edit(pipe, on_step=seen.append)
    assert [s.seconds for s in seen] == [s.seconds for s in result.trace] and all(s.seconds > 0 for s in seen)


class FakeEvent:
    """A CUDA event stand-in: records a time when recorded; elapsed_time in milliseconds, as torch's."""

    def __init__(self, clock):
        self.clock, self.at, self.synced = clock, None, False

    def record(self):
        self.at = self.clock.pop(0)

    def elapsed_time(self, other):
        return (other.at - self.at) * 1000.0

    def synchronize(self):
        self.synced = True


def test_device_events_are_read_once_when_the_edit_settles():
    from actors.edit_result import StepTrace

    times = [0.0, 0.5, 0.7, 1.0, 1.6, 1.9]   # device seconds at each recorded event
    events: list[FakeEvent] = []

    def make():
        events.append(FakeEvent(times))
        return events[-1]

    clock, traces = StepClock(torch.device("cuda"), make_event=make), []
    blank = dict(sigma=1.0, kept=1, total=1, seconds=0.0, policy_seconds=0.0, keep_masks=(np.ones((1, 1), bool),))
    for i in range(2):
        start, observing, end = clock.stamp(), clock.stamp(), clock.stamp()
        clock.record(traces, StepTrace(index=i, **blank), start, observing, end, plan_seconds=0.01)
    assert [t.seconds for t in traces] == [0.0, 0.0]   # nothing read before the edit's end
    clock.settle()
    assert events[-1].synced
    assert [t.seconds for t in traces] == pytest.approx([0.7, 0.9])
    assert [t.policy_seconds for t in traces] == pytest.approx([0.21, 0.31])
    live = StepClock(torch.device("cuda"), live=True)
    assert not live.deferred and not StepClock(torch.device("cpu")).deferred


def test_offloaded_encoders_visit_the_card_only_for_the_prompt():
    encoder = torch.nn.Linear(4, 4)
    host = [p.data_ptr() for p in encoder.parameters()]
    objects = list(encoder.parameters())
    card = torch.nn.Linear(2, 2).to("meta")   # a transformer on another device than the host
    fake = SimpleNamespace(transformer=card, components={"text_encoder": encoder, "vae": torch.nn.Linear(1, 1)})
    assert text_encoder_modules(fake) == [encoder] and is_offloaded(fake) and placement_of(fake) == "offload"
    moves: list[float] = []
    with encoders_on_card(fake, moves):
        assert all(p.device.type == "meta" for p in encoder.parameters())
    # the module's own parameter objects, on their original host memory: nothing copied back
    assert list(encoder.parameters()) == objects and [p.data_ptr() for p in objects] == host
    assert len(moves) == 1
    with pytest.raises(RuntimeError), encoders_on_card(fake, moves):
        raise RuntimeError("the prompt failed")
    assert [p.device.type for p in objects] == ["cpu", "cpu"] and [p.data_ptr() for p in objects] == host


def test_offload_on_a_cpu_only_machine_changes_nothing_and_bad_values_are_refused():
    pipe = load_pipeline("tiny-flux-kontext", device="cpu", text_encoders="offload")
    assert placement_of(pipe) == "resident"   # the card is the host: nothing to move
    with pytest.raises(EditInputError, match="text_encoders must be one of"):
        load_pipeline("tiny-flux-kontext", device="cpu", text_encoders="disk")
    with pytest.raises(ValueError, match="unknown attention backend"):
        load_pipeline("tiny-flux-kontext", device="cpu", attention_backend="nope")


def test_the_warm_up_runs_at_the_largest_configured_size_and_rows_carry_the_placement():
    configs = [{"height": 512, "width": 512}, {"height": 1024, "width": 768}, {"height": None, "width": None}]
    assert largest_size(configs) == (1024, 768) and largest_size([{}]) is None
    names = set(output_schema().names)
    assert {"attention_backend", "text_encoders", "encoder_move_s"} <= names
    assert backend_label(load_pipeline("tiny-qwen-image-edit", device="cpu").transformer) == "native (default)"


def test_metric_models_can_stay_off_the_editing_card(tmp_path):
    from pipeline.config import parse_config
    from pipeline.edit_stage import EditActor

    raw = {"input": "x.jsonl", "output": "out", "models": [{"name": "tiny-flux-kontext"}], "policies": [{"name": "full"}],
           "metrics": {"device": "cpu"}}
    assert parse_config(raw).metrics.device == "cpu"
    with pytest.raises(Exception, match="device"):
        parse_config({**raw, "metrics": {"device": "gpu"}})
    actor = EditActor("tiny-flux-kontext", None, str(tmp_path), "r", {}, metrics={"compute": ["lpips"], "device": "cpu"})
    assert actor.metrics.settings.device == "cpu"
    actor.device = "cuda:0"   # as on a GPU actor (the metric models load on first use: nothing moves here)
    actor._metric_models({"compute": ["lpips"], "device": "cpu"}, str(tmp_path))
    assert actor.metrics.settings.device == "cpu"
    actor._metric_models({"compute": ["lpips"]}, str(tmp_path))
    assert actor.metrics.settings.device == "cuda:0"
