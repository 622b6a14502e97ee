"""Tiny LLaVA-NeXT and LLaVA-OneVision models (real config, model and processor classes),
random weights.

Both show an image as a low-resolution **base** view followed by the high-resolution
**tiles**: the image is resized (aspect kept) into the best of ``image_grid_pinpoints``,
padded, cut into S x S tiles, the tiles' feature maps stitched, the rows / columns that hold
only padding removed ("unpad") and a newline slot appended after each row. Scaled down from
the real checkpoints (LLaVA-NeXT: CLIP 336 / 14, a 24 x 24 base, pinpoints of 1 x 2 .. 3 x 1
tiles; OneVision: SigLIP 384 / 14, 27 x 27, 1 x 1 .. 6 x 6 tiles, anyres_max_9):

* ``llava_next``: CLIP, S = 96 px of 24 px patches -> a 4 x 4 base grid; pinpoints (h, w)
  192 x 96, 96 x 192, 192 x 192 (the real list's [[2S, S], [S, 2S], [2S, 2S]]).
* ``llava_onevision``: SigLIP, the same S = 96 / patch 24; pinpoints a x b tiles for a, b in
  1..3, and ``vision_aspect_ratio`` anyres_max_4 (for the real anyres_max_9 over 6 x 6 tiles),
  so that a stitched grid of more than 4 * 1.1**2 tiles' worth of cells (3 x 3 tiles, some
  3 x 2) is bilinearly downsampled.

Patches are 24 px so that the bicubic resize of the base view (it spreads a pixel over about
2 px of the resized image) does not carry the crafted square of the family tests past the
base cells that cover it; at 8 px patches it does (a real property of the base view: see
``vrp.models.llava_next``, "Resampling").

===============  ==========  ==================  ============  ======================  ======
family           size        best fit (h x w)    stitched      unpadded [downsampled]  tokens
===============  ==========  ==================  ============  ======================  ======
llava_next       288 x 100   96 x 192 (1 x 2)    4 x 8         2 x 8                   16+16+2
llava_next       100 x 288   192 x 96 (2 x 1)    8 x 4         8 x 2                   16+16+8
llava_onevision  200 x 100   192 x 288 (2 x 3)   8 x 12        6 x 12                  16+72+6
llava_onevision  100 x 200   288 x 192 (3 x 2)   12 x 8        12 x 6                  16+72+12
llava_onevision  288 x 288   288 x 288 (3 x 3)   12 x 12       12 x 12 [8 x 8]         16+64+8
llava_onevision  280 x 240   288 x 288 (3 x 3)   12 x 12       10 x 12 [7 x 8]         16+56+7
===============  ==========  ==================  ============  ======================  ======

(tokens: base + tile cells + newlines; ``tests/integration/test_family_llava_next.py`` checks
these and more against the processor and the model.)
"""

from __future__ import annotations

import torch

from vrp.toys.build import LLAVA_CHAT_TEMPLATE
from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import chat_template, text_config, word_tokenizer

TILE, PATCH = 96, 24  # vision image size (one tile, and the base view) and patch: a 4 x 4 base grid
NEXT_PINPOINTS = [[2 * TILE, TILE], [TILE, 2 * TILE], [2 * TILE, 2 * TILE]]  # (height, width)
OV_PINPOINTS = [[a * TILE, b * TILE] for a in (1, 2, 3) for b in (1, 2, 3)]
OV_ASPECT = "anyres_max_4"
# wide and tall: several tiles, and padding that unpad removes
NEXT_SIZES = ((288, 100), (100, 288))
OV_SIZES = ((200, 100), (100, 200))
VISION = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=TILE, patch_size=PATCH
)
OV_TEMPLATE = chat_template("<|im_start|>", "<|im_end|>", "<image>\n")


def build_llava_next(seed: int = 0, tile: int = TILE, patch: int = PATCH, pinpoints: list | None = None):
    """(model, processor) of a tiny LLaVA-NeXT (CLIP + Llama) with random weights seeded by ``seed``.

    ``tile``, ``patch`` and ``pinpoints`` (height, width) set the image geometry (the benchmarks
    use the real checkpoints': 336, 14 and llava-v1.6's pinpoints)."""
    pinpoints = pinpoints or [[h * tile // TILE, w * tile // TILE] for h, w in NEXT_PINPOINTS]
    vision = {**VISION, "image_size": tile, "patch_size": patch}
    from transformers import (
        AutoModelForImageTextToText,
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    tok = word_tokenizer(eos="</s>", pad="<pad>", bos="<s>", add_bos=True, named={"image_token": "<image>"})
    ip = LlavaNextImageProcessor(
        size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}, image_grid_pinpoints=pinpoints
    )
    # CLIP keeps a CLS token: "default" drops it from the features, so the processor counts it
    # (num_additional_image_tokens) and then takes it off, as llava-hf's processors do.
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)  # fmt: skip
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision, projection_dim=64),
        text_config=text_config(tok, model_type="llama"),
        image_token_id=proc.image_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def build_llava_onevision(seed: int = 0):
    """(model, processor) of a tiny LLaVA-OneVision (SigLIP + Qwen2) with random weights."""
    from transformers import (
        AutoModelForImageTextToText,
        LlavaOnevisionConfig,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    named = {"image_token": "<image>", "video_token": "<video>"}
    tok = word_tokenizer(eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>"], named=named)
    size = {"height": TILE, "width": TILE}
    ip = LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=OV_PINPOINTS)
    vp = LlavaOnevisionVideoProcessor(size=size)
    proc = LlavaOnevisionProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                                   num_image_tokens=(TILE // PATCH) ** 2, vision_feature_select_strategy="full",
                                   vision_aspect_ratio=OV_ASPECT, chat_template=OV_TEMPLATE)  # fmt: skip
    text = text_config(tok, model_type="qwen2")
    text.pop("head_dim")  # Qwen2 derives it: 128 / 4 heads = 32
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", **VISION),
        text_config=text,
        image_token_id=proc.image_token_id,
        video_token_id=proc.video_token_id,
        image_grid_pinpoints=OV_PINPOINTS,
        vision_aspect_ratio=OV_ASPECT,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def make_vision_local(model) -> None:
    """Zero the vision tower's attention output projections: each patch token then depends
    only on its own patch (the CLS token, where there is one, no longer mixes in)."""
    n = 0
    for name, mod in model.model.vision_tower.named_modules():
        if name.endswith("self_attn.out_proj"):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


FAMILIES = {
    "llava_next": TinyFamily(build_llava_next, make_vision_local, NEXT_SIZES),
    "llava_onevision": TinyFamily(build_llava_onevision, make_vision_local, OV_SIZES),
}
