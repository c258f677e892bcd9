"""studies.toy.order_probe: the colour swap of every recolor template, and the probe on the fast v1 toy (one
record, two steps): two edits compared inside the mask, each scored against the exact target."""
import pytest

from studies.toy.order_probe import probe, recolor_records, swap_colours


@pytest.mark.parametrize("instruction, swapped", [
    ("make the blue diamond orange", "make the orange diamond blue"),
    ("change the color of the white circle to black", "change the color of the black circle to white"),
    ("turn the red square green", "turn the green square red"),
])
def test_swap_exchanges_the_object_colour_and_the_new_one(instruction, swapped):
    assert swap_colours(instruction) == swapped
    assert swap_colours(swapped) == instruction


def test_swap_refuses_an_instruction_without_two_colours():
    with pytest.raises(ValueError, match="two colours"):
        swap_colours("remove the red circle")


def test_every_held_out_recolor_record_can_be_swapped():
    for rec in recolor_records(24, 64, seed=1):
        assert rec.category == "recolor" and swap_colours(rec.instruction) != rec.instruction


def test_probe_compares_the_two_edits_of_a_record():
    import actors

    out = probe(actors.load_pipeline("toy-flux-kontext"), n=1, steps=2)
    (row,) = out["records"]
    assert row["swapped"] == swap_colours(row["instruction"])
    assert 0 < row["psnr_between"] < 100 and row["psnr_edit"] > 0
    assert out["mean"]["psnr_between"] == row["psnr_between"]
