"""Tiny Idefics3 and SmolVLM models (``Idefics3ForConditionalGeneration``,
``SmolVLMForConditionalGeneration``: the real config, model and processor classes), random weights.

Both processors resize the image so that its longest edge is ``size["longest_edge"]`` (small
images are upscaled), stretch it to multiples of the tile size, cut it into tiles (row-major,
each ``<fake_token_around_image><row_r_col_c>`` + N image tokens, a newline after each tile row)
and append the whole image squashed to one tile, the global view
(``<fake_token_around_image><global-img>`` + N image tokens + ``<fake_token_around_image>``).
A tile of the vision tower is (tile / patch)^2 patches; the connector's pixel shuffle merges
``scale_factor``^2 of them into one token, so a tile gives an N_side x N_side grid.

Scaled down from the real checkpoints (Idefics3-8B: 364 px tiles, patch 14, shuffle 2 -> 13 x 13 =
169 tokens, longest edge 4 x 364; SmolVLM-256M/500M: 512 px tiles, patch 16, shuffle 4 -> 8 x 8 =
64 tokens, longest edge 4 x 512). A token's cell stays large in pixels (32 px of the resized image,
as the real ones are 28 and 64 px), so that the Lanczos resampling of a processor step does not
reach past a quarter of a cell: a patch painted in the middle of a cell then changes only the
tokens whose cells it touches (the harness's crafted-patch test). The images below are at least
12 original pixels per stitched cell for the same reason (a 40 x 30 image, upscaled 6x, smears a
cell's paint over its neighbours).

========  ==========================================  ============
family    tile, patch, shuffle -> tokens per tile     longest edge
========  ==========================================  ============
idefics3  128 px, 16, 2 -> 8 x 8 patches -> 4 x 4     2 x 128 px
smolvlm   96 px, 8, 4 -> 12 x 12 patches -> 3 x 3     2 x 96 px
========  ==========================================  ============

Test sizes (width x height) -> tiles (rows x cols), stitched tile grid, global grid:

=====================  ========================  =====================  ======================
idefics3 size          tiles, stitched, global   smolvlm size           tiles, stitched, global
=====================  ========================  =====================  ======================
240 x 100 (upscaled)   1 x 2, 4 x 8, 4 x 4       180 x 70 (upscaled)    1 x 2, 3 x 6, 3 x 3
90 x 200 (upscaled)    2 x 1, 8 x 4, 4 x 4       64 x 150 (upscaled)    2 x 1, 6 x 3, 3 x 3
300 x 280 (downscaled) 2 x 2, 8 x 8, 4 x 4       250 x 220 (downscaled) 2 x 2, 6 x 6, 3 x 3
=====================  ========================  =====================  ======================

Every image is first resized to the longest edge (2 tiles), so no image is shown as the global
view alone with these processors (as with the real checkpoints' settings); a processor with
``do_image_splitting=False`` shows every image that way (tested).
"""

from __future__ import annotations

import torch

from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import text_config, word_tokenizer

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
SPECIALS = ["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *ROW_COL]
EXTRA_WORDS = ["user", "assistant", ":"]

# The checkpoints' own chat templates (Idefics3-8B-Llama3, SmolVLM-256M-Instruct).
IDEFICS3_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
SMOLVLM_TEMPLATE = "<|im_start|>" + IDEFICS3_TEMPLATE.removeprefix("<|begin_of_text|>")

GEOMETRY = {  # tile px, patch px, pixel-shuffle scale, longest edge in tiles
    "idefics3": (128, 16, 2, 2),
    "smolvlm": (96, 8, 4, 2),
}
SIZES = {
    "idefics3": ((240, 100), (90, 200), (300, 280)),
    "smolvlm": ((180, 70), (64, 150), (250, 220)),
}


def _vision(model_type: str) -> dict:
    tile, patch, _, _ = GEOMETRY[model_type]
    return dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                image_size=tile, patch_size=patch)  # fmt: skip


def _image_kwargs(model_type: str) -> dict:
    tile, _, _, edge = GEOMETRY[model_type]
    return dict(size={"longest_edge": edge * tile}, max_image_size={"longest_edge": tile})


def _tokens_per_tile(model_type: str) -> int:
    tile, patch, scale, _ = GEOMETRY[model_type]
    return (tile // patch // scale) ** 2


def build_idefics3(seed: int = 0):
    """(model, processor) of a tiny Idefics3 (Llama text model) with random weights seeded by ``seed``."""
    from transformers import AutoModelForImageTextToText, Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    tok = word_tokenizer(eos="<end_of_utterance>", pad="<pad>", bos="<|begin_of_text|>", specials=SPECIALS,
                         extra_words=EXTRA_WORDS)  # fmt: skip
    ip = Idefics3ImageProcessor(**_image_kwargs("idefics3"))
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=_tokens_per_tile("idefics3"),
                             chat_template=IDEFICS3_TEMPLATE)  # fmt: skip
    config = Idefics3Config(
        text_config=text_config(tok, model_type="llama"),
        vision_config=_vision("idefics3"),
        scale_factor=GEOMETRY["idefics3"][2],
        image_token_id=proc.image_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def build_smolvlm(seed: int = 0):
    """(model, processor) of a tiny SmolVLM (SmolLM2 = Llama text model) with random weights seeded by ``seed``."""
    from transformers import (
        AutoModelForImageTextToText,
        SmolVLMConfig,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    tok = word_tokenizer(eos="<end_of_utterance>", pad="<|im_end|>", specials=["<|im_start|>", *SPECIALS],
                         extra_words=EXTRA_WORDS)  # fmt: skip
    kw = _image_kwargs("smolvlm")
    ip = SmolVLMImageProcessor(**kw)
    vp = SmolVLMVideoProcessor(**kw)
    proc = SmolVLMProcessor(image_processor=ip, tokenizer=tok, video_processor=vp,
                            image_seq_len=_tokens_per_tile("smolvlm"), chat_template=SMOLVLM_TEMPLATE)  # fmt: skip
    config = SmolVLMConfig(
        text_config=text_config(tok, model_type="llama"),
        vision_config=_vision("smolvlm"),
        scale_factor=GEOMETRY["smolvlm"][2],
        image_token_id=proc.image_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def make_vision_local(model) -> None:
    """Zero the vision tower's attention output projections: each patch's feature (and so each
    token, the pixel shuffle of its scale x scale patches) then depends only on its own pixels."""
    n = 0
    for name, mod in model.model.vision_model.named_modules():
        if name.endswith("self_attn.out_proj"):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


FAMILIES = {
    "idefics3": TinyFamily(build_idefics3, make_vision_local, SIZES["idefics3"]),
    "smolvlm": TinyFamily(build_smolvlm, make_vision_local, SIZES["smolvlm"]),
}
