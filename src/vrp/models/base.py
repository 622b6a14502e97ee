"""The adapter interface and the explicit registry of supported model families.

An adapter knows one HF architecture family: how to load it, how to lay out a prompt
for one image and one question, and which modules hold the parts the analyses need.
Family-specific knowledge lives here and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vrp.config import DEVICE
from vrp.models.grids import ImageGrid, full_box, single_view

_REGISTRY: dict[str, type[ModelAdapter]] = {}

# The module paths every supported family shares (HF's VLM classes wrap the language model
# the same way); adapters extend or override them.
LANGUAGE_MODULES: dict[str, str] = {
    "decoder_layers": "model.language_model.layers",
    "final_norm": "model.language_model.norm",
    "unembed": "lm_head",
}


class UnsupportedModelError(ValueError):
    """The model's ``model_type`` has no adapter."""


class NotAModelError(ValueError):
    """The path given as a model is not a loadable model directory."""


def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: register an adapter under each of its ``model_types``."""
    for mt in cls.model_types:
        if mt in _REGISTRY:
            raise ValueError(f"model_type {mt!r} already registered by {_REGISTRY[mt].__name__}")
        _REGISTRY[mt] = cls
    return cls


# Model types vrp knows and refuses, with the reason (a clear error, before any loading).
REFUSED: dict[str, str] = {
    "mllama": (
        "Llama 3.2 Vision (mllama) shows the image to the language model only through cross-attention "
        "layers over the vision tower's tile features: the prompt holds one <|image|> token, not image "
        "tokens, so there is no self-attention over image patches, which is what vrp's attention signals, "
        "maps and patch masking read. Capturing the cross-attention rows over each tile's patch grid is "
        "not built."
    ),
    "internvl_chat": (
        "this is InternVL's original remote-code checkpoint format; use the transformers-native '-hf' "
        "conversion (model_type 'internvl'), e.g. OpenGVLab/InternVL3-1B-hf"
    ),
}


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(model_type: str) -> type[ModelAdapter]:
    """The adapter class of a ``model_type``; a clear error listing the supported ones."""
    try:
        return _REGISTRY[model_type]
    except KeyError:
        why = f" ({REFUSED[model_type]})" if model_type in REFUSED else ""
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported{why}; supported model types: "
            f"{', '.join(supported_model_types())}"
        ) from None


def read_model_type(path: str | Path) -> str:
    """Read ``model_type`` from a local model directory's config.json (clear errors)."""
    p = Path(path)
    cfg = p / "config.json"
    if not p.exists():
        raise NotAModelError(f"model path {str(p)!r} does not exist")
    if not p.is_dir() or not cfg.is_file():
        raise NotAModelError(
            f"{str(p)!r} is not a model directory: expected a folder with config.json (as written by save_pretrained)"
        )
    try:
        data = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise NotAModelError(f"{cfg} is not valid JSON: {e}") from e
    mt = data.get("model_type") if isinstance(data, dict) else None
    if not isinstance(mt, str):
        raise NotAModelError(f"{cfg} has no 'model_type'")
    return mt


@dataclass
class ModelAdapter:
    """A loaded model with its processor, seen through one family's conventions."""

    model: Any
    processor: Any
    path: str

    model_types: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = ""
    # Canonical name -> dotted module path inside the HF model; checked at load time.
    module_paths: ClassVar[dict[str, str]] = {}

    @classmethod
    def load(cls, path: str | Path, dtype: Any = None, device: str = DEVICE) -> ModelAdapter:
        """Load model and processor with ``from_pretrained`` and check the module map.

        Raises:
            NotAModelError: the folder does not hold a loadable processor or model (a missing or
                corrupt file: transformers' message is kept).
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        kwargs = {"dtype": dtype} if dtype is not None else {}
        try:
            processor = AutoProcessor.from_pretrained(str(path))
            model = AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
        except (OSError, ValueError, KeyError) as e:
            raise NotAModelError(f"cannot load the {cls.family} model at {path}: {type(e).__name__}: {e}") from e
        model = model.to(device).eval()
        adapter = cls(model=model, processor=processor, path=str(path))
        adapter.check_modules()
        return adapter

    def __repr__(self) -> str:
        tc = self.text_config
        return (
            f"{type(self).__name__}({self.path!r}: {type(self.model).__name__}, {self.n_blocks} blocks, "
            f"d_model {tc.hidden_size}, {str(self.model.dtype).removeprefix('torch.')} on {self.model.device})"
        )

    def check_modules(self) -> None:
        """Fail loudly if a module this adapter maps is missing from the model."""
        for name, dotted in self.module_paths.items():
            try:
                self.model.get_submodule(dotted)
            except AttributeError as e:
                raise UnsupportedModelError(
                    f"{type(self.model).__name__} at {self.path} has no module {dotted!r} "
                    f"({name}) that the {self.family} adapter expects"
                ) from e

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Every token id that ends an answer: the tokenizer's EOS and the generation config's
        (``generate`` stops at either; a chat checkpoint often ends its turns with a token the
        tokenizer does not call EOS)."""
        ids = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        eos = self.tokenizer.eos_token_id
        return frozenset(int(i) for i in ids) | (frozenset() if eos is None else frozenset({int(eos)}))

    def prompt(self, question: str) -> str:
        """The text for one image followed by one question, ready for the processor: the
        checkpoint's own chat template when it ships one (a user turn holding the image and
        the question, then the assistant's turn), else the family's :meth:`plain_prompt`."""
        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return self.plain_prompt(question)

    def plain_prompt(self, question: str) -> str:
        """The family's prompt for a checkpoint without a chat template."""
        raise UnsupportedModelError(
            f"{self.family}: the processor at {self.path} has no chat template, and this family has no "
            "documented plain prompt format; add the checkpoint's chat_template.jinja"
        )

    # ---- geometry and module map used by the capture engine --------------------------

    @property
    def text_config(self) -> Any:
        return self.model.config.text_config

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    def decoder_layers(self) -> list:
        return list(self.model.get_submodule(self.module_paths["decoder_layers"]))

    @property
    def n_blocks(self) -> int:
        """Number of decoder blocks of the language model."""
        return len(self.decoder_layers())

    # Whether sampling may continue from the greedy pass's key/value cache cut back to the
    # prompt (not where a block keeps a recurrent state, which cannot be cut back).
    continues_from_cache: ClassVar[bool] = True

    @property
    def supervised_heads(self) -> tuple[tuple[int, int], ...]:
        """The ``(decoder block, query head)`` pairs whose attention the checkpoint's training
        supervised (``attention_supervision.json``, :mod:`vrp.models.supervision`): the shipped
        toys' trained heads; ``()`` for a model without the record (every hub model)."""
        from vrp.models.supervision import read_supervised_heads

        return read_supervised_heads(self.path)

    def attention_blocks(self) -> tuple[int, ...]:
        """The decoder blocks whose token mixing is softmax self-attention over the prompt, so
        that they have attention maps (default: every block; a hybrid model's linear-attention
        blocks have none)."""
        return tuple(range(self.n_blocks))

    # Sub-modules of one decoder block (relative dotted paths), shared by the three families.
    # The named sites of vrp.models.sites are read and written on these modules.
    layer_paths: ClassVar[dict[str, str]] = {"attn": "self_attn", "mlp": "mlp", "o_proj": "self_attn.o_proj"}

    def layer_module(self, layer: int, name: str) -> Any:
        """A sub-module of decoder block ``layer`` by canonical name (attn, mlp, o_proj)."""
        if name not in self.layer_paths:
            raise ValueError(f"unknown block sub-module {name!r}; known: {sorted(self.layer_paths)}")
        try:
            return self.decoder_layers()[layer].get_submodule(self.layer_paths[name])
        except AttributeError as e:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} at {self.path}: decoder block {layer} has no "
                f"{self.layer_paths[name]!r} ({name}) that the {self.family} adapter expects"
            ) from e

    def final_norm(self) -> Any:
        return self.model.get_submodule(self.module_paths["final_norm"])

    def unembed(self) -> Any:
        return self.model.get_submodule(self.module_paths["unembed"])

    @property
    def logit_softcap(self) -> float | None:
        """Final-logit soft-capping (Gemma-2 style), or None."""
        return getattr(self.text_config, "final_logit_softcapping", None)

    def logit_lens(self, hidden: Any) -> Any:
        """Logits read from residual vectors ``[..., d]`` through the model's own final norm
        and unembedding, with final-logit soft-capping where the model has it."""
        import torch

        with torch.no_grad():
            h = torch.as_tensor(hidden, dtype=self.unembed().weight.dtype, device=self.model.device)
            logits = self.unembed()(self.final_norm()(h))
            cap = self.logit_softcap
            if cap:
                logits = torch.tanh(logits / cap) * cap
        return logits

    def head_contributions(self, attn_z: Any, direction: Any, blocks: Sequence[int]) -> np.ndarray:
        """Direct logit attribution of every attention head at one position.

        Head ``h`` of block ``l`` writes ``o_h = W_O[:, h] z_h`` (its slice of the output
        projection times its output); where the block's attention write is a post-norm of the
        projection (Gemma 3: ``post_attention_layernorm``), the norm's scale at the block's own
        total output is applied to each head (``norm(x) = x * s(x)`` with ``s`` taken at the
        total, so the heads still sum to the block's write). The contribution is that write
        projected on the readout ``direction``; a bias of the projection belongs to no head.

        Args:
            attn_z: ``[len(blocks), H * head_dim]`` the heads' outputs (site ``attn_z``).
            direction: ``[d]`` the readout direction (``LensReadout.direction``).
            blocks: decoder blocks of the rows of ``attn_z``.

        Returns:
            ``[len(blocks), H]`` float32 contributions in logits.
        """
        import torch

        n_heads = int(self.text_config.num_attention_heads)
        out = []
        with torch.no_grad():
            for row, layer in enumerate(blocks):
                o_proj = self.layer_module(layer, "o_proj")
                w = o_proj.weight.float()  # [d, H * hd]
                z = torch.as_tensor(np.asarray(attn_z[row]), dtype=torch.float32, device=w.device)
                dvec = torch.as_tensor(np.asarray(direction), dtype=torch.float32, device=w.device)
                write_module = self.layer_module(layer, "attn")
                if write_module is not o_proj and not any(m is o_proj for m in write_module.modules()):
                    total = w @ z + (o_proj.bias.float() if o_proj.bias is not None else 0.0)  # the norm's input
                    normed = _apply_float(write_module, total)
                    scale = torch.where(total != 0, normed / torch.where(total != 0, total, 1.0), 0.0)
                    dvec = dvec * scale
                u = w.T @ dvec  # [H * hd]
                out.append((u * z).reshape(n_heads, -1).sum(-1).cpu().numpy())
        return np.asarray(out, dtype=np.float32).reshape(len(blocks), n_heads)

    # What the structural signals read of each image (recorded in a run's manifest).
    canonical_view: ClassVar[str] = "the image's one grid"

    def image_layouts(self, enc: dict) -> list[tuple[int, int, int]]:
        """(rows, cols, leading non-grid tokens) of every image in the batch, in order, for
        families whose image is one contiguous block of ``image_token_id`` (the default
        :meth:`image_grids`).

        ``rows * cols + leading`` is the number of placeholder tokens the image occupies.
        """
        raise NotImplementedError

    def grid_box(self, image_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The pixel box of the original image that a one-grid family's grid spans (default:
        the whole image, a plain resize)."""
        return full_box(image_size)

    def image_grids(self, enc: dict, image_sizes: Sequence[tuple[int, int]]) -> list[list[ImageGrid]]:
        """Per batch row, each of its images as the language model sees it: its views with their
        prompt positions (in the padded batch) and pixel boxes.

        Args:
            enc: the processor's output for the batch.
            image_sizes: ``(width, height)`` of every image of the batch, in processor order.

        Raises a clear error if the placeholder tokens do not match the expected grids. This
        default reads one contiguous block of ``image_token_id`` per image, laid out by
        :meth:`image_layouts`; families with several views or separators override it.
        """
        ids = enc["input_ids"]
        layouts = list(self.image_layouts(enc))
        sizes = self._check_sizes(image_sizes, len(layouts))
        out: list[list[ImageGrid]] = []
        k = 0
        for r in range(ids.shape[0]):
            pos = (ids[r] == self.image_token_id).nonzero().flatten().tolist()
            grids, i = [], 0
            while i < len(pos):
                if k >= len(layouts):
                    raise ValueError(f"{self.family}: row {r} has more image tokens than the processor produced images")
                rows, cols, lead = layouts[k]
                n = rows * cols + lead
                block = pos[i : i + n]
                if len(block) != n or block[-1] - block[0] != n - 1:
                    raise ValueError(
                        f"{self.family}: expected {n} contiguous image tokens for a {rows}x{cols} grid "
                        f"(+{lead} leading) at row {r}, found {len(block)}"
                    )
                grids.append(single_view(rows, cols, block[lead:], self.grid_box(sizes[k]), separators=block[:lead]))
                i += n
                k += 1
            out.append(grids)
        return out

    def _check_sizes(self, image_sizes: Sequence[tuple[int, int]], n_images: int) -> list[tuple[int, int]]:
        sizes = [(int(w), int(h)) for w, h in image_sizes]
        if len(sizes) != n_images:
            raise ValueError(f"{self.family}: {len(sizes)} image sizes for the {n_images} images the processor encoded")
        return sizes

    def generation_state(self) -> dict:
        """Model state that ``generate`` keeps between calls and that a continuation from a
        cached prompt needs (none for most families)."""
        return {}

    def restore_generation_state(self, state: dict, repeat: int) -> None:
        """Set ``state`` back, each batch row repeated ``repeat`` times."""

    def answer_suffix(self, answer: str) -> str:
        """Text appended to ``prompt`` for a teacher-forced answer (training)."""
        return f"{answer}{self.tokenizer.eos_token}"

    def encode(self, images: list, prompts: list[str], padding_side: str = "left") -> dict:
        """Processor call for a batch of (image, prompt) pairs -> model inputs (torch)."""
        self.tokenizer.padding_side = padding_side
        kwargs = self.no_second_bos(prompts)
        return dict(self.processor(images=images, text=prompts, return_tensors="pt", padding=True, **kwargs))

    def no_second_bos(self, prompts: list[str]) -> dict:
        """Tokenizer options for ``prompts``: those that already start with the BOS token (a chat
        template that writes it, as Gemma's and Mistral's do) get no second one."""
        bos = self.tokenizer.bos_token
        return {"add_special_tokens": False} if bos and all(p.startswith(bos) for p in prompts) else {}

    def inputs(self, images: Any, questions: str | Sequence[str]) -> dict:
        """Model inputs for one (image, question) pair or for lists of them: the family's prompt
        around each question, the processor's output left-padded, on the model's device.

        Args:
            images: an image (file path or PIL image) or a list of them.
            questions: a question or a list of them, one per image.
        """
        from vrp.data.images import as_image

        single = isinstance(questions, str)
        images, questions = ([images], [questions]) if single else (list(images), list(questions))
        if len(images) != len(questions):
            raise ValueError(f"{len(images)} images for {len(questions)} questions")
        return self.model_inputs([as_image(im) for im in images], [self.prompt(q) for q in questions])

    def model_inputs(self, images: list, prompts: list[str]) -> dict:
        """:meth:`encode` left-padded (for generation), tensors moved to the model's device."""
        return self.on_model_device(self.encode(images, prompts, padding_side="left"))

    def on_model_device(self, enc: dict) -> dict:
        """``enc`` with its tensors moved to the model's device (other values kept)."""
        return {k: v.to(self.model.device) if hasattr(v, "to") else v for k, v in enc.items()}


def size_field(size: Any, key: str) -> int | None:
    """A field of an image processor's size object (a dict in older processors)."""
    if size is None:
        return None
    v = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(v) if v else None


def _apply_float(module: Any, x: Any) -> Any:
    """``module(x)`` computed in float32 without changing the module (a norm's own precision)."""
    import torch

    p = next(module.parameters(), None)
    with torch.no_grad():
        y = module(x.to(p.dtype if p is not None else x.dtype)[None])[0]
    return y.float()
