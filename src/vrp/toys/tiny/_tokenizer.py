"""A word-level tokenizer over ShapesWorld's vocabulary, with any family's special tokens."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from vrp.toys.build import NEWLINE_TOKEN, world_vocab

# A chat template in the common "messages with typed content" shape: each family passes the
# strings its image placeholder and turns use.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ BEGIN }}{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ IMAGE }}"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}{{ END }}\n"
    "{% endfor %}{% if add_generation_prompt %}{{ BEGIN }}assistant\n{% endif %}"
)


def chat_template(begin: str, end: str, image: str) -> str:
    """:data:`CHAT_TEMPLATE` with the family's turn markers and image placeholder filled in."""
    return CHAT_TEMPLATE.replace("{{ BEGIN }}", begin).replace("{{ END }}", end).replace("{{ IMAGE }}", image)


def word_tokenizer(
    *,
    eos: str,
    pad: str,
    unk: str = "<unk>",
    bos: str | None = None,
    add_bos: bool = False,
    specials: list[str] = (),
    named: dict[str, str] | None = None,
    extra_words: list[str] = (),
):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is the family's special tokens, then the
    world's words (lower-cased; "\\n" kept as a word so prompt layout survives).

    Args:
        eos, pad, unk, bos: the special tokens of those roles (bos None: the family has none).
        add_bos: prepend ``bos`` to every encoded text.
        specials: other special tokens (image placeholders, markers, turn tokens).
        named: extra special tokens the processor reads as tokenizer attributes
            (``{"image_token": "<image>", ...}``: ``tokenizer.image_token`` and ``.image_token_id``).
        extra_words: ordinary words the family's prompts use besides the world's.
    """
    from transformers import PreTrainedTokenizerFast

    named = dict(named or {})
    roles = [t for t in (pad, eos, bos, unk) if t]
    all_specials = list(dict.fromkeys([*roles, *specials, *named.values()]))
    words = [w for w in dict.fromkeys([*world_vocab(), *extra_words]) if w not in all_specials]
    vocab = {t: i for i, t in enumerate(all_specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.normalizer = normalizers.Sequence([normalizers.Replace("\n", f" {NEWLINE_TOKEN} "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^\w\s]"), behavior="isolated")]
    )
    tok.decoder = decoders.Sequence(
        [decoders.Replace(NEWLINE_TOKEN, "\n"), decoders.WordPiece(prefix="##", cleanup=True)]
    )
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    tok.add_special_tokens(all_specials)
    kwargs = {f"{k}_token": v for k, v in (("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)) if v}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=named, **kwargs)
    fast.add_bos_token = add_bos
    return fast


def text_config(tok, **overrides) -> dict:
    """The tiny language model every family shares: 4 blocks, width 128, 4 heads (2 KV)."""
    cfg = dict(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    return cfg
