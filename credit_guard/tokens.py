"""Counting input tokens the way the provider bills them.

Encodings come from the files this package ships (``credit_guard/data``), checked
against tiktoken's published SHA-256 and built into ``tiktoken.Encoding``
objects here: nothing is downloaded, no cache directory is read, and the
process environment is left alone.  Each encoding is loaded once, lazily, under
a lock; the middleware loads them in a worker thread before the first request
that needs them, never on the event loop.

Text is encoded with ``encode_ordinary``: text such as ``<|endoftext|>`` inside a
user message is counted as the text it is, never raised on.

A count is *exact* where the provider's rendering is known (OpenAI chat framing,
completions, embeddings) and otherwise an upper bound the bill cannot exceed
(``TokenCount.exact`` is False then):

- models without a tiktoken encoding (Claude, Gemini, Llama, Mistral...): UTF-8
  bytes of every text, since a byte-level BPE token holds at least one byte; or,
  with ``price.token_bound.o200k_ratio``, ``ceil(o200k tokens * ratio)``; either
  plus ``margin`` and ``PART_MARGIN`` tokens per message for framing;
- images of unknown size: the worst case of the model family's rule;
- renderings the provider does not publish: whatever ``shapes`` marked inexact.

Two providers add to that: Anthropic bills a tool-use system prompt whenever
``tools`` is non-empty (``_anthropic``, by the resolved model and
``tool_choice``); Mistral models are counted with Mistral's own tokenizer where
the optional ``mistral-common`` is installed (``_mistral``: exact where checked
against the API's figures), and otherwise by the byte bound with the tool
definitions added as the JSON text Mistral's template writes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
from collections.abc import Iterable
from importlib import resources
from typing import NamedTuple

import tiktoken

from . import _anthropic, _mistral
from .prices import ModelPrice, VisionRule
from .shapes import Ask, ImageRef, preamble

__all__ = [
    "TokenCount",
    "EncodingFileError",
    "count_input",
    "count_output",
    "count_text",
    "CountCache",
    "COUNT_CACHE",
    "encoding_for",
    "get_encoding",
    "image_tokens",
    "input_bounds",
    "warm",
    "PART_MARGIN",
    "THREAD_COUNT_BYTES",
]

#: Texts (or bodies) at least this large are counted in a worker thread, off
#: the event loop.
THREAD_COUNT_BYTES = 32 * 1024

#: Framing tokens added per message when bounding a model without a tokenizer.
PART_MARGIN = 16

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"
_SPECS: dict[str, tuple[str, str, str, dict[str, int]]] = {
    "cl100k_base": (
        "cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501 (tiktoken's pattern, verbatim)
        {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": (
        "o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}

# OpenAI model-name prefixes and their encodings, longest first (the table's
# own `encoding` field wins over these).
_MODEL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gpt-3.5-turbo", "cl100k_base"),
    ("gpt-35-turbo", "cl100k_base"),
    ("text-embedding-3", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
)

_lock = threading.Lock()
_encodings: dict[str, tiktoken.Encoding] = {}
_longest: dict[str, int] = {}


class EncodingFileError(RuntimeError):
    """A bundled encoding file is missing or does not match its published hash."""


class TokenCount(NamedTuple):
    """An input count: ``exact`` is False where ``tokens`` is an upper bound."""

    tokens: int
    exact: bool


def get_encoding(name: str) -> tiktoken.Encoding:
    """The encoding ``name`` (``cl100k_base`` or ``o200k_base``), built from the
    bundled file on first use.  Raises ``KeyError`` for another name and
    ``EncodingFileError`` when the file is damaged."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    if name not in _SPECS:
        raise KeyError(f"no bundled encoding {name!r}; have {', '.join(_SPECS)}")
    with _lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = _load(name)
            _encodings[name] = encoding
    return encoding


def _load(name: str) -> tiktoken.Encoding:
    filename, expected, pattern, special = _SPECS[name]
    try:
        data = resources.files("credit_guard").joinpath("data").joinpath(filename).read_bytes()
    except OSError as exc:
        raise EncodingFileError(f"the bundled encoding file {filename} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise EncodingFileError(f"the bundled encoding file {filename} is damaged (SHA-256 {digest})")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    _longest[name] = max(len(token) for token in ranks)
    return tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special)


def warm() -> None:
    """Load every bundled encoding now (call from a worker thread)."""
    for name in _SPECS:
        get_encoding(name)


def encoding_name(price: ModelPrice) -> str | None:
    """The encoding a model bills with, or None where we only have a bound."""
    if price.encoding is not None:
        return price.encoding  # (``_encoding_name``'s first answer, without hashing the key)
    key = (price.name, price.encoding, price.token_bound)
    if key not in _ENCODING_NAMES:
        if len(_ENCODING_NAMES) > 4096:
            _ENCODING_NAMES.clear()
        _ENCODING_NAMES[key] = _encoding_name(price)
    return _ENCODING_NAMES[key]


_ENCODING_NAMES: dict[tuple[object, ...], str | None] = {}


def _encoding_name(price: ModelPrice) -> str | None:
    if price.encoding is not None:
        return price.encoding
    if price.token_bound is not None:
        return None
    name = price.name.rsplit("/", 1)[-1].lower()
    if name.startswith("ft:"):
        name = name[3:]
    for prefix, encoding in _MODEL_PREFIXES:
        if name.startswith(prefix):
            return encoding
    return None


def encoding_for(price: ModelPrice) -> tiktoken.Encoding | None:
    name = encoding_name(price)
    return None if name is None else get_encoding(name)


# Counts of short texts (roles, names, tool names) per encoding: they repeat.
_SHORT: dict[str, dict[str, int]] = {}
_SHORT_LEN = 32
_SHORT_KEPT = 8192


class CountCache:
    """Token counts of longer texts: a system prompt, a tool block or an
    earlier turn of a conversation is resent with every request and counted
    once.

    A text of up to ``text_chars`` characters is its own key, with the
    encoding's name: the lookup is one string hash (computed once per string,
    randomised per process) and, on a hit, one comparison of the whole text,
    so a hit is always the count of that very text.  A longer text is keyed by
    a 128-bit BLAKE2b digest of it instead (a collision is infeasible to
    find), so that the cache does not keep large texts.  Memory is capped
    twice: at most ``entries`` entries (about 150 bytes each beside their key)
    and at most ``chars`` characters of kept text, the least recently stored
    dropped first, so a caller who sends a stream of distinct texts only
    evicts older entries: it cannot grow the cache, and it gains nothing,
    since every text it sends is still counted once.  Texts shorter than
    ``min_chars`` are cheaper to count than to look up and are not kept.
    Safe to use from several threads.
    """

    def __init__(
        self, entries: int = 65_536, *, min_chars: int = 32, text_chars: int = 4096, chars: int = 8 * 1024 * 1024
    ) -> None:
        if entries < 1 or chars < 0 or text_chars < 0:
            raise ValueError("entries must be positive, chars and text_chars not negative")
        self.entries = entries
        self.min_chars = min_chars
        self.text_chars = text_chars
        self.chars = chars
        self.hits = 0
        self.misses = 0
        # Per encoding, a text (or its digest) to its count and the texts in
        # the order they were stored (one store number for all encodings):
        # plain dicts of strings, bytes and ints, which the garbage collector
        # stops walking (see ``_kept``).
        self._shelves: dict[str, _Shelf] = {}
        self._stored = 0
        self._kept = 0
        self._kept_chars = 0
        self._lock = threading.Lock()

    def count(self, encoding: tiktoken.Encoding, text: str) -> int:
        """Tokens of ``text`` under ``encoding``, counted at most once while kept."""
        size = len(text)
        if size < self.min_chars:
            return len(encoding.encode_ordinary(text))
        key: str | bytes
        if size <= self.text_chars and size <= self.chars:
            key = text
        else:
            size = 0
            key = _digest(text)
        shelf = self._shelves.get(encoding.name)
        found = shelf.counts.get(key) if shelf is not None else None
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        found = len(encoding.encode_ordinary(text))
        with self._lock:
            shelf = self._shelves.get(encoding.name)
            if shelf is None:
                shelf = self._shelves[encoding.name] = _Shelf()
            if key in shelf.counts:
                return found
            while self._kept and (self._kept >= self.entries or self._kept_chars + size > self.chars):
                self._drop_oldest()
            shelf.counts[key] = found
            shelf.order[self._stored] = key
            self._stored += 1
            self._kept += 1
            self._kept_chars += size
        return found

    def _drop_oldest(self) -> None:
        oldest: _Shelf | None = None
        for shelf in self._shelves.values():
            if shelf.counts:
                while shelf.first not in shelf.order:  # another encoding's number
                    shelf.first += 1
                if oldest is None or shelf.first < oldest.first:
                    oldest = shelf
        assert oldest is not None
        old = oldest.order.pop(oldest.first)
        del oldest.counts[old]
        oldest.first += 1
        self._kept -= 1
        if isinstance(old, str):
            self._kept_chars -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._shelves.clear()
            self._kept = self._kept_chars = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return self._kept


class _Shelf:
    """One encoding's counts, and its texts by store number."""

    __slots__ = ("counts", "order", "first")

    def __init__(self) -> None:
        self.counts: dict[str | bytes, int] = {}
        self.order: dict[int, str | bytes] = {}
        self.first = 0  # no text kept has a smaller store number


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


#: The process-wide cache ``count_text`` uses for texts longer than a few words.
COUNT_CACHE = CountCache()


def count_text(encoding: tiktoken.Encoding, text: str) -> int:
    """Tokens of ``text`` as ordinary text (special-token text included); for a
    text holding a very long run without whitespace, its UTF-8 bytes, a bound
    (see ``_count_text``)."""
    return _count_text(encoding, text)[0]


# A run this long without whitespace is one BPE piece, or close to it, and
# tiktoken's merge is quadratic in a piece's length: a megabyte of one letter
# takes a second and hundreds of megabytes to encode.  A text holding an
# aligned window of this many characters with no whitespace (every run of
# twice the window holds one) is bounded by its UTF-8 bytes instead, since a
# byte-level BPE token holds at least one byte.
_RUN_WINDOW = 32 * 1024
_SPACE = re.compile(r"\s")


def _has_long_run(text: str) -> bool:
    for start in range(0, len(text) - _RUN_WINDOW + 1, _RUN_WINDOW):
        if _SPACE.search(text, start, start + _RUN_WINDOW) is None:
            return True
    return False


def _count_text(encoding: tiktoken.Encoding, text: str) -> tuple[int, bool]:
    """``(tokens, exact)`` of ``text``: exact, or its UTF-8 bytes where a long
    run without whitespace would make the exact count cost quadratic time."""
    if not text:
        return 0, True
    if len(text) > _SHORT_LEN:
        if len(text) >= _RUN_WINDOW and _has_long_run(text):
            return utf8_len(text), False
        return COUNT_CACHE.count(encoding, text), True
    cache = _SHORT.get(encoding.name)
    if cache is None:
        cache = _SHORT[encoding.name] = {}
    count = cache.get(text)
    if count is None:
        count = len(encoding.encode_ordinary(text))
        if len(cache) >= _SHORT_KEPT:
            cache.clear()
        cache[text] = count
    return count, True


def count_input(ask: Ask, price: ModelPrice) -> TokenCount:
    """The input tokens of ``ask`` on ``price``'s model: exact where the
    rendering and the tokenizer are known, an upper bound otherwise.

    Raises ``InvalidRequest`` (via ``image_tokens``) for images on a model with
    no image rule.
    """
    images = sum(image_tokens(price.vision, image, ask.model) for image in ask.images)
    images_exact = all(image.width is not None or image.detail == "low" for image in ask.images)
    encoding = encoding_for(price)
    if encoding is None:
        mistral = _is_mistral(ask, price)
        if mistral:
            _mistral.check(ask.source)
        if mistral and not ask.images:
            counted = _mistral.count_chat(ask.source, price.name)
            if counted is not None:
                # Fields Mistral's renderer does not know, as the JSON text an
                # upstream that renders them receives.
                unknown = sum(utf8_len(t) for t in ask.unknown)
                return TokenCount(counted.tokens + unknown, counted.exact and not ask.unknown)
        bound = price.token_bound
        texts = _bounded_texts(ask)
        if bound is not None and bound.o200k_ratio is not None:
            o200k = get_encoding("o200k_base")
            o200k_tokens = sum(count_text(o200k, t) for t in texts)
            tokens = math.ceil(o200k_tokens * bound.o200k_ratio)
        else:
            tokens = sum(utf8_len(t) for t in texts)
        margin = bound.margin if bound is not None else 0
        margin += _mistral.tools_json_bytes(ask.source) if mistral else 0
        margin += _provider_prompt(ask, price)
        return TokenCount(tokens + ask.fixed_tokens + margin + PART_MARGIN * ask.parts + images, False)
    tokens = ask.fixed_tokens + images + _provider_prompt(ask, price) - dict(ask.savings).get(encoding.name, 0)
    verified = ask.exact_on is None or encoding.name in ask.exact_on
    verified = verified and not _resolved_allowance(ask, price)
    exact = ask.exact and images_exact and verified
    for text in ask.texts:
        count, known = _count_text(encoding, text)
        tokens += count
        exact = exact and known
    return TokenCount(tokens, exact)


def _provider_prompt(ask: Ask, price: ModelPrice) -> int:
    """Tokens the provider adds to the prompt on its own: Anthropic's tool-use
    system prompt (``ask.tool_choice`` is set only where tools are given), and
    the hidden input of the OpenAI family the name resolved to, beyond what the
    shape allowed for the name asked (an alias of o3 bills o3's)."""
    hidden = _resolved_allowance(ask, price)
    if ask.tool_choice is None:
        return hidden
    return hidden + _anthropic.tool_prompt_tokens(price.name, ask.tool_choice)


def _resolved_allowance(ask: Ask, price: ModelPrice) -> int:
    if ask.kind != "chat" or price.name == ask.model:
        return 0
    return max(0, preamble.chat_allowance(price.name) - preamble.chat_allowance(ask.model))


def _is_mistral(ask: Ask, price: ModelPrice) -> bool:
    """A chat body for a model Mistral bills (``provider`` "mistral")."""
    return ask.source is not None and isinstance(ask.source, dict) and reads_source(price)


def reads_source(price: ModelPrice) -> bool:
    """Whether counting for ``price`` reads ``Ask.source``, the parsed body
    (Mistral's tokenizer renders the messages itself); no other count does."""
    return price.provider == "mistral"


def input_bounds(ask: Ask, price: ModelPrice) -> tuple[int, int]:
    """Cheap bounds on ``count_input(ask, price).tokens`` from byte lengths only
    (no encoding).  ``low`` uses the longest token of the encoding (a token holds
    at most that many bytes); ``high`` that a token holds at least one byte."""
    images = sum(image_tokens(price.vision, image, ask.model) for image in ask.images) if ask.images else 0
    name = encoding_name(price)
    if name is not None:
        longest = _longest.get(name)
        if longest is None:
            get_encoding(name)
            longest = _longest[name]
        # Every non-empty text is at least one token (the ceiling of a size of
        # one byte or more is at least one).
        total = fewest = 0
        for text in ask.texts:
            size = len(text) if text.isascii() else utf8_len(text)
            total += size
            fewest -= -size // longest
        known_images = (
            sum(
                image_tokens(price.vision, image, ask.model) if image.width is not None or image.detail == "low" else 0
                for image in ask.images
            )
            if ask.images
            else 0
        )
        # (Nothing where no tools are given and the name is the one priced.)
        prompt = 0 if ask.tool_choice is None and price.name == ask.model else _provider_prompt(ask, price)
        saved = max((n for _, n in ask.savings), default=0) if ask.savings else 0
        fixed = ask.fixed_tokens
        return fewest + fixed - saved + known_images + prompt, total + fixed + images + prompt
    # A model we can only bound.
    total = sum(len(t) if t.isascii() else utf8_len(t) for t in _bounded_texts(ask))
    exact = count_input(ask, price) if price.token_bound and price.token_bound.o200k_ratio else None
    if exact is not None:
        return exact.tokens, exact.tokens
    high = total + ask.fixed_tokens + PART_MARGIN * ask.parts + images + _provider_prompt(ask, price)
    high += price.token_bound.margin if price.token_bound else 0
    if _is_mistral(ask, price):
        # Mistral's tokenizer may count fewer: no floor but the images.
        return images, high + _mistral.tools_json_bytes(ask.source)
    return high, high


def utf8_len(text: str) -> int:
    """The length of ``text`` in UTF-8 (lone surrogates as three bytes each),
    without encoding it where it is ASCII."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _bounded_texts(ask: Ask) -> tuple[str, ...]:
    # What a model without a public tokenizer receives (tool definitions as
    # JSON, not as the rendering OpenAI's models see).
    return ask.texts if ask.bound_texts is None else ask.bound_texts


def count_output(texts: Iterable[str], price: ModelPrice) -> int:
    """Output tokens in generated text that the response did not report.

    Pieces are counted as one text (the model produced them as one), so the
    count is what the text tokenizes to; for a model without a tokenizer, its
    bound.
    """
    text = "".join(texts)
    if not text:
        return 0
    encoding = encoding_for(price)
    if encoding is None:
        bound = price.token_bound
        if bound is not None and bound.o200k_ratio is not None:
            return math.ceil(count_text(get_encoding("o200k_base"), text) * bound.o200k_ratio)
        return utf8_len(text)
    return count_text(encoding, text)


def image_tokens(rule: VisionRule | None, image: ImageRef, model: str = "") -> int:
    """Input tokens of one image under a model family's rule: exact where the
    size is known, the rule's worst case where it is not."""
    from .errors import InvalidRequest

    if rule is None:
        raise InvalidRequest(
            f"The model {model!r} has no image pricing in the price table; images cannot be priced for it.",
            param="messages",
        )
    width, height = image.width, image.height
    known = width is not None and height is not None and width > 0 and height > 0
    if rule.method == "fixed":
        return rule.max_tokens or 0
    if rule.method == "tiles":
        if image.detail == "low":
            return rule.base_tokens
        if not known:
            tiles = math.ceil(rule.short_side / rule.tile_size) * math.ceil(rule.max_side / rule.tile_size)
            return rule.base_tokens + rule.tile_tokens * tiles
        assert width is not None and height is not None
        w, h = float(width), float(height)
        if max(w, h) > rule.max_side:
            scale = rule.max_side / max(w, h)
            w, h = w * scale, h * scale
        if min(w, h) > rule.short_side:
            scale = rule.short_side / min(w, h)
            w, h = w * scale, h * scale
        tiles = math.ceil(w / rule.tile_size) * math.ceil(h / rule.tile_size)
        return rule.base_tokens + rule.tile_tokens * tiles
    if rule.method == "patches":
        if known:
            assert width is not None and height is not None
            patches = math.ceil(width / rule.patch_size) * math.ceil(height / rule.patch_size)
            patches = min(patches, rule.max_patches)
        else:
            patches = rule.max_patches
        return math.ceil(patches * rule.multiplier)
    if rule.method == "area":
        cap = rule.max_tokens
        if not known:
            if cap is None:
                raise InvalidRequest(f"The image rule for {model!r} has no worst case.", param="messages")
            return cap
        assert width is not None and height is not None
        # Anthropic states both width * height / 750 and one token per 28 px
        # patch (rounded up per side, so more for small images): the larger.
        # The image is not scaled down first, which only counts more; the cap
        # is the most a scaled image costs.
        patches = math.ceil(width / rule.patch_size) * math.ceil(height / rule.patch_size)
        tokens = max(math.ceil(width * height / rule.area_divisor), patches)
        return min(tokens, cap) if cap is not None else tokens
    if rule.method == "crop-tiles":
        return _crop_tiles(rule, width, height) if known else _crop_tiles_worst(rule)
    raise InvalidRequest(f"Unknown image rule {rule.method!r} for {model!r}.", param="messages")


def _crop_tiles(rule: VisionRule, width: int | None, height: int | None) -> int:
    """Gemini's rule (Google's docs): an image with both sides at most
    ``short_side`` costs one tile; a larger one is first fitted within
    ``max_side`` square, then cut into square tiles whose side is its shorter
    side / 1.5, kept between ``tile_size / 3`` and ``tile_size``; each tile
    costs ``tile_tokens``.  A scaled image keeps its fractional sides and the
    tile side is rounded down, so however the provider rounds, the count is
    never below its own."""
    assert width is not None and height is not None
    if width <= rule.short_side and height <= rule.short_side:
        return rule.tile_tokens
    w, h = float(width), float(height)
    if max(w, h) > rule.max_side:
        scale = rule.max_side / max(w, h)
        w, h = w * scale, h * scale
    tile = max(rule.tile_size // 3, min(rule.tile_size, math.floor(min(w, h) / 1.5)))
    return rule.tile_tokens * math.ceil(w / tile - 1e-9) * math.ceil(h / tile - 1e-9)


def _crop_tiles_worst(rule: VisionRule) -> int:
    """The most tiles any image can cost under ``_crop_tiles``: the shorter side
    just above ``short_side`` (the smallest tiles) and the longer at ``max_side``."""
    short = rule.short_side + 1
    return max(
        _crop_tiles(rule, short, rule.max_side),
        _crop_tiles(rule, rule.max_side, rule.max_side),
        _crop_tiles(rule, math.ceil(rule.tile_size * 1.5), rule.max_side),
    )
