"""A judge run in-process from a local transformers folder (Qwen2.5-VL-Instruct, as GEdit-Bench's open judge).

The folder is loaded once with `local_files_only`: a judge must never reach for a model hub at run time.
Decoding is greedy (the counterpart of temperature 0) with a bounded number of new tokens.
"""

from __future__ import annotations

import os

import PIL.Image
import torch
from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

from metrics.judge.base import JUDGE_AREA, resize_to_area

# Qwen2.5-VL's chat layout, used when a processor folder carries no chat template (the tiny test processor).
_VISION = "<|vision_start|><|image_pad|><|vision_end|>"
_CHAT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{vision}{text}<|im_end|>\n" \
        "<|im_start|>assistant\n"


class LocalJudge:
    """Qwen2.5-VL judge on CUDA when present (bfloat16 there, float32 on CPU). `device_map="auto"` spreads a model
    too big for one GPU (the 72B GEdit uses) over all visible ones instead."""

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, dtype: torch.dtype | None = None,
                 max_new_tokens: int = 512, area: int | None = JUDGE_AREA, device_map: str | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=dtype, local_files_only=True, device_map=device_map)
        self.model = (model if device_map else model.to(self.device)).eval()
        if device_map:  # inputs go where the embeddings are
            self.device = self.model.get_input_embeddings().weight.device
        self.max_new_tokens = max_new_tokens
        self.area = area

    def _chat_text(self, n_images: int, prompt: str) -> str:
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return _CHAT.format(vision=_VISION * n_images, text=prompt)

    @torch.inference_mode()
    def ask(self, images: list[PIL.Image.Image], prompt: str) -> str:
        resized = [resize_to_area(image, self.area) for image in images]
        inputs = self.processor(text=[self._chat_text(len(resized), prompt)], images=resized or None,
                                return_tensors="pt").to(self.device)
        tokenizer = self.processor.tokenizer
        output = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                     pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]  # the answer only, not the echoed prompt
        return tokenizer.decode(new_tokens, skip_special_tokens=True)
