"""Answer normalization of the official VQAv2 evaluation and of EvalAI's answer processor.

Written from the rules of the official scripts (``vqaEval.py`` of the VQA API, and the
``EvalAIAnswerProcessor`` that TextVQA's evaluator uses), quirks included:

* Punctuation (:func:`process_punctuation`): for each character of :data:`PUNCT`, if it
  touches a space anywhere in the *input* (``"p "`` or ``" p"``), or if the input holds a
  digit-comma-digit group (``"3,000"``), every occurrence is deleted; otherwise every
  occurrence becomes a space. So ``"red/white"`` -> ``"red white"`` but ``"3,000/yes"`` ->
  ``"3000yes"``. The apostrophe, colon and period are not in the list.
* Periods: every ``"."`` not followed by a digit is deleted (``"3.5"`` keeps its period,
  ``"a.m."`` -> ``"am"``). The official pattern ``(?!<=\\d)(\\.)(?!\\d)`` has a typo, a
  lookahead where a lookbehind was meant, that never rejects anything; and the official
  call passes ``re.UNICODE`` (= 32) as the ``count`` argument, so at most 32 periods are
  deleted from one answer. Both are reproduced.
* Words (:func:`process_digit_article`): lower-case, split on whitespace, number words
  ``none``/``zero``..``ten`` -> digits (not eleven and up), articles ``a an the`` dropped,
  then each word looked up in :data:`CONTRACTIONS` (``dont`` -> ``don't``). The table's
  capitalized keys (``Im``, ``Ive``, ``Id've``) can never match after lower-casing, as in
  the original.
* EvalAI (:func:`evalai_normalize`) first lower-cases, deletes every ``","`` and ``"?"``,
  splits ``"'s"`` into ``" 's"``, then applies the same punctuation and word rules (its
  digit-comma test can then never fire, since the commas are already gone).
"""

from __future__ import annotations

import re

PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

NUMBER_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Missing apostrophes -> the contracted form. The odd entries ("somebody'd" -> "somebodyd",
# capitalized keys) are part of the official table and kept.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip

VQA_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")  # the VQA API's commaStrip
EVALAI_DIGIT_COMMA = re.compile(r"(?<=\d)(,)+(?=\d)")  # EvalAI's COMMA_STRIP
PERIOD_STRIP = re.compile(r"\.(?!\d)")  # what the official "(?!<=\d)(\.)(?!\d)" matches
PERIOD_STRIP_MAX = 32  # re.UNICODE, passed positionally as Pattern.sub's count by the official code


def clean_whitespace(text: str) -> str:
    """Newlines and tabs -> spaces, then strip (done to every answer before anything else)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str, digit_comma: re.Pattern[str] = VQA_DIGIT_COMMA) -> str:
    """The official punctuation rule (see the module docstring)."""
    delete_all = digit_comma.search(text) is not None
    out = text
    for p in PUNCT:
        touches_space = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if delete_all or touches_space else " ")
    return PERIOD_STRIP.sub("", out, count=PERIOD_STRIP_MAX)


def process_digit_article(text: str) -> str:
    """Lower-case, number words -> digits, drop articles, restore contractions."""
    words = [NUMBER_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def vqa_normalize(text: str) -> str:
    """The VQAv2 normalization of one answer (whitespace, punctuation, then words)."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))


def evalai_normalize(text: str) -> str:
    """EvalAI's answer processor (TextVQA): always applied to prediction and human answers."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = clean_whitespace(text)
    return process_digit_article(process_punctuation(text, EVALAI_DIGIT_COMMA))
