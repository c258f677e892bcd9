"""Small tokenizers built locally (no hub access) for the tiny test pipelines.

Each tokenizer is the real transformers class (CLIP / T5 / Qwen2; Mistral's tekken: the generic fast tokenizer),
constructed from a vocabulary made here: every byte (or character) is a base symbol, and a few hundred BPE merges
are learned from a fixed corpus of the pipelines' prompt templates and common editing words, so that those words
are single tokens as they mostly are in the real vocabularies. This keeps prompt-template token counts close to the
real models (e.g. Qwen-Image-Edit drops the first 64 tokens of its template, which must be exactly the system
prompt).

In transformers 5 the model-specific tokenizer classes are all `TokenizersBackend` subclasses that build their
backend from `vocab`/`merges` in `__init__`, and `from_pretrained` re-runs that `__init__` with the vocab and merges
read back from tokenizer.json. Building through the same constructor makes save/load round trips exact.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    Qwen2Tokenizer,
    T5Tokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

# Special tokens of the Qwen2.5-VL tokenizer, in the real id order (151643..151656 there).
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# System prompt shared by the Qwen-Image-Edit and Edit-Plus templates (copied from the diffusers pipelines).
_QWEN_EDIT_SYSTEM = (
    "Describe the key features of the input image (color, shape, size, texture, objects, background), then explain "
    "how the user's text instruction should alter or modify the image. Generate a new image that meets the user's "
    "requirements while maintaining consistency with the original input where appropriate."
)

_EDIT_WORDS = (
    "make it red blue green yellow black white orange purple pink brown gray color colour change turn replace "
    "remove add put place the a an of to in on with and or into from as is are be this that these those his her "
    "its their background foreground sky water tree trees cat dog man woman person people car house sign text hat "
    "style painting photo picture image sunset night day winter summer snow rain light dark bright small large big "
    "left right top bottom center front behind above below keep same but only all more less very"
)

# Qwen corpus: the template text around the special tokens, the Edit-Plus "Picture N: " prefixes, edit words.
_QWEN_CORPUS: tuple[str, ...] = (
    "system\n" + _QWEN_EDIT_SYSTEM + "\nuser\n",
    "\nassistant\n",
    "Picture 1: Picture 2: Picture 3: ",
    _EDIT_WORDS,
    _EDIT_WORDS.capitalize(),
)

_CLIP_T5_CORPUS: tuple[str, ...] = (_EDIT_WORDS, "A painting of a squirrel eating a burger")

_CLIP_BOS, _CLIP_EOS = "<|startoftext|>", "<|endoftext|>"
_T5_PAD, _T5_EOS, _T5_UNK = "<pad>", "</s>", "<unk>"


def _learn_merges(words: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """Greedy BPE over the distinct words until each is a single symbol.

    Ties are broken by the pair itself (max of count, then pair) so the result never depends on hashing order.
    """
    segmented = [list(w) for w in dict.fromkeys(tuple(w) for w in words) if len(w) > 1]
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    while segmented:
        counts = Counter(pair for w in segmented for pair in zip(w, w[1:]))
        best = max(counts, key=lambda pair: (counts[pair], pair))
        if best not in seen:
            seen.add(best)
            merges.append(best)
        merged_words = []
        for w in segmented:
            out: list[str] = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) > 1:
                merged_words.append(out)
        segmented = merged_words
    return merges


def _vocab_from(symbols: Iterable[str]) -> dict[str, int]:
    """Ids in first-seen order; duplicates (a merge producing an existing symbol) keep their first id."""
    return {s: i for i, s in enumerate(dict.fromkeys(symbols))}


def _split_out(text: str, tokens: Sequence[str]) -> list[str]:
    return re.split("|".join(re.escape(t) for t in tokens), text)


def build_qwen2_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE Qwen2 tokenizer with the Qwen2.5-VL special tokens (ids appended after the BPE vocab)."""
    base = list(bytes_to_unicode().values())
    probe = Qwen2Tokenizer(vocab=_vocab_from(base), merges=[])
    pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    pieces = [
        piece
        for text in _QWEN_CORPUS
        for chunk in _split_out(text, QWEN_SPECIAL_TOKENS)
        for piece, _ in pre_tokenizer.pre_tokenize_str(chunk)
    ]
    merges = _learn_merges(pieces)
    vocab = _vocab_from([*base, *(a + b for a, b in merges), *QWEN_SPECIAL_TOKENS])
    # Listing them as extra special tokens makes them atomic added tokens that keep their vocab ids.
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=32768,
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


# Qwen3's thinking markers (special tokens 151667/151668 in the real vocabulary), after the Qwen2.5 ones.
QWEN3_SPECIAL_TOKENS: tuple[str, ...] = (*QWEN_SPECIAL_TOKENS, "<think>", "</think>")

# The part of Qwen3's chat template that FLUX.2 [klein]'s pipeline uses: plain-text messages, no tools, the
# generation prompt with `enable_thinking=False` (an empty think block). For those calls it renders the same
# text as the real template; messages with tools or images are outside what the tiny model needs.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

_QWEN3_CORPUS: tuple[str, ...] = ("user\n", "\nassistant\n", "\n\n", _EDIT_WORDS, _EDIT_WORDS.capitalize())


def build_qwen3_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE tokenizer of FLUX.2 [klein]'s Qwen3 text encoder: Qwen3's special tokens and the chat
    template its pipeline renders (`apply_chat_template(..., enable_thinking=False)`)."""
    base = list(bytes_to_unicode().values())
    probe = Qwen2Tokenizer(vocab=_vocab_from(base), merges=[])
    pre_tokenizer = probe.backend_tokenizer.pre_tokenizer
    pieces = [piece for text in _QWEN3_CORPUS for piece, _ in pre_tokenizer.pre_tokenize_str(text)]
    merges = _learn_merges(pieces)
    vocab = _vocab_from([*base, *(a + b for a, b in merges), *QWEN3_SPECIAL_TOKENS])
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=40960,
                               extra_special_tokens=list(QWEN3_SPECIAL_TOKENS[1:]))
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


# Mistral's tekken control tokens in their real id order (0..19 there): Mistral3Config's default
# image_token_index 10 is [IMG], and the pipeline pads with <pad> (11).
MISTRAL_SPECIAL_TOKENS: tuple[str, ...] = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]",
    "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]", "[PREFIX]", "[MIDDLE]",
    "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]",
)

# The part of Mistral-Small-3.1's chat template that Flux2Pipeline.encode_prompt renders: a system message and
# user messages (string or text-block content), no generation prompt. For those it renders the same text as the
# real template (`<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]`); images, tools and assistant turns are
# outside what the tiny model needs.
MISTRAL_CHAT_TEMPLATE = (
    "{%- macro text(content) %}{%- if content is string %}{{- content }}{%- else %}"
    "{%- for block in content %}{%- if block['type'] == 'text' %}{{- block['text'] }}{%- endif %}{%- endfor %}"
    "{%- endif %}{%- endmacro %}"
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text(message['content']) + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text(message['content']) + '[/INST]' }}{%- endif %}"
    "{%- endfor %}"
)


def build_mistral_tokenizer(corpus: Sequence[str] = ()) -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer with Mistral's control tokens and the chat template FLUX.2 [dev]'s pipeline
    renders. `corpus` (e.g. the pipeline's system message) joins the edit words in the merge corpus, so that
    its words are single tokens as they mostly are in tekken's vocabulary. GPT-2's split regex stands in for
    tekken's; no post-processor: the template writes <s> itself, and the processor then adds no special tokens."""
    base = list(bytes_to_unicode().values())
    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pieces = [piece for text in (*corpus, _EDIT_WORDS, _EDIT_WORDS.capitalize())
              for piece, _ in pre_tokenizer.pre_tokenize_str(text)]
    merges = _learn_merges(pieces)
    vocab = _vocab_from([*MISTRAL_SPECIAL_TOKENS, *base, *(a + b for a, b in merges)])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer, backend.decoder = pre_tokenizer, decoders.ByteLevel()
    backend.add_special_tokens(list(MISTRAL_SPECIAL_TOKENS))   # atomic, keeping their vocab ids
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", model_max_length=131072)
    tokenizer.chat_template = MISTRAL_CHAT_TEMPLATE
    return tokenizer


def build_clip_tokenizer(extra_words: Sequence[str] = ()) -> CLIPTokenizer:
    """CLIP byte-level BPE (lower-cased, `</w>` word ends) with the real 77-token context.

    `extra_words` join the merge corpus (e.g. a toy task's vocabulary, so each word is one token); without
    them the tokenizer is the one the tiny test pipelines have always had.
    """
    corpus = _CLIP_T5_CORPUS + ((" ".join(extra_words),) if extra_words else ())
    base = list(bytes_to_unicode().values())
    base_vocab = [*base, *(c + "</w>" for c in base)]
    probe = CLIPTokenizer(vocab=_vocab_from([*base_vocab, _CLIP_BOS, _CLIP_EOS]), merges=[])
    normalizer, pre_tokenizer = probe.backend_tokenizer.normalizer, probe.backend_tokenizer.pre_tokenizer
    words = [
        [*piece[:-1], piece[-1] + "</w>"]
        for text in corpus
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    ]
    merges = _learn_merges(words)
    vocab = _vocab_from([*base_vocab, *(a + b for a, b in merges), _CLIP_BOS, _CLIP_EOS])
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def build_t5_tokenizer(extra_words: Sequence[str] = ()) -> T5Tokenizer:
    """T5 Unigram tokenizer: corpus words as `▁word` pieces, printable ASCII characters as the fallback.

    No sentinel `<extra_id_*>` tokens: the encoder-only use in Flux never needs them. `extra_words` become
    whole-word pieces after the corpus words (the default tokenizer is unchanged without them).
    """
    words = dict.fromkeys([*(w for text in _CLIP_T5_CORPUS for w in text.split()), *extra_words])
    chars = [chr(c) for c in range(33, 127)]
    pieces: list[tuple[str, float]] = [(_T5_PAD, 0.0), (_T5_EOS, 0.0), (_T5_UNK, 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -4.0) for w in words]
    pieces += [(c, -8.0) for c in chars] + [("▁" + c, -8.5) for c in chars]
    unique: dict[str, float] = {}
    for piece, score in pieces:
        unique.setdefault(piece, score)  # a word may equal a character piece; keep the first
    return T5Tokenizer(vocab=list(unique.items()), extra_ids=0, model_max_length=512)


__all__ = ["MISTRAL_SPECIAL_TOKENS", "QWEN3_SPECIAL_TOKENS", "QWEN_SPECIAL_TOKENS", "build_clip_tokenizer",
           "build_mistral_tokenizer", "build_qwen2_tokenizer", "build_qwen3_tokenizer", "build_t5_tokenizer"]
