"""The consent page (issue #12): language negotiation, the catalogues, rendering, and the page
with ``POST /consent``'s own-cookie form over a real ledger (SQLite) through Starlette's
TestClient. The real service in a real browser is ``tests/integration/test_privacy_browser.py``."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from starlette.applications import Starlette
from starlette.testclient import TestClient

from features import database
from features.consent.check import ConsentCheck
from features.consent.ledger import ConsentLedger
from features.consent.policy import load_policy, parse_policy
from features.identity.graph import IdentityGraph
from serving.consent import ConsentEndpoint, consent_app
from serving.cookies import AID_COOKIE, VisitorCookies
from serving.privacy.page import CSP, privacy_app, render_page
from serving.privacy.translations import (
    LANGUAGES,
    LOCALE_DIR,
    accept_language,
    choose_language,
    load_translations,
    po_path,
)
from tests.test_layers import ROOT

POLICY = load_policy()
KEY = "k" * 40


# -- languages --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "tags"),
    [
        ("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", ["fr-CH", "fr", "en", "de", "*"]),
        ("en;q=0.2, es", ["es", "en"]),  # q before order
        ("de;q=0, es;q=0.5", ["es"]),  # q=0: not acceptable
        ("fr;q=abc, de;q=2, es;q=0.4, !!, ", ["es"]),  # malformed q or tag: left out
        ("", []),
        (None, []),
    ],
)
def test_accept_language_is_ranked_by_quality_then_order(header, tags) -> None:
    assert accept_language(header) == tags


@pytest.mark.parametrize(
    ("query", "header", "language"),
    [
        (None, "fr-FR,fr;q=0.9,en;q=0.8", "fr"),
        (None, "de-AT", "de"),
        (None, "ja, es;q=0.5", "es"),  # the best language we have
        (None, "ja, zh", "en"),
        (None, None, "en"),
        ("es", "fr", "es"),  # ?lang= wins
        ("DE", None, "de"),
        ("xx", "fr", "fr"),  # an unknown ?lang= falls back to the header
    ],
)
def test_the_language_comes_from_lang_then_accept_language_then_english(
    query, header, language
) -> None:
    assert choose_language(query, header) == language


# -- catalogues -------------------------------------------------------------------------------
def _template_ids() -> set[str]:
    """The message ids extracted now from the templates and the policy, as `pybabel extract`
    with babel.cfg does."""
    with (ROOT / "serving/privacy/babel.cfg").open() as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found = extract_from_dir(str(ROOT), method_map, options_map)
    return {message for _, _, message, _, _ in found}


def test_the_pot_template_is_current_with_the_templates_and_the_policy() -> None:
    with (LOCALE_DIR / "messages.pot").open("rb") as handle:
        pot = {m.id for m in read_po(handle) if m.id}
    assert pot == _template_ids(), "run the `pybabel extract` command of README's section"
    assert any("profile of your interests" in m for m in pot)  # a purpose description


@pytest.mark.parametrize("language", [code for code in LANGUAGES if code != "en"])
def test_every_catalogue_translates_every_message(language) -> None:
    with (LOCALE_DIR / "messages.pot").open("rb") as handle:
        pot = {m.id for m in read_po(handle) if m.id}
    with po_path(language).open("rb") as handle:
        catalog = read_po(handle, locale=language)
    messages = {m.id: m for m in catalog if m.id}
    assert set(messages) == pot, "run `pybabel update` (README, Privacy and consent)"
    untranslated = [m.id for m in messages.values() if not m.string or m.fuzzy]
    assert not untranslated, untranslated
    for message in messages.values():  # the same %(name)s placeholders
        assert re.findall(r"%\(\w+\)s", message.id) == re.findall(r"%\(\w+\)s", message.string)


def test_a_fuzzy_entry_is_not_used(tmp_path, monkeypatch) -> None:
    text = po_path("fr").read_text(encoding="utf-8")
    fuzzy = text.replace('msgid "Accept all"', '#, fuzzy\nmsgid "Accept all"')
    (tmp_path / "fr" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "fr" / "LC_MESSAGES" / "messages.po").write_text(fuzzy, encoding="utf-8")
    monkeypatch.setattr("serving.privacy.translations.LOCALE_DIR", tmp_path)
    load_translations.cache_clear()
    try:
        translations = load_translations("fr")
        assert translations.gettext("Accept all") == "Accept all"
        assert translations.gettext("Reject all") == "Tout refuser"
    finally:
        load_translations.cache_clear()


# -- rendering --------------------------------------------------------------------------------
class _Page(HTMLParser):
    """The elements a test looks at: inputs, labels, buttons, the banner, <html lang>."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.inputs: list[dict] = []
        self.labels: list[str] = []
        self.buttons: list[dict] = []
        self.sections: dict[str, dict] = {}
        self.lang = ""
        self.srcs: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "html":
            self.lang = attrs.get("lang", "")
        elif tag == "input":
            self.inputs.append(attrs)
        elif tag == "label":
            self.labels.append(attrs["for"])
        elif tag == "button":
            self.buttons.append(attrs)
        elif tag == "section":
            self.sections[attrs["id"]] = attrs
        if "src" in attrs or (tag == "link" and "href" in attrs):
            self.srcs.append(attrs.get("src") or attrs["href"])


def _state(allowed: dict[str, bool], needs_banner: bool, history: int = 0, regime="opt-in"):
    purposes = {name: {"allowed": allowed.get(name, False)} for name in POLICY.purposes}
    purposes["necessary"]["allowed"] = True
    return {
        "needs_banner": needs_banner,
        "history": [{}] * history,
        "regime": regime,
        "purposes": purposes,
    }


BANNER_TEXT = {
    "en": "Please make your choices below.",
    "fr": "Veuillez faire vos choix ci-dessous.",
    "de": "Bitte treffen Sie unten Ihre Auswahl.",
    "es": "Haga sus elecciones a continuación.",
}


@pytest.mark.parametrize("language", list(LANGUAGES))
def test_every_purpose_has_a_labelled_toggle_and_a_translated_explanation(language) -> None:
    html = render_page(POLICY, language, _state({}, needs_banner=True))
    page = _Page(html)
    assert page.lang == language
    toggles = [i for i in page.inputs if i.get("role") == "switch"]
    assert [t["id"] for t in toggles] == [f"p-{name}" for name in POLICY.purposes]
    assert sorted(page.labels) == sorted(t["id"] for t in toggles)  # a real <label> each
    necessary = toggles[0]
    assert "checked" in necessary and "disabled" in necessary  # shown as always on
    assert not any("checked" in t for t in toggles[1:])  # opt-in: nothing ticked beforehand
    translations = load_translations(language)
    for purpose in POLICY.purposes.values():
        assert translations.gettext(purpose.description) in html
        if language != "en":
            assert purpose.description not in html  # no English left behind
    assert BANNER_TEXT[language] in html and "hidden" not in page.sections["banner"]
    # Accept all and Reject all: the same class (one look), neither is the form's default
    by_id = {b["id"]: b for b in page.buttons}
    assert by_id["accept-all"]["class"] == by_id["reject-all"]["class"] == "choice"
    assert by_id["accept-all"]["type"] == by_id["reject-all"]["type"] == "button"
    assert f'href="{POLICY.policy_url}"' in html
    assert page.srcs == ["/privacy/privacy.js"]  # nothing from another origin
    for code in LANGUAGES:  # the switcher
        assert f'href="/privacy?lang={code}"' in html


def test_the_toggles_show_the_current_state_and_no_banner_once_chosen() -> None:
    state = _state({"analytics": True, "marketing": True}, needs_banner=False, history=1)
    page = _Page(render_page(POLICY, "de", state))
    checked = {i["id"] for i in page.inputs if "checked" in i}
    assert checked == {"p-necessary", "p-analytics", "p-marketing"}
    assert "hidden" in page.sections["banner"]


@pytest.mark.parametrize(
    ("history", "regime", "text"),
    [
        (1, "opt-in", "Our privacy policy has changed since your last choice."),
        (0, "opt-out", "You can refuse any purpose."),
        (0, "opt-in", "Until you do, we use only what is strictly necessary."),
    ],
)
def test_the_banner_says_why_it_shows(history, regime, text) -> None:
    html = render_page(POLICY, "en", _state({}, needs_banner=True, history=history, regime=regime))
    assert text in html


def test_in_the_banner_the_choices_come_before_the_purposes() -> None:
    state = _state({}, needs_banner=True)
    page, banner = render_page(POLICY, "en", state), render_page(POLICY, "en", state, embed=True)
    assert page.index("<fieldset>") < page.index('id="reject-all"')
    assert banner.index('id="reject-all"') < banner.index("<fieldset>")  # no scrolling to refuse
    assert banner.count('id="accept-all"') == 1 and 'class="embed"' in banner
    assert 'href="/privacy?lang=de&amp;embed=1"' in banner  # the switcher stays in the banner


def test_an_unavailable_ledger_offers_no_toggle() -> None:
    html = render_page(POLICY, "es", None)
    assert 'id="unavailable"' in html and "Sus opciones no se pueden mostrar" in html
    assert not _Page(html).inputs


# -- the page and POST /consent's own-cookie form, over a real ledger ---------------------------
def _service(tmp_path, policy=POLICY) -> TestClient:
    engine = database.engine(f"sqlite:///{tmp_path / 'tailor.db'}")
    graph = IdentityGraph(engine, prefix="g_")
    check = ConsentCheck(ConsentLedger(engine, policy, graph, prefix="c_"))
    endpoint = ConsentEndpoint(check, "X-Country", cookies=VisitorCookies(KEY))
    routes = [*consent_app(lambda: endpoint).routes, *privacy_app(lambda: endpoint).routes]
    app = Starlette(routes=routes)
    return TestClient(app, base_url="https://shop.example")


def _checked(html: str) -> set[str]:
    return {i["id"][2:] for i in _Page(html).inputs if "checked" in i}


def test_a_visitor_gets_a_cookie_records_a_choice_with_it_and_sees_it(tmp_path) -> None:
    client = _service(tmp_path)
    page = client.get("/privacy", headers={"accept-language": "fr-FR,fr;q=0.9"})
    assert page.status_code == 200
    assert page.headers["content-language"] == "fr"
    assert page.headers["content-security-policy"] == CSP
    assert "Vos choix de confidentialité" in page.text
    assert page.headers["set-cookie"].startswith(f"{AID_COOKIE}=")
    assert "HttpOnly" in page.headers["set-cookie"] and "Secure" in page.headers["set-cookie"]
    assert 'data-needs-banner="1"' in page.text
    anonymous_id = VisitorCookies(KEY).visitor(dict(client.cookies)).anonymous_id

    choice = {"analytics": True, "personalization": False, "marketing": False}
    body = {"purposes": choice, "policy_version": POLICY.policy_version, "source": "banner"}
    saved = client.post("/consent", json=body)
    assert saved.status_code == 201, saved.text
    assert "anonymous_id" not in saved.json()["record"]  # the answer carries no id
    assert saved.json()["state"]["needs_banner"] is False
    # recorded on the cookie's id: the same visitor, kept across requests
    state = client.get("/consent", params={"anonymous_id": anonymous_id}).json()
    assert {p: v["choice"] for p, v in state["purposes"].items()} == {"necessary": None, **choice}
    assert [h["source"] for h in state["history"]] == ["banner"]

    again = client.get("/privacy?lang=de")
    assert again.headers["content-language"] == "de"
    assert _checked(again.text) == {"necessary", "analytics"}
    assert 'data-needs-banner="0"' in again.text


def test_a_policy_version_bump_shows_the_banner_again(tmp_path) -> None:
    client = _service(tmp_path)
    client.get("/privacy")
    body = {"purposes": {p: True for p in POLICY.optional_purposes}}
    body |= {"policy_version": POLICY.policy_version, "source": "banner"}
    assert client.post("/consent", json=body).status_code == 201
    assert 'data-needs-banner="0"' in client.get("/privacy").text

    bumped = parse_policy({**POLICY.model_dump(), "policy_version": "2027-01-01"})
    later = _service(tmp_path, bumped)  # the same ledger, the service restarted on a new policy
    later.cookies = client.cookies
    html = later.get("/privacy").text
    assert 'data-needs-banner="1"' in html
    assert "Our privacy policy has changed since your last choice." in html
    assert _checked(html) == {"necessary"}  # opt-in: nothing until they choose again


@pytest.mark.parametrize("cookie", [None, "forged.value", "a" * 600])
def test_a_body_without_an_id_and_without_a_valid_cookie_is_a_400(tmp_path, cookie) -> None:
    client = _service(tmp_path)
    if cookie is not None:
        client.cookies.set(AID_COOKIE, cookie)
    body = {"purposes": {"analytics": True}, "policy_version": POLICY.policy_version}
    reply = client.post("/consent", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["detail"] == {"field": "user_id"}
    assert "set-cookie" not in reply.headers


def test_an_explicit_id_is_recorded_as_given_not_as_the_cookie(tmp_path) -> None:
    client = _service(tmp_path)
    client.get("/privacy")  # the browser has a cookie; an API call names someone else
    body = {"anonymous_id": "other", "purposes": {"analytics": True}, "source": "api"}
    reply = client.post("/consent", json=body)
    assert reply.status_code == 201 and reply.json()["record"]["anonymous_id"] == "other"
    assert "set-cookie" not in reply.headers


def test_the_scripts_are_served_from_the_service(tmp_path) -> None:
    client = _service(tmp_path)
    for path, needle in (("/privacy/privacy.js", "/consent"), ("/privacy/banner.js", "iframe")):
        reply = client.get(path)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/javascript")
        assert needle in reply.text
        code = [line for line in reply.text.splitlines() if not line.startswith("//")]
        assert not [line for line in code if "http" in line]  # no other origin named


def test_before_the_service_is_constructed_the_page_answers_503() -> None:
    assert TestClient(privacy_app(lambda: None)).get("/privacy").status_code == 503
