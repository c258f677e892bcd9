"""Tiny, randomly initialised pipelines of the real diffusers/transformers classes, for tests and demos.

Every component is the production class with a shrunken config: the same code paths run (packing, RoPE, dynamic
shifting, VAE 8x down-sampling, prompt templates, vision tokens), only widths and depths are tiny, so a 2-step edit
runs in seconds on a CPU. Nothing is downloaded: tokenizers and processors are built by `actors.tiny_tokenizers`.

Structural numbers kept from the real checkpoints: 16 latent channels, vae_scale_factor 8, 2x2 latent packing
(64 transformer input channels), the real scheduler configs, FLUX guidance embedding, the Qwen2.5-VL vision
patching (14 px patches, 2x2 merge, 2-frame temporal patch) and the real Qwen2.5-VL special-token layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinKVPipeline,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
)
from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PixtralImageProcessor,
    PixtralProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessor,
    Qwen2VLProcessor,
    Qwen2VLVideoProcessor,
    Qwen3Config,
    Qwen3ForCausalLM,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from actors.tiny_tokenizers import (
    build_clip_tokenizer,
    build_mistral_tokenizer,
    build_qwen2_tokenizer,
    build_qwen3_tokenizer,
    build_t5_tokenizer,
)

# Real FLUX.1-Kontext-dev scheduler/scheduler_config.json.
FLUX_KONTEXT_SCHEDULER_CONFIG: Mapping[str, object] = MappingProxyType({
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
})

# Real Qwen/Qwen-Image(-Edit) scheduler/scheduler_config.json.
QWEN_IMAGE_SCHEDULER_CONFIG: Mapping[str, object] = MappingProxyType({
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 0.9,
    "base_image_seq_len": 256,
    "max_image_seq_len": 8192,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "invert_sigmas": False,
    "stochastic_sampling": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
})

# Widths shared by the tiny text encoders and the transformers' text projections.
TEXT_DIM = 32
# Qwen2.5-VL image processor pixel budget: 28*28*64 px, i.e. at most 64 merged vision tokens per image
# (a 1024x1024 source becomes 224x224 -> 16x16 patches -> 8x8 tokens), so the VL encoder stays cheap on CPU.
QWEN_VL_MIN_PIXELS = 28 * 28 * 4
QWEN_VL_MAX_PIXELS = 28 * 28 * 64


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the CPU RNG for one component's construction without disturbing the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """RoPE split (frame, row, col) of a head dim, in the real 16:56:56 proportion; every part even."""
    if head_dim < 12 or head_dim % 2:
        raise ValueError(f"attention_head_dim must be even and >= 12, got {head_dim}")
    frame = 2 * max(2, round(head_dim / 16))
    row = (head_dim - frame) // 4 * 2
    return frame, row, head_dim - frame - row


def build_tiny_flux_kontext(seed: int = 0, *, num_layers: int = 2, num_single_layers: int = 2,
                            num_attention_heads: int = 2, attention_head_dim: int = 16) -> FluxKontextPipeline:
    """FLUX.1-Kontext-shaped pipeline: 2 dual + 2 single blocks, 2 heads x 16, 8x VAE, CLIP + T5 encoders.

    The transformer's depth and width can be changed (the speed benchmark builds wider, deeper ones); the
    defaults build the tiny test model, bit for bit as before."""
    tokenizer, tokenizer_2 = build_clip_tokenizer(), build_t5_tokenizer()
    return FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_KONTEXT_SCHEDULER_CONFIG),
        vae=_tiny_flux_vae(seed),
        text_encoder=_tiny_clip_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        text_encoder_2=_tiny_t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=_tiny_flux_transformer(seed, num_layers, num_single_layers, num_attention_heads,
                                           attention_head_dim),
    )


def _tiny_clip_encoder(tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModel:
    with _seeded(seed):
        return CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TEXT_DIM,
                intermediate_size=2 * TEXT_DIM,
                projection_dim=TEXT_DIM,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=tokenizer.model_max_length,
                hidden_act="quick_gelu",
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        ).eval()


def _tiny_t5_encoder(tokenizer_2: T5Tokenizer, seed: int) -> T5EncoderModel:
    with _seeded(seed):
        return T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=TEXT_DIM,
                d_kv=16,
                d_ff=2 * TEXT_DIM,
                num_layers=1,
                num_heads=2,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                feed_forward_proj="gated-gelu",  # T5 v1.1, as in FLUX's T5-XXL
                dropout_rate=0.0,
                pad_token_id=tokenizer_2.pad_token_id,
                eos_token_id=tokenizer_2.eos_token_id,
                decoder_start_token_id=tokenizer_2.pad_token_id,
            )
        ).eval()


def _tiny_flux_transformer(seed: int, num_layers: int, num_single_layers: int, num_attention_heads: int,
                           attention_head_dim: int) -> FluxTransformer2DModel:
    with _seeded(seed):
        return FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,  # 16 latent channels packed 2x2
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=TEXT_DIM,  # T5 d_model
            pooled_projection_dim=TEXT_DIM,  # CLIP pooled output (hidden size == projection_dim)
            guidance_embeds=True,  # Kontext-dev is guidance-distilled
            axes_dims_rope=rope_axes(attention_head_dim),  # (4, 6, 6) for 16, like (16, 56, 56) for 128
        ).eval()


def _tiny_flux_vae(seed: int) -> AutoencoderKL:
    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),  # 4 levels -> 3 down-samplings -> vae_scale_factor 8
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=4,
            sample_size=1024,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ).eval()


def build_tiny_qwen_vl_processor() -> Qwen2VLProcessor:
    """Qwen2-VL processor (image + video processors, tokenizer) with a small pixel budget."""
    patching = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
    pixels = {"min_pixels": QWEN_VL_MIN_PIXELS, "max_pixels": QWEN_VL_MAX_PIXELS}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels, **patching),
        # Unused by the edit pipelines, but transformers 5's processor requires one to construct and reload.
        video_processor=Qwen2VLVideoProcessor(**pixels, **patching, cap_pixels_per_frame=True),
        tokenizer=build_qwen2_tokenizer(),
    )


def _tiny_qwen_vl_encoder(processor: Qwen2VLProcessor, seed: int) -> Qwen2_5_VLForConditionalGeneration:
    tokenizer = processor.tokenizer
    token_id = tokenizer.convert_tokens_to_ids
    image_processor = processor.image_processor
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_DIM,
            "intermediate_size": 2 * TEXT_DIM,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 4096,
            # M-RoPE splits head_dim/2 = 8 rotary frequencies over (t, h, w), like [16, 24, 24] for head_dim 128.
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": token_id("<|endoftext|>"),
            "eos_token_id": token_id("<|im_end|>"),
            "pad_token_id": token_id("<|endoftext|>"),
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": TEXT_DIM,
            "patch_size": image_processor.patch_size,
            "temporal_patch_size": image_processor.temporal_patch_size,
            "spatial_merge_size": image_processor.merge_size,
            "window_size": 112,
            "fullatt_block_indexes": [1],  # windowed block then a full-attention block, as in the real tower
        },
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    with _seeded(seed):
        return Qwen2_5_VLForConditionalGeneration(config).eval()


def build_tiny_qwen_vl(seed: int = 0) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor]:
    """The tiny Qwen-Image-Edit's Qwen2.5-VL (text + vision) and its processor, on their own: a VLM to run offline
    (e.g. the judge's tests)."""
    processor = build_tiny_qwen_vl_processor()
    return _tiny_qwen_vl_encoder(processor, seed), processor


def build_tiny_qwen_image_edit(
    seed: int = 0, plus: bool = False, *, num_layers: int = 2, num_attention_heads: int = 2,
    attention_head_dim: int = 16,
) -> QwenImageEditPipeline | QwenImageEditPlusPipeline:
    """Qwen-Image-Edit-shaped pipeline (`QwenImageEditPlusPipeline` when `plus`): 2 MMDiT blocks, 2 heads x 16,
    8x causal-3D VAE, tiny Qwen2.5-VL text+vision encoder. Transformer depth and width can be changed."""
    processor = build_tiny_qwen_vl_processor()
    text_encoder = _tiny_qwen_vl_encoder(processor, seed)
    with _seeded(seed):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,  # 16 latent channels packed 2x2
            out_channels=16,
            num_layers=num_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=TEXT_DIM,  # Qwen2.5-VL hidden size
            guidance_embeds=False,  # as the real checkpoints; True would break QwenTimestepProjEmbeddings
            axes_dims_rope=rope_axes(attention_head_dim),  # (4, 6, 6) for 16, like (16, 56, 56) for 128
        ).eval()
    with _seeded(seed):
        vae = AutoencoderKLQwenImage(
            base_dim=4,  # real: 96; conv widths 4, 4, 8, 16, 16; base_dim 2 made decoding ill-conditioned
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],  # 3 down-samplings -> vae_scale_factor 8
        ).eval()  # latents_mean / latents_std keep the real Qwen-Image defaults

    pipeline_class = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER_CONFIG),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=processor.tokenizer,
        processor=processor,
        transformer=transformer,
    )


# FLUX.2 [klein]'s pipeline stacks the Qwen3 hidden states of layers (9, 18, 27) (its default
# `text_encoder_out_layers`), so the tiny encoder has the 27 layers those indices need (the real Qwen3-4B: 36).
FLUX2_TEXT_LAYERS = 27


def _tiny_qwen3_encoder(vocab_size: int, pad_token_id: int, seed: int) -> Qwen3ForCausalLM:
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                         num_hidden_layers=FLUX2_TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=16, max_position_embeddings=4096, pad_token_id=pad_token_id)
    with _seeded(seed):
        return Qwen3ForCausalLM(config).eval()


def _tiny_flux2_vae(seed: int) -> AutoencoderKLFlux2:
    """32 latent channels (patchified 2x2 to the transformer's 128) and 8x down-sampling, as the real VAE; the
    latent batch-norm statistics get non-trivial values so that normalising them is exercised."""
    with _seeded(seed):
        vae = AutoencoderKLFlux2(block_out_channels=(8, 16, 16, 16), layers_per_block=1, latent_channels=32,
                                 norm_num_groups=4).eval()
        vae.bn.running_mean.copy_(0.1 * torch.randn_like(vae.bn.running_mean))
        vae.bn.running_var.copy_(0.5 + torch.rand_like(vae.bn.running_var))
    return vae


def _tiny_flux2_transformer(seed: int, num_layers: int, num_single_layers: int, num_attention_heads: int,
                            attention_head_dim: int, guidance_embeds: bool) -> Flux2Transformer2DModel:
    if attention_head_dim % 8:
        raise ValueError(f"attention_head_dim must be a multiple of 8 (4 even RoPE axes), got {attention_head_dim}")
    with _seeded(seed):
        return Flux2Transformer2DModel(
            patch_size=1, in_channels=128, num_layers=num_layers, num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim, num_attention_heads=num_attention_heads,
            # three stacked text-encoder layers, as 7680 = 3 x 2560 (klein 4B) and 15360 = 3 x 5120 (dev)
            joint_attention_dim=3 * TEXT_DIM,
            axes_dims_rope=(attention_head_dim // 4,) * 4,  # (4, 4, 4, 4) for 16, like (32, 32, 32, 32) for 128
            guidance_embeds=guidance_embeds,
        ).eval()


def build_tiny_flux2_klein(seed: int = 0, *, num_layers: int = 2, num_single_layers: int = 2,
                           num_attention_heads: int = 2, attention_head_dim: int = 16) -> Flux2KleinPipeline:
    """FLUX.2 [klein]-shaped pipeline (step-distilled: no CFG): 2 dual + 2 single blocks, 2 heads x 16, 4-axis
    RoPE, 32-channel 8x VAE with latent batch-norm, a 27-layer tiny Qwen3 text encoder."""
    transformer = _tiny_flux2_transformer(seed, num_layers, num_single_layers, num_attention_heads,
                                          attention_head_dim, guidance_embeds=False)
    tokenizer = build_qwen3_tokenizer()
    return Flux2KleinPipeline(
        # FLUX.1's scheduler config, which diffusers' FLUX.2 conversion script gives its pipeline; the pipeline
        # passes its own mu (compute_empirical_mu), so only the dynamic shifting switch matters here
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_KONTEXT_SCHEDULER_CONFIG),
        vae=_tiny_flux2_vae(seed),
        text_encoder=_tiny_qwen3_encoder(len(tokenizer), tokenizer.pad_token_id, seed),
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def build_tiny_flux2_klein_kv(seed: int = 0, **sizes: int) -> Flux2KleinKVPipeline:
    """The tiny klein's very components as a `Flux2KleinKVPipeline` (reference K/V reuse; its constructor sets
    the KV attention processors, which compute as the stock ones when given no cache)."""
    return Flux2KleinKVPipeline(**build_tiny_flux2_klein(seed, **sizes).components)


# FLUX.2 [dev]'s pipeline stacks the Mistral hidden states of layers (10, 20, 30) (its default
# `text_encoder_out_layers`); 31 layers keep layer 30 an intermediate one, as in the real 40-layer Mistral Small
# 3.2 (the last entry of `hidden_states` is the final norm's output)
FLUX2_DEV_TEXT_LAYERS = 31


def build_tiny_mistral3_processor() -> PixtralProcessor:
    """Mistral Small 3.x's processor: the Pixtral image processor (14 px patches, 2x2 merge, 1540 px longest
    edge) and a tiny tekken-like tokenizer whose merges know FLUX.2's system message."""
    tokenizer = build_mistral_tokenizer((SYSTEM_MESSAGE,))
    return PixtralProcessor(image_processor=PixtralImageProcessor(patch_size=14, size={"longest_edge": 1540}),
                            tokenizer=tokenizer, patch_size=14, spatial_merge_size=2,
                            chat_template=tokenizer.chat_template)


def _tiny_mistral3_encoder(processor: PixtralProcessor, seed: int) -> Mistral3ForConditionalGeneration:
    tokenizer = processor.tokenizer
    config = Mistral3Config(
        text_config={"model_type": "mistral", "vocab_size": len(tokenizer), "hidden_size": TEXT_DIM,
                     "intermediate_size": 2 * TEXT_DIM, "num_hidden_layers": FLUX2_DEV_TEXT_LAYERS,
                     "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                     "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "sliding_window": None,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 1e9},
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        # never run by the pipeline's prompt encoding (only by its caption upsampling): one tiny block
        vision_config={"model_type": "pixtral", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 1540, "patch_size": processor.patch_size},
        image_token_index=processor.image_token_id, spatial_merge_size=processor.spatial_merge_size)
    with _seeded(seed):
        return Mistral3ForConditionalGeneration(config).eval()


def build_tiny_flux2_dev(seed: int = 0, *, num_layers: int = 2, num_single_layers: int = 2,
                         num_attention_heads: int = 2, attention_head_dim: int = 16) -> Flux2Pipeline:
    """FLUX.2 [dev]-shaped pipeline (guidance-distilled: a guidance embedding, no CFG): the tiny klein's
    transformer shape with `guidance_embeds`, its VAE, a 31-layer tiny Mistral3 (text + vision) encoder."""
    processor = build_tiny_mistral3_processor()
    return Flux2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_KONTEXT_SCHEDULER_CONFIG),   # as klein's (see there)
        vae=_tiny_flux2_vae(seed),
        text_encoder=_tiny_mistral3_encoder(processor, seed),
        tokenizer=processor,
        transformer=_tiny_flux2_transformer(seed, num_layers, num_single_layers, num_attention_heads,
                                            attention_head_dim, guidance_embeds=True),
    )


__all__ = [
    "FLUX_KONTEXT_SCHEDULER_CONFIG",
    "QWEN_IMAGE_SCHEDULER_CONFIG",
    "build_tiny_flux2_dev",
    "build_tiny_flux2_klein",
    "build_tiny_flux2_klein_kv",
    "build_tiny_flux_kontext",
    "build_tiny_qwen_image_edit",
    "build_tiny_qwen_vl",
    "build_tiny_qwen_vl_processor",
    "rope_axes",
]
