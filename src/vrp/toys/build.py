"""Build tiny random-init VLMs of the three real HF architecture classes, with real processors.

Each toy model is a genuine ``LlavaForConditionalGeneration``,
``PaliGemmaForConditionalGeneration`` or ``Qwen2VLForConditionalGeneration`` with a real
processor (a word-level ``tokenizers`` tokenizer wrapped in ``PreTrainedTokenizerFast``,
the family's own image processor and prompt format). Saved with ``save_pretrained`` they
load back with ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` exactly
like hub checkpoints.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from vrp.world.questions import RELATIONS
from vrp.world.scene import COLOURS, SHAPES, SIZES

ARCHS: tuple[str, ...] = ("llava", "paligemma", "qwen2vl")
TOY_NAMES: dict[str, str] = {"toy-llava": "llava", "toy-paligemma": "paligemma", "toy-qwen2vl": "qwen2vl"}

# Words of the ShapesWorld prompts and answers (lower-cased by the tokenizer's normalizer).
_WORDS = [
    "is",
    "there",
    "a",
    "an",
    "in",
    "the",
    "image",
    "?",
    "how",
    "many",
    "objects",
    "are",
    "where",
    "relative",
    "to",
    "what",
    "colour",
    "color",
    "describe",
    ".",
    ",",
    ":",
    "of",
    "shape",
    "shapes",
    "object",
    "left",
    "right",
    "above",
    "below",
    "yes",
    "no",
    "user",
    "assistant",
    "system",
    "picture",
    "photo",
    "this",
    "that",
    "it",
    "and",
    "or",
    "which",
    "on",
    "side",
    "top",
    "bottom",
    "answer",
    "question",
    "with",
    "one",
    "word",
    "number",
    "single",
]
NEWLINE_TOKEN = "ċ"  # the tokenizer maps "\n" to this word so prompt layout survives


def world_vocab() -> list[str]:
    words = list(_WORDS) + list(SHAPES) + list(COLOURS) + list(SIZES) + list(RELATIONS)
    words += [str(d) for d in range(10)] + [NEWLINE_TOKEN]
    seen: dict[str, None] = {}
    for w in words:
        seen.setdefault(w, None)
    return list(seen)


_FAMILY_SPECIALS = {
    "llava": {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "unk": "<unk>", "extra": ["<image>"]},
    "paligemma": {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>", "extra": ["<image>"]},
    "qwen2vl": {
        "bos": None,
        "eos": "<|im_end|>",
        "pad": "<|endoftext|>",
        "unk": "<unk>",
        "extra": ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    },
}

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}"
    "{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{% if message['role'] != 'user' %}</s>{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
QWEN2VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(arch: str):
    """A word-level fast tokenizer over the world's vocabulary with the family's specials."""
    from transformers import PreTrainedTokenizerFast

    sp = _FAMILY_SPECIALS[arch]
    specials = [t for t in (sp["pad"], sp["eos"], sp["bos"], sp["unk"]) if t] + sp["extra"]
    vocab = {t: i for i, t in enumerate(specials + world_vocab())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=sp["unk"]))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("\n", f" {NEWLINE_TOKEN} "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated")]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace(NEWLINE_TOKEN, "\n"), decoders.WordPiece(prefix="##", cleanup=True)]
    )
    if arch == "llava":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{sp['bos']} $A", pair=f"{sp['bos']} $A $B", special_tokens=[(sp["bos"], vocab[sp["bos"]])]
        )
    tok.add_special_tokens(specials)
    kwargs = {k + "_token": v for k, v in sp.items() if k != "extra" and v}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if arch == "qwen2vl":
        fast.add_bos_token = False
    return fast


def build_processor(arch: str, image_size: int = 48, patch: int = 12):
    """The family's real processor around the world tokenizer."""
    tok = build_tokenizer(arch)
    if arch == "llava":
        from transformers import CLIPImageProcessor, LlavaProcessor

        ip = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=image_size)
        return LlavaProcessor(
            image_processor=ip,
            tokenizer=tok,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=LLAVA_CHAT_TEMPLATE,
        )
    if arch == "paligemma":
        from transformers import PaliGemmaProcessor, SiglipImageProcessor

        ip = SiglipImageProcessor(size={"height": image_size, "width": image_size})
        ip.image_seq_length = (image_size // patch) ** 2
        return PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    if arch == "qwen2vl":
        from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

        # Qwen2-VL patches are half the merged token's side: the 2x2 merge gives one
        # token per ``patch x patch`` pixels, as the other two families.
        qp = patch // 2
        size = {"shortest_edge": patch * patch, "longest_edge": 160 * 160}
        ip = Qwen2VLImageProcessor(size=size, patch_size=qp, merge_size=2, temporal_patch_size=2)
        vp = Qwen2VLVideoProcessor(size=size, patch_size=qp, merge_size=2, temporal_patch_size=2)
        return Qwen2VLProcessor(
            image_processor=ip, tokenizer=tok, video_processor=vp, chat_template=QWEN2VL_CHAT_TEMPLATE
        )
    raise ValueError(f"unknown toy architecture {arch!r}; supported: {', '.join(ARCHS)}")


def build_config(arch: str, processor, image_size: int = 48, patch: int = 12):
    """A tiny config of the real family class (vocab sized to the processor's tokenizer)."""
    tok = processor.tokenizer
    vocab = len(tok)
    text = dict(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch,
    )
    if arch == "llava":
        from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

        return LlavaConfig(
            vision_config=CLIPVisionConfig(**vision, projection_dim=64),
            text_config=LlamaConfig(**text, num_key_value_heads=4),
            image_token_id=tok.convert_tokens_to_ids("<image>"),
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            projector_hidden_act="gelu",
            tie_word_embeddings=False,
        )
    if arch == "paligemma":
        from transformers import GemmaConfig, PaliGemmaConfig, SiglipVisionConfig

        return PaliGemmaConfig(
            vision_config=SiglipVisionConfig(**vision, projection_dim=128),
            text_config=GemmaConfig(**text, num_key_value_heads=1, head_dim=32),
            image_token_id=processor.image_token_id,
            projection_dim=128,
            hidden_size=128,
            tie_word_embeddings=False,
        )
    if arch == "qwen2vl":
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig(
            text_config=dict(
                **text,
                num_key_value_heads=2,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]},
            ),
            vision_config=dict(
                depth=2,
                embed_dim=64,
                hidden_size=128,
                num_heads=4,
                mlp_ratio=3,
                patch_size=patch // 2,
                spatial_merge_size=2,
                temporal_patch_size=2,
                in_channels=3,
            ),
            image_token_id=processor.image_token_id,
            video_token_id=processor.video_token_id,
            vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
            tie_word_embeddings=False,
        )
    raise ValueError(f"unknown toy architecture {arch!r}; supported: {', '.join(ARCHS)}")


def build_toy(arch: str, seed: int = 0, image_size: int = 48, patch: int = 12):
    """Return (model, processor) for a freshly initialised toy VLM of ``arch``."""
    import torch
    from transformers import AutoModelForImageTextToText

    processor = build_processor(arch, image_size, patch)
    config = build_config(arch, processor, image_size, patch)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    return model, processor
