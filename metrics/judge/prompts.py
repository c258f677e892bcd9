"""Judge prompts: VIEScore's (GEdit-Bench) and ImgEdit's (Benchmark/Basic), in our own words.

VIEScore (Ku et al. 2024, TIGER-AI-Lab/VIEScore `viescore/vie_prompts.py`; GEdit-Bench's evaluation in
stepfun-ai/Step1X-Edit reuses it) builds each prompt as context + rule: a "professional digital artist" context
that fixes the answer as `{"score": [...], "reasoning": "..."}`, then the zero-shot rule. Semantic consistency
(SC) shows the source and the edited image and asks two 0-10 scores, editing success and over-editing (10 =
minimal yet effective edit); perceptual quality (PQ) shows the edited image alone and asks naturalness and
artifacts (10 = none). The summary (min, min, sqrt) is in `metrics.judge.parse.viescore`.

ImgEdit (Ye et al. 2025, PKU-YuanGroup/ImgEdit `Benchmark/Basic`) gives the judge a rubric per edit type and
three 1-5 scores: instruction adherence, visual quality/naturalness, detail/physical preservation (named per
type; for style, extract and action the second and third criteria differ, as there). The original asks for
labelled lines; we ask for the same three numbers in VIEScore's JSON form so one parser serves both, and keep
ImgEdit's rule that the 2nd and 3rd scores may not exceed the 1st.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

VIESCORE_RANGE = (0.0, 10.0)
IMGEDIT_RANGE = (1.0, 5.0)

_CONTEXT = """You are a professional digital artist. You will evaluate AI-generated image(s) by the rules below.
All input images, and any people in them, are AI-generated, so there are no privacy concerns.

Answer with JSON only, in this form (keep the reasoning short):
{"score": [...], "reasoning": "..."}"""

_SC_RULE = """RULES:
Two images are given: the first is the original image, the second is an edited version of it.
Evaluate how well the editing instruction was carried out in the second image.
The two images may look identical when the edit failed.

On a scale from 0 to 10:
- score1, editing success: 0 means the edited scene does not follow the instruction at all, 10 means it follows
  the instruction perfectly.
- score2, over-editing: 0 means the edited scene is completely different from the original, 10 means it is
  recognisably a minimal yet effective edit of the original.
Answer "score": [score1, score2].

Editing instruction: {instruction}"""

_PQ_RULE = """RULES:
One AI-generated image is given. Evaluate how well it was generated.

On a scale from 0 to 10:
- naturalness: 0 means the scene looks unnatural (wrong sense of distance, shadows or lighting), 10 means it
  looks natural.
- artifacts: 0 means large distortions, watermarks, scratches, blurred faces, unusual body parts or subjects
  that do not fit together, 10 means no artifacts.
Answer "score": [naturalness, artifacts]."""


def viescore_sc_prompt(instruction: str) -> str:
    """SC prompt; images to send: [source, edited]."""
    return _CONTEXT + "\n\n" + _SC_RULE.replace("{instruction}", instruction.strip())


def viescore_pq_prompt() -> str:
    """PQ prompt; image to send: [edited]."""
    return _CONTEXT + "\n\n" + _PQ_RULE


# Per ImgEdit category: (what is graded, the three criteria, each with what a 5 looks like).
_RUBRICS: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] = MappingProxyType({
    "add": ("an object addition", (
        ("prompt compliance", "the added object has every stated attribute (class, position, colour, size, count)"),
        ("visual naturalness", "the added object blends in; no paste marks, style or resolution mismatch"),
        ("physical & detail coherence", "believable shadows, contact and perspective; the rest is untouched"))),
    "remove": ("an object removal", (
        ("prompt compliance", "all and only the requested objects are gone; everything else untouched"),
        ("visual naturalness", "the removal cannot be spotted; no erase marks, holes or blur"),
        ("physical & detail integrity", "the background is filled in plausibly; other details preserved"))),
    "replace": ("an object replacement", (
        ("prompt compliance", "exactly the target is replaced; the new object's class, count, pose match"),
        ("visual naturalness", "seamless; the new object fits the scene's style, lighting and resolution"),
        ("physical & detail integrity", "correct shadows, contact and perspective; background untouched"))),
    "adjust": ("an attribute change (colour, material, ...)", (
        ("prompt compliance", "only the requested objects change, only in the requested attribute; shape kept"),
        ("visual seamlessness", "no colour spill, smears or tone breaks; the edit area is invisible"),
        ("physical & detail fidelity", "highlights, shadows and reflections fit; original details preserved"))),
    "style": ("a style transfer", (
        ("style fidelity", "the requested style (palette, texture, strokes) covers the whole image"),
        ("content preservation", "all objects, layout and spatial relations are kept"),
        ("rendering quality", "sharp and clean; no noise, banding, seams or artifacts"))),
    "extract": ("an object extraction onto a white background", (
        ("object identity", "exactly the requested object, complete, the same instance"),
        ("mask precision", "crisp edges, no halo or leftovers; pure white background"),
        ("visual quality", "sharp detail and true colours; no blur or distortion"))),
    "background": ("a background change", (
        ("instruction compliance", "the background matches the instruction; foreground pixels untouched"),
        ("visual seamlessness", "no cut-out halos or texture/resolution gaps at the edges"),
        ("physical consistency", "lighting, perspective and depth of subject and new background agree"))),
    "compose": ("a multi-step edit", (
        ("instruction compliance", "every requested operation is carried out correctly"),
        ("visual naturalness", "all edited regions blend in; no artifacts"),
        ("physical & detail integrity", "physically plausible; everything not asked for is preserved"))),
    "action": ("an action or expression change", (
        ("action fidelity", "the pose or expression exactly matches the instruction"),
        ("identity preservation", "face, hair, clothing and accessories are the same person's"),
        ("visual & anatomical coherence", "correct anatomy, lighting and shadows; no broken limbs or halos"))),
})
# ImgEdit's own names for the same types.
_ALIASES: Mapping[str, str] = MappingProxyType({"alter": "adjust", "attribute": "adjust", "hybrid": "compose"})
IMGEDIT_CATEGORIES: tuple[str, ...] = tuple(_RUBRICS)


def imgedit_category(category: str) -> str:
    """The rubric name for an ImgEdit edit type (accepts ImgEdit's aliases); KeyError names the known ones."""
    key = category.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _RUBRICS:
        raise KeyError(f"unknown ImgEdit category {category!r}; known: {', '.join(IMGEDIT_CATEGORIES)}")
    return key


def imgedit_criteria(category: str) -> tuple[str, str, str]:
    """The three criterion names for a category, in score order."""
    return tuple(name for name, _ in _RUBRICS[imgedit_category(category)][1])  # type: ignore[return-value]


def imgedit_prompt(instruction: str, category: str) -> str:
    """ImgEdit rubric prompt; images to send: [source, edited] (for extract too: the object is judged against
    the source it was cut from)."""
    what, criteria = _RUBRICS[imgedit_category(category)]
    lines = [
        f"You are a rater of image edits. Two images are given, before and after {what}, with the editing "
        "instruction. Rate the edit on a 5-point scale (1 = fails, 3 = acceptable with clear flaws, 5 = flawless) "
        "from three perspectives:",
        *(f"{i}. {name}: 5 means {good}." for i, (name, good) in enumerate(criteria, 1)),
        "The second and third scores may not be higher than the first.",
        "",
        'Answer with JSON only: {"score": [s1, s2, s3], "reasoning": "..."} with a reasoning of at most 20 words.',
        "",
        f"Editing instruction: {instruction.strip()}",
    ]
    return "\n".join(lines)
