"""Languages of the consent page: the gettext catalogues and the choice for one request.

**Catalogues.** ``locale/<lang>/LC_MESSAGES/messages.po`` (Babel's layout) are the only files a
translator edits; English is the source language (the ``msgid`` texts), so it has no catalogue.
They are compiled to the binary ``.mo`` form in memory when the page is first built
(:func:`load_translations`, Babel's ``read_po`` and ``write_mo``), so no ``.mo`` file is ever
committed, installed or stale. ``locale/messages.pot`` is the template, extracted from the
templates and the policy's purpose descriptions (:func:`extract_policy`) by ``pybabel extract``
with ``babel.cfg`` (the README's "Privacy and consent" section has the commands). A fuzzy or empty
entry is not used: the English text shows instead.

**Choice.** ``?lang=`` when it names a language we have, else the best match of the
``Accept-Language`` header (q-values honoured, ``fr-CA`` matches ``fr``), else English.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from features.consent.policy import load_policy

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
SOURCE_LANGUAGE = "en"
#: Every language of the page, in the switcher's order, with its name in itself.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "Français",
    "de": "Deutsch",
    "es": "Español",
}
_TAG = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$|^\*$")


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def load_translations(language: str) -> NullTranslations:
    """The gettext translations of ``language`` (compiled from its ``.po`` once per process);
    English, the source language, translates nothing."""
    if language == SOURCE_LANGUAGE:
        return NullTranslations()
    if language not in LANGUAGES:
        raise ValueError(f"no catalogue for {language!r}; languages: {', '.join(LANGUAGES)}")
    with po_path(language).open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)  # a fuzzy entry is a guess: English instead
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN)


def accept_language(header: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, best first (by q, then by order);
    tags with ``q=0`` or malformed parts are left out. ``"fr-CH, fr;q=0.9, en;q=0.8"`` gives
    ``["fr-CH", "fr", "en"]``."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((header or "").split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or not _TAG.match(tag):
            continue
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = -1.0
        if 0.0 < quality <= 1.0:
            ranked.append((-quality, position, tag))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(query_lang: str | None, header: str | None) -> str:
    """The page's language: a known ``?lang=``, else the header's best known language (a tag's
    primary subtag counts: ``de-AT`` is ``de``), else English."""
    if query_lang:
        wanted = query_lang.strip().lower().split("-")[0]
        if wanted in LANGUAGES:
            return wanted
    for tag in accept_language(header):
        primary = tag.lower().split("-")[0]
        if primary in LANGUAGES:
            return primary
        if primary == "*":
            return SOURCE_LANGUAGE
    return SOURCE_LANGUAGE


def extract_policy(
    fileobj: Any, keywords: Any, comment_tags: Any, options: dict
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extraction method for a consent policy file (``babel.cfg`` names it): each
    purpose's description is a message, so translators translate it in the ``.po`` files."""
    policy = load_policy(fileobj.name)  # validated, read by the one YAML reader
    lines = Path(fileobj.name).read_text(encoding="utf-8").splitlines()
    for name, purpose in policy.purposes.items():
        line = next((i + 1 for i, row in enumerate(lines) if row.strip() == f"{name}:"), 0)
        yield line, "gettext", purpose.description, [f"Description of the purpose {name!r}"]
