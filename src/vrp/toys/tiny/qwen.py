"""Tiny Qwen2.5-VL, Qwen3-VL and Qwen3.5 models (real classes, real processors), random weights.

The three share Qwen2-VL's prompt layout (``<|vision_start|>`` + one ``<|image_pad|>`` per
merged token + ``<|vision_end|>``) and its geometry source (``image_grid_thw``). Images are
resized to multiples of ``patch * merge`` (12 px here), so a 72 x 48 image gives a 4 x 6 grid
of merged tokens, one per 12 x 12 pixels as in the toys.
"""

from __future__ import annotations

import torch

from vrp.toys.tiny import TinyFamily
from vrp.toys.tiny._tokenizer import chat_template, text_config, word_tokenizer

QWEN_SPECIALS = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
QWEN_TEMPLATE = chat_template("<|im_start|>", "<|im_end|>", "<|vision_start|><|image_pad|><|vision_end|>")
PATCH, MERGE = 6, 2
SIZES = ((72, 48), (48, 84))  # non-square both ways
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}


def _tokenizer():
    return word_tokenizer(eos="<|im_end|>", pad="<|endoftext|>", specials=QWEN_SPECIALS)


def _image_processor(cls=None, patch: int = PATCH, max_pixels: int = 160 * 160, **kw):
    from transformers import Qwen2VLImageProcessor

    cls = cls or Qwen2VLImageProcessor
    size = {"shortest_edge": (patch * MERGE) ** 2, "longest_edge": max_pixels}
    return cls(size=size, patch_size=patch, merge_size=MERGE, temporal_patch_size=2, **kw)


def _ids(tok, processor) -> dict:
    return dict(
        image_token_id=processor.image_token_id,
        video_token_id=processor.video_token_id,
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def build_qwen2_5_vl(seed: int = 0, patch: int = PATCH, max_pixels: int = 160 * 160):
    """(model, processor) of a tiny Qwen2.5-VL; ``patch`` and ``max_pixels`` set the image geometry
    (the benchmarks use the real checkpoints' patch 14, with the windowed tower's window 112)."""
    from transformers import AutoModelForImageTextToText, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

    tok = _tokenizer()
    ip = _image_processor(patch=patch, max_pixels=max_pixels)
    vp = Qwen2VLVideoProcessor(size=ip.size, patch_size=patch, merge_size=MERGE, temporal_patch_size=2)
    proc = Qwen2_5_VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=text_config(tok, rope_parameters=MROPE),
        # a windowed vision tower, as the real one: windows of 4 x 4 patches, block 1 with full attention
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            patch_size=patch,
            spatial_merge_size=MERGE,
            temporal_patch_size=2,
            window_size=4 * patch,
            out_hidden_size=128,
            fullatt_block_indexes=[1],
        ),
        **_ids(tok, proc),
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def build_qwen3_vl(seed: int = 0):
    from transformers import AutoModelForImageTextToText, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tok = _tokenizer()
    ip = _image_processor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    vp = Qwen3VLVideoProcessor(size=ip.size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN_TEMPLATE)
    config = Qwen3VLConfig(
        text_config=text_config(tok, rope_parameters={**MROPE, "mrope_interleaved": True}),
        # deepstack: the vision tower's blocks 0 and 1 also feed decoder blocks 0 and 1 (added at image positions)
        vision_config=dict(
            depth=2,
            hidden_size=64,
            intermediate_size=128,
            num_heads=4,
            patch_size=PATCH,
            spatial_merge_size=MERGE,
            temporal_patch_size=2,
            out_hidden_size=128,
            num_position_embeddings=256,
            deepstack_visual_indexes=[0, 1],
        ),
        **_ids(tok, proc),
    )
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


def zero_vision_mixing(model) -> None:
    """Zero the vision tower's attention output projections: each merged token then depends
    only on its own patches."""
    n = 0
    for name, mod in model.model.visual.named_modules():
        if name.endswith("attn.proj"):
            torch.nn.init.zeros_(mod.weight)
            torch.nn.init.zeros_(mod.bias)
            n += 1
    if not n:
        raise RuntimeError("no vision attention projection found")


def _qwen3_5_tokenizer():
    """A real ``Qwen3_5Tokenizer``: transformers rebuilds Qwen3.5's byte-level BPE from its vocab
    and merges whatever class a checkpoint names, so the tiny model gets a byte-level BPE
    trained here (offline, in milliseconds) on ShapesWorld's words."""
    import json

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen3_5.tokenization_qwen3_5 import PRETOKENIZE_REGEX, Qwen3_5Tokenizer

    from vrp.toys.build import NEWLINE_TOKEN, world_vocab

    words = [w for w in world_vocab() if w != NEWLINE_TOKEN]
    specials = ["<|endoftext|>", "<|im_end|>", *QWEN_SPECIALS]
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    trainer = trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([" ".join(words)] * 3 + words + ["\n"], trainer=trainer)
    merges = [tuple(m) for m in json.loads(bpe.to_str())["model"]["merges"]]
    tok = Qwen3_5Tokenizer(vocab=bpe.get_vocab(), merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials[2:]})
    return tok


def build_qwen3_5(seed: int = 0):
    """Qwen3.5: a hybrid language model (Gated DeltaNet linear-attention blocks and softmax
    attention blocks; here blocks 0-2 linear, block 3 softmax) behind Qwen3-VL's vision tower."""
    from transformers import AutoModelForImageTextToText, Qwen3_5Config, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tok = _qwen3_5_tokenizer()
    ip = _image_processor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    vp = Qwen3VLVideoProcessor(size=ip.size, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    proc = Qwen3VLProcessor(image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN_TEMPLATE)
    text = text_config(
        tok,
        rope_parameters={**MROPE, "mrope_interleaved": True, "partial_rotary_factor": 1.0},
        layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4,
    )  # fmt: skip
    config = Qwen3_5Config(
        text_config=text,
        vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=PATCH,
                           spatial_merge_size=MERGE, temporal_patch_size=2, out_hidden_size=128,
                           num_position_embeddings=256),
        **_ids(tok, proc),
    )  # fmt: skip
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(config), proc


FAMILIES = {
    "qwen2_5_vl": TinyFamily(build_qwen2_5_vl, zero_vision_mixing, SIZES),
    "qwen3_vl": TinyFamily(build_qwen3_vl, zero_vision_mixing, SIZES),
    "qwen3_5": TinyFamily(build_qwen3_5, zero_vision_mixing, SIZES),
}
