"""FLUX.2 reference images, sized and preprocessed exactly as Flux2KleinPipeline.__call__ does: an image over
1024² pixels is resized to that area, then each side is floored to a multiple of 16 and the image resized and
center-cropped to it (`resize_mode="crop"`). Every reference keeps its own size."""
from __future__ import annotations

from typing import Any

import PIL.Image
import torch

from ...adapter import EditInputError, resize

MAX_AREA = 1024 * 1024


def check(pipe: Any, images: list[PIL.Image.Image]) -> None:
    """The pipeline's own checks (minimum side, aspect ratio), told as an input error naming the reference."""
    for i, image in enumerate(images):
        try:
            pipe.image_processor.check_image_input(image)
        except ValueError as error:
            raise EditInputError(f"reference {i + 1}: {error}") from error


def _bounded(pipe: Any, image: PIL.Image.Image) -> PIL.Image.Image:
    if image.width * image.height > MAX_AREA:
        return pipe.image_processor._resize_to_target_area(image, MAX_AREA)
    return image


def natural_size(pipe: Any, image: PIL.Image.Image) -> tuple[int, int]:
    """(height, width) at which the pipeline encodes this reference."""
    bounded, multiple_of = _bounded(pipe, image), pipe.vae_scale_factor * 2
    return bounded.height // multiple_of * multiple_of, bounded.width // multiple_of * multiple_of


def pixels(pipe: Any, image: PIL.Image.Image) -> torch.Tensor:
    """The reference as the pipeline preprocesses it, at `natural_size`."""
    h, w = natural_size(pipe, image)
    return pipe.image_processor.preprocess(_bounded(pipe, image), height=h, width=w, resize_mode="crop")


def pixels_at(pipe: Any, image: PIL.Image.Image, size: tuple[int, int], filter_name: str) -> torch.Tensor:
    """The reference at another size (the first one, aligned with the output): resized with our filter."""
    h, w = size
    return pipe.image_processor.preprocess(resize(image, h, w, filter_name), height=h, width=w)
