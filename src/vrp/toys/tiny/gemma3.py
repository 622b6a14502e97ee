"""A tiny Gemma 3 model (``Gemma3ForConditionalGeneration``, real processor), random weights.

The processor writes each image as ``\\n\\n<start_of_image>`` + ``mm_tokens_per_image``
``<image_soft_token>`` + ``<end_of_image>\\n\\n``. Every image is squashed to the image
processor's square size (32 x 32 here, aspect ratio not kept); the SigLIP tower cuts it into
8 x 8 patches of 4 px and the projector average-pools 2 x 2 of them, so each image is a fixed
4 x 4 grid of soft tokens, one per 8 x 8 pixels of the resized image.

The language model mixes both attention kinds as the real one does (sliding-window blocks 0
and 2, global blocks 1 and 3). Its window is wider than the tests' prompts by default, so
that every key stays in the cache; :func:`build_gemma3` takes a small ``sliding_window`` for
the tests that need the window to cut keys.
"""

from __future__ import annotations

import torch

from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import chat_template, text_config, word_tokenizer

BOI, EOI, SOFT = "<start_of_image>", "<end_of_image>", "<image_soft_token>"
TURN_START, TURN_END = "<start_of_turn>", "<end_of_turn>"
# as the released template: <bos> first, then the turns; the image placeholder is <start_of_image>,
# which the processor expands
GEMMA3_TEMPLATE = "{{ bos_token }}" + chat_template(TURN_START, TURN_END, BOI)
IMAGE_SIZE, PATCH, TOKENS_PER_IMAGE = 32, 4, 16  # 8 x 8 patches, pooled 2 x 2 -> a 4 x 4 grid
SIZES = ((40, 24), (24, 44))  # non-square both ways (both are squashed to 32 x 32)
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
DEFAULT_WINDOW = 512


def _tokenizer():
    return word_tokenizer(
        bos="<bos>",
        add_bos=True,
        eos="<eos>",
        pad="<pad>",
        specials=[TURN_START, TURN_END],
        named={"boi_token": BOI, "eoi_token": EOI, "image_token": SOFT},
        extra_words=["here", "original", "crops", "help", "you", "see", "better"],  # pan-and-scan's text
    )


def build_gemma3(seed: int = 0, sliding_window: int = DEFAULT_WINDOW):
    """(model, processor) of a tiny Gemma 3, random weights seeded by ``seed``.

    Args:
        sliding_window: the sliding-window blocks' window (blocks 0 and 2).
    """
    from transformers import AutoModelForImageTextToText, Gemma3Config, Gemma3ImageProcessor, Gemma3Processor

    tok = _tokenizer()
    ip = Gemma3ImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    proc = Gemma3Processor(
        image_processor=ip, tokenizer=tok, chat_template=GEMMA3_TEMPLATE, image_seq_length=TOKENS_PER_IMAGE
    )
    config = Gemma3Config(
        text_config=text_config(
            tok,
            model_type="gemma3_text",
            sliding_window=sliding_window,
            layer_types=LAYER_TYPES,
            query_pre_attn_scalar=32,
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
        ),
        mm_tokens_per_image=TOKENS_PER_IMAGE,
        image_token_index=tok.image_token_id,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():  # the projector's weight starts at zero (no image effect): give it one
        w = model.model.multi_modal_projector.mm_input_projection_weight
        w.normal_(0.0, w.shape[0] ** -0.5)
    return model, proc


def make_vision_local(model) -> None:
    """Zero the SigLIP tower's attention output projections: each soft token then depends
    only on the patches pooled into it."""
    n = 0
    for name, mod in model.model.vision_tower.named_modules():
        if name.endswith("self_attn.out_proj"):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


FAMILIES = {"gemma3": TinyFamily(build_gemma3, make_vision_local, SIZES)}
