"""A tiny Mistral 3 model (``Mistral3ForConditionalGeneration``: Pixtral vision tower + Mistral
decoder, real Pixtral processor), random weights.

Images keep their aspect ratio: one larger than ``longest_edge`` (96 px here) is scaled down to
fit, then each side is rounded up to a multiple of ``patch * spatial_merge`` (6 * 2 = 12 px).
The prompt holds one ``[IMG]`` per merged 12 x 12 cell, row by row, each row followed by
``[IMG_BREAK]`` and the last ``[IMG_BREAK]`` replaced by ``[IMG_END]``: a 72 x 48 image is 4
rows of 6, a 44 x 80 one is resized to 48 x 84 (7 rows of 4), a 130 x 60 one to 96 x 48
(4 rows of 8).
"""

from __future__ import annotations

import torch

from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import text_config, word_tokenizer

IMG, BREAK, END = "[IMG]", "[IMG_BREAK]", "[IMG_END]"
INST, INST_END = "[INST]", "[/INST]"
# Mistral's instruction format, as the released template: <s>[INST] (image) question [/INST], the answer then </s>
MISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}[INST]"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}[IMG]{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}[/INST]{% else %}"
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}"
)
PATCH, MERGE, LONGEST_EDGE = 6, 2, 96
SIZES = ((72, 48), (44, 80), (130, 60))  # landscape, portrait (rounded up), larger than longest_edge


def _tokenizer():
    return word_tokenizer(bos="<s>", add_bos=True, eos="</s>", pad="<pad>", specials=[INST, INST_END, IMG, BREAK, END])


def build_mistral3(seed: int = 0):
    """(model, processor) of a tiny Mistral 3, random weights seeded by ``seed``."""
    from transformers import AutoModelForImageTextToText, Mistral3Config, PixtralImageProcessor, PixtralProcessor

    tok = _tokenizer()
    ip = PixtralImageProcessor(size={"longest_edge": LONGEST_EDGE}, patch_size={"height": PATCH, "width": PATCH})
    proc = PixtralProcessor(
        image_processor=ip, tokenizer=tok, patch_size=PATCH, spatial_merge_size=MERGE, chat_template=MISTRAL3_TEMPLATE
    )
    config = Mistral3Config(
        text_config=text_config(tok, model_type="mistral", sliding_window=None),
        vision_config=dict(
            model_type="pixtral",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            head_dim=16,
            image_size=LONGEST_EDGE,
            patch_size=PATCH,
        ),
        spatial_merge_size=MERGE,
        image_token_index=proc.image_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def make_vision_local(model) -> None:
    """Zero the Pixtral tower's attention output projections: each merged token then depends
    only on its own 2 x 2 patches."""
    n = 0
    for name, mod in model.model.vision_tower.named_modules():
        if name.endswith("attention.o_proj"):
            torch.nn.init.zeros_(mod.weight)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


FAMILIES = {"mistral3": TinyFamily(build_mistral3, make_vision_local, SIZES)}
