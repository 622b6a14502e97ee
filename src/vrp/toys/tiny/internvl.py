"""A tiny InternVL 3 model (``InternVLForConditionalGeneration``, the real config, model and
processor classes), random weights.

Geometry, scaled down from the real checkpoints (448 px tiles, patch 14, pixel shuffle 0.5:
16 x 16 = 256 tokens per tile, 1..12 tiles): 48 px tiles, patch 6, the same pixel shuffle, so
one tile is 8 x 8 patches -> a 4 x 4 grid of 16 tokens; 1..6 tiles. The image processor
(``GotOcr2ImageProcessor``, as the real checkpoints use) picks the tile grid whose aspect
ratio is closest to the image's, squashes the image to cols x 48 by rows x 48 px, cuts it
into tiles and, when there is more than one, appends a 48 x 48 thumbnail of the whole image:

=========  ==========================  =====================  ============
size       tiles (cols x rows)         stitched tile grid     tokens
=========  ==========================  =====================  ============
150 x 100  3 x 2 (+ thumbnail)         8 x 12                 7 x 16 = 112
60 x 52    1 x 1 (no thumbnail)        4 x 4                  16
70 x 105   2 x 3 (+ thumbnail)         12 x 8                 7 x 16 = 112
=========  ==========================  =====================  ============

The language model is InternVL's default text model class (Qwen2), at the size every tiny
family shares.
"""

from __future__ import annotations

import torch

from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import chat_template, text_config, word_tokenizer

TILE, PATCH, DOWNSAMPLE = 48, 6, 0.5
TOKENS_PER_TILE = int((TILE // PATCH * DOWNSAMPLE) ** 2)  # 16: a 4 x 4 grid
MIN_TILES, MAX_TILES = 1, 6
SIZES = ((150, 100), (60, 52), (70, 105))  # wide 3x2 tiles, one tile, tall 2x3 tiles
NAMED = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
# InternVL's own template puts the image placeholder then a newline before the question.
TEMPLATE = chat_template("<|im_start|>", "<|im_end|>", "<IMG_CONTEXT>\n")


def build_internvl(seed: int = 0):
    """(model, processor) of a tiny InternVL 3 with random weights seeded by ``seed``."""
    from transformers import (
        AutoModelForImageTextToText,
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLProcessor,
        InternVLVideoProcessor,
    )

    tok = word_tokenizer(eos="<|im_end|>", pad="<|endoftext|>", specials=["<|im_start|>"], named=NAMED)
    size = {"height": TILE, "width": TILE}
    ip = GotOcr2ImageProcessor(size=size, crop_to_patches=True, min_patches=MIN_TILES, max_patches=MAX_TILES)
    vp = InternVLVideoProcessor(size=size)
    proc = InternVLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                             image_seq_length=TOKENS_PER_TILE, chat_template=TEMPLATE)  # fmt: skip
    text = text_config(tok, model_type="qwen2")
    text.pop("head_dim")  # Qwen2 derives it: 128 / 4 heads = 32
    config = InternVLConfig(
        text_config=text,
        vision_config=dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=TILE,
            patch_size=PATCH,
        ),
        image_token_id=proc.image_token_id,
        image_seq_length=TOKENS_PER_TILE,
        downsample_ratio=DOWNSAMPLE,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def make_vision_local(model) -> None:
    """Zero the vision tower's attention output projections: each patch's feature (and so each
    token, the pixel shuffle of its 2 x 2 patches) then depends only on its own pixels."""
    n = 0
    for name, mod in model.model.vision_tower.named_modules():
        if name.endswith("attention.projection_layer"):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


FAMILIES = {"internvl": TinyFamily(build_internvl, make_vision_local, SIZES)}
