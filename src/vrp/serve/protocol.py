"""The chat-completions request, checked: one user message holding the question and one image.

Every refusal is a :class:`RequestError` carrying the HTTP status, a machine-readable code
(also the ``kind`` label of ``vrp_request_errors_total``) and a message that says what to do;
the app turns it into ``{"error": {"message", "type", "code", "param"}}``, the shape that
OpenAI-style clients read. Pure functions, no web framework: the tests call them directly.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

# request fields understood; anything else is refused (never silently ignored)
FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "seed",
    "user",
}
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<data>.*)$", re.S)


class RequestError(Exception):
    """A request the server refuses (4xx) or could not answer (5xx).

    Attributes:
        status: the HTTP status.
        code: a short machine-readable kind (``malformed_json``, ``image_too_large``, ...).
        message: what was wrong and what to do.
        param: where in the request (``messages[0].content[1]``), or None.
    """

    def __init__(self, status: int, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "code": self.code, "param": self.param}}


@dataclass(frozen=True)
class ImageRef:
    """Where a request's image is: decoded bytes of a data URL, or a local path (unchecked yet)."""

    data: bytes | None = None
    path: str | None = None
    param: str = "messages"


@dataclass(frozen=True)
class ChatRequest:
    """What a chat-completion request asks: the question, its image, the answer-length cap."""

    question: str
    image: ImageRef
    max_tokens: int | None = None


def _bad(code: str, message: str, param: str | None = None, status: int = 400) -> RequestError:
    return RequestError(status, code, message, param)


def parse_chat_request(doc: Any, model_name: str, max_image_bytes: int) -> ChatRequest:
    """Check a decoded JSON request body and extract the question and the image reference.

    Args:
        doc: the decoded body.
        model_name: the served model's name (a request naming another model is refused, 404).
        max_image_bytes: largest decoded image accepted (a bigger data URL is refused, 413).

    Raises:
        RequestError: what is wrong, with its status and code.
    """
    if not isinstance(doc, dict):
        raise _bad("invalid_request", f"the request body must be a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - FIELDS)
    if unknown:
        raise _bad(
            "unsupported_parameter",
            f"unsupported request field(s) {unknown}; vrp serve understands {sorted(FIELDS)}",
            unknown[0],
        )
    model = doc.get("model")
    if model is not None and model != model_name:
        raise _bad(
            "model_not_found", f"model {model!r} is not served here; this server serves {model_name!r}", "model", 404
        )
    _check_generation(doc)
    max_tokens = doc.get("max_completion_tokens", doc.get("max_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise _bad("invalid_value", f"max_tokens must be an integer >= 1, got {max_tokens!r}", "max_tokens")
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("invalid_request", "messages must be a non-empty list of {role, content} objects", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad("invalid_request", "each message must be an object with a role and content", f"messages[{i}]")
    roles = [m["role"] for m in messages]
    if roles != ["user"]:
        raise _bad(
            "unsupported_messages",
            f"vrp serve answers one question about one image: send exactly one user message (got roles {roles}); "
            "system and assistant turns are not supported, since the monitor's probe was trained on the model's "
            "single-turn prompt",
            "messages",
        )
    question, image = _user_content(messages[0].get("content"), "messages[0].content", max_image_bytes)
    return ChatRequest(question, image, max_tokens)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_generation(doc: dict) -> None:
    """Sampling options: the monitor answers greedily (its p_correct is calibrated on greedy answers)."""
    greedy = "vrp serve answers greedily: p_correct is calibrated on the greedy answer"
    t = doc.get("temperature")
    if t is not None and (not _is_number(t) or t != 0):
        raise _bad("unsupported_parameter", f"temperature must be 0 or absent, got {t!r} ({greedy})", "temperature")
    p = doc.get("top_p")
    if p is not None and (not _is_number(p) or p != 1):
        raise _bad("unsupported_parameter", f"top_p must be 1 or absent, got {p!r} ({greedy})", "top_p")
    n = doc.get("n")
    if n is not None and n != 1:
        raise _bad("unsupported_parameter", f"n must be 1 or absent, got {n!r} (one greedy answer per request)", "n")
    if doc.get("stream") not in (None, False):
        raise _bad("unsupported_parameter", "streaming is not supported: send stream false or leave it out", "stream")


def _user_content(content: Any, param: str, max_image_bytes: int) -> tuple[str, ImageRef]:
    if isinstance(content, str):
        raise _bad("missing_image", "the user message holds no image: send content as a list of a text part "
                   "and one image_url part", param)  # fmt: skip
    if not isinstance(content, list) or not content:
        raise _bad("invalid_request", "the user message's content must be a non-empty list of parts", param)
    texts, images = [], []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise _bad("invalid_request", "a text part needs a string 'text'", where)
            texts.append(part["text"].strip())
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str) or not url:
                raise _bad("invalid_request", "an image_url part needs image_url.url (a data URL or a path)", where)
            images.append((url, where))
        else:
            raise _bad("unsupported_content", f"content parts must be of type text or image_url, got {kind!r}", where)
    if not images:
        raise _bad(
            "missing_image", "the user message holds no image_url part: the monitor answers about one image", param
        )
    if len(images) > 1:
        raise _bad("too_many_images", f"the user message holds {len(images)} images; send exactly one", images[1][1])
    question = " ".join(t for t in texts if t)
    if not question:
        raise _bad("missing_question", "the user message holds no question text", param)
    return question, _image_ref(*images[0], max_image_bytes)


def _image_ref(url: str, param: str, max_image_bytes: int) -> ImageRef:
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if m is None or ";base64" not in m["params"]:
            raise _bad("invalid_image_url", "a data URL must read data:image/TYPE;base64,DATA", param)
        if m["mime"] and not m["mime"].startswith("image/"):
            raise _bad("not_an_image", f"the data URL's media type is {m['mime']!r}, not an image", param)
        data = m["data"]
        if len(data) * 3 // 4 > max_image_bytes + 3:  # refuse before decoding
            raise _too_big(len(data) * 3 // 4, max_image_bytes, param)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _bad("invalid_image_url", "the data URL's payload is not valid base64", param) from None
        if len(raw) > max_image_bytes:
            raise _too_big(len(raw), max_image_bytes, param)
        return ImageRef(data=raw, param=param)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url) and not url.startswith("file://"):
        raise _bad("remote_url_refused", "remote image URLs are not fetched: send a base64 data URL", param)
    return ImageRef(path=url.removeprefix("file://"), param=param)


def _too_big(size: int, limit: int, param: str) -> RequestError:
    return _bad("image_too_large", f"the image is {size} bytes, over the server's limit of {limit} bytes", param, 413)


def read_image(ref: ImageRef, root: Path | None, max_image_bytes: int, max_pixels: int) -> Image.Image:
    """The request's image, fully decoded as RGB (what ``vrp run`` and the monitor see).

    A path is read only under ``root`` (the server's ``--allow-paths``): it is resolved, symlinks
    included, before the check, so neither ``..`` nor a link escapes the root; a path outside it
    is refused whether or not it exists. The pixel count is checked before decoding.

    Raises:
        RequestError: no root, a path outside it, a missing or non-regular file, a file or image
            over the limits, or bytes that are not a complete image.
    """
    data = ref.data if ref.data is not None else _read_path(ref, root, max_image_bytes)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise _bad("image_too_large", f"the image is {w}x{h} = {w * h} pixels, over the server's limit of "
                           f"{max_pixels}", ref.param, 413)  # fmt: skip
            im.load()
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise _bad("image_too_large", f"image refused as a decompression bomb: {e}", ref.param, 413) from None
    except Image.UnidentifiedImageError:
        raise _bad("not_an_image", "the image data is not an image format this server can read", ref.param) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise _bad("corrupt_image", f"the image cannot be decoded (truncated or corrupt): {e}", ref.param) from None


def _read_path(ref: ImageRef, root: Path | None, max_image_bytes: int) -> bytes:
    if root is None:
        raise _bad("paths_not_allowed", "local image paths are not accepted by this server (start it with "
                   "--allow-paths DIR to allow files under DIR); send a base64 data URL", ref.param, 403)  # fmt: skip
    given = Path(ref.path or "")
    real = (given if given.is_absolute() else root / given).resolve()  # symlinks and .. resolved first
    if not real.is_relative_to(root):
        raise _bad("path_outside_root", f"the image path {ref.path!r} is outside the allowed folder", ref.param, 403)
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise _bad("image_not_found", f"no image file {ref.path!r} under the allowed folder", ref.param) from None
    except OSError as e:
        raise _bad("image_not_found", f"cannot open the image {ref.path!r}: {e.strerror}", ref.param) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _bad("image_not_found", f"the image path {ref.path!r} is not a regular file", ref.param)
        if st.st_size > max_image_bytes:
            raise _too_big(st.st_size, max_image_bytes, ref.param)
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object closes it
            data = f.read(max_image_bytes + 1)
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_image_bytes:  # grew since fstat
        raise _too_big(len(data), max_image_bytes, ref.param)
    return data
