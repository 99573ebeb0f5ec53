"""The consent page in a real browser over a real ``bentoml serve`` (issue #12): headless
Chromium opens ``/privacy`` in each language (screenshots kept in ``.artifacts/``), a French
visitor refuses personalization with the keyboard only (Tab, Space, Enter) and saves; the ledger
then holds that choice for the visitor's own cookie, ``/recommend`` for that visitor is not
personalized, and a ``policy_version`` bump brings the banner back.

What only a browser shows: the page loads nothing from another origin, the keyboard reaches
every control in order with a visible focus ring, Accept all and Reject all look the same, and
the text has sufficient contrast (WCAG AA, 4.5:1) as rendered.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from features.consent.policy import load_policy
from features.settings import env_name
from features.workspace import Workspace
from serving.cookies import AID_COOKIE, VisitorCookies, cookie_key
from serving.process import running_service
from tests.browser import browser, screenshot, serve_pages  # noqa: F401  (browser: a fixture)
from tests.integration.test_serving_http import _post

pytestmark = pytest.mark.integration

POLICY = load_policy()
WAIT_MS = 10_000
#: The page's title and its "saved" line in each language (from the .po files).
TITLES = {
    "en": "Your privacy choices",
    "fr": "Vos choix de confidentialité",
    "de": "Ihre Datenschutz-Einstellungen",
    "es": "Sus opciones de privacidad",
}
SAVED_FR = "Vos choix ont été enregistrés."

#: WCAG contrast of each visible text element against its (first opaque) background.
CONTRAST_JS = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll("h1, p, label, legend, a, button, .now, span")) {
    if (!el.offsetParent || !el.textContent.trim()) continue;
    const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
    out.push([el.id || el.tagName + ":" + el.textContent.trim().slice(0, 20),
              (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]);
  }
  return out;
}"""


@dataclass
class Site:
    """The service over a copy of the trained workspace; :meth:`restart` runs it again on the
    same workspace (its ledger, its cookie key) with other settings."""

    ws: Workspace
    stack: contextlib.ExitStack
    url: str = ""
    visitor: dict = field(default_factory=dict)

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        self.stack.close()
        self.stack = contextlib.ExitStack()
        self.url = self.stack.enter_context(running_service(self.ws, extra_env=extra_env))


@pytest.fixture(scope="module")
def site(trained_workspace, tmp_path_factory):
    ws = trained_workspace.copy_to(tmp_path_factory.mktemp("privacy-browser"))
    served = Site(ws, contextlib.ExitStack())
    try:
        served.start()
        yield served
    finally:
        served.stack.close()


def _focus(page, element_id: str, limit: int = 40, frame=None) -> None:
    """Press Tab until the element ``element_id`` (of ``frame``, else of the page) has the
    focus (keyboard only)."""
    document = frame or page
    for _ in range(limit):
        page.keyboard.press("Tab")
        if document.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"{limit} Tabs never reached #{element_id}")


def _anonymous_id(site: Site, context) -> str:
    """The visitor's anonymous id, read from the browser's signed cookie with the workspace's
    key (the page never shows it, and the cookie is HttpOnly)."""
    cookies = {c["name"]: c["value"] for c in context.cookies(site.url)}
    key = cookie_key(site.ws.settings.cookie_secret, site.ws.secrets_dir)
    visitor = VisitorCookies(key).visitor({AID_COOKIE: cookies[AID_COOKIE]})
    assert not visitor.new_visitor, "the cookie did not verify"
    return visitor.anonymous_id


def _consent(site: Site, anonymous_id: str) -> dict:
    reply = httpx.get(f"{site.url}/consent", params={"anonymous_id": anonymous_id}, timeout=30)
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.parametrize("language", list(TITLES))
def test_the_page_in_each_language(site, browser, language) -> None:  # noqa: F811
    context = browser.new_context(locale=language)
    requests: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.goto(f"{site.url}/privacy")  # Chromium's Accept-Language follows the locale
        assert page.locator("html").get_attribute("lang") == language
        assert page.locator("h1").inner_text() == TITLES[language]
        assert page.locator("#banner").is_visible()  # a new visitor must choose
        for name in POLICY.purposes:
            assert page.locator(f"label[for=p-{name}]").is_visible()
        assert (
            page.locator("#p-necessary").is_checked() and page.locator("#p-necessary").is_disabled()
        )
        screenshot(page, f"privacy_page_{language}")

        # nothing from another origin: the page, its script, nothing else
        assert requests and all(url.startswith(site.url + "/") for url in requests), requests
        # Accept all and Reject all: the same look and size
        look = "el => { const s = getComputedStyle(el); return [s.backgroundColor, s.color, " \
               "s.fontSize, s.fontWeight, s.borderTopWidth, s.borderTopColor]; }"  # fmt: skip
        accept, reject = page.locator("#accept-all"), page.locator("#reject-all")
        assert accept.evaluate(look) == reject.evaluate(look)
        a, r = accept.bounding_box(), reject.bounding_box()
        assert (a["width"], a["height"]) == (r["width"], r["height"]), (a, r)
        # sufficient contrast for every visible text
        low = [(what, round(ratio, 2)) for what, ratio in page.evaluate(CONTRAST_JS) if ratio < 4.5]
        assert not low, low
        # the switcher goes to the other languages with ?lang=
        other = "de" if language != "de" else "es"
        page.locator(f"nav a[hreflang={other}]").focus()
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/privacy?lang={other}")
        assert page.locator("h1").inner_text() == TITLES[other]
    finally:
        context.close()


@pytest.fixture(scope="module")
def french_visitor(site, browser):  # noqa: F811
    """A French visitor who first accepts everything, then comes back and refuses
    personalization, with the keyboard only; their anonymous id and cookies."""
    context = browser.new_context(locale="fr-FR", extra_http_headers={"Accept-Language": "fr"})
    try:
        page = context.new_page()
        page.goto(f"{site.url}/privacy")
        assert page.locator("h1").inner_text() == TITLES["fr"]
        assert "Personnalisation" in page.locator("label[for=p-personalization]").inner_text()
        _focus(page, "accept-all")
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-saved='1']", timeout=WAIT_MS)
        anonymous_id = _anonymous_id(site, context)
        accepted = _consent(site, anonymous_id)
        assert accepted["purposes"]["personalization"]["allowed"] is True

        page.reload()
        assert page.locator("#banner").is_hidden()  # chosen on the current policy
        assert page.locator("#p-personalization").is_checked()  # the current state
        _focus(page, "p-personalization")
        ring = page.evaluate(
            "() => { const el = document.activeElement, s = getComputedStyle(el);"
            " return [el.matches(':focus-visible'), s.outlineStyle, s.outlineWidth]; }"
        )
        assert ring == [True, "solid", "3px"], ring  # a visible focus
        page.keyboard.press("Space")
        assert not page.locator("#p-personalization").is_checked()
        _focus(page, "save")
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-saved='1']", timeout=WAIT_MS)
        assert page.locator("#status").inner_text() == SAVED_FR
        assert page.locator("#now-personalization").inner_text() == "Désactivé"
        screenshot(page, "privacy_page_fr_personalization_refused")
        assert _anonymous_id(site, context) == anonymous_id  # one visitor throughout
        yield {"anonymous_id": anonymous_id, "cookies": context.cookies(site.url)}
    finally:
        context.close()


def test_a_keyboard_refusal_is_recorded_for_the_visitors_own_cookie(site, french_visitor) -> None:
    state = _consent(site, french_visitor["anonymous_id"])
    choices = {name: purpose["choice"] for name, purpose in state["purposes"].items()}
    assert choices == {
        "necessary": None,
        "analytics": True,
        "personalization": False,
        "marketing": True,
    }
    assert state["purposes"]["personalization"]["reason"] == "personalization refused"
    assert state["needs_banner"] is False
    history = state["history"]
    assert [(h["source"], h["same_id"], h["policy_version"]) for h in history] == [
        ("banner", True, POLICY.policy_version)
    ] * 2


def test_recommend_for_that_visitor_is_not_personalized(site, french_visitor) -> None:
    answer = _post(site, "/recommend", {"anonymous_id": french_visitor["anonymous_id"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["personalized"] is False
    assert body.get("consent") == "personalization not given"


#: A shop page of another origin on the same site that includes the banner script.
SHOP = """<!doctype html><html lang="es"><head><meta charset="utf-8"><title>Tienda</title></head>
<body><h1>Tienda</h1><p>Productos.</p>
<script src="{service}/privacy/banner.js" data-lang="es" async></script></body></html>"""


def test_the_banner_script_shows_the_page_until_the_visitor_chooses(site, browser) -> None:  # noqa: F811
    context = browser.new_context(locale="es-ES")
    try:
        with serve_pages({"/shop.html": SHOP.format(service=site.url)}) as shop:
            page = context.new_page()
            page.goto(f"{shop}/shop.html")
            page.wait_for_selector("#tailor-consent-banner", state="visible", timeout=WAIT_MS)
            banner = page.frame_locator("#tailor-consent-banner")
            assert banner.locator("h1").inner_text() == TITLES["es"]
            screenshot(page, "privacy_banner_on_a_shop_page_es")
            frame = next(f for f in page.frames if "/privacy?embed=1" in f.url)
            _focus(page, "reject-all", frame=frame)  # the banner took the focus: Tab within it
            page.keyboard.press("Enter")
            page.wait_for_selector("#tailor-consent-banner", state="hidden", timeout=WAIT_MS)

            anonymous_id = _anonymous_id(site, context)
            state = _consent(site, anonymous_id)
            assert {name: p["allowed"] for name, p in state["purposes"].items()} == {
                "necessary": True,
                "analytics": False,
                "personalization": False,
                "marketing": False,
            }
            assert [h["source"] for h in state["history"]] == ["banner"]

            page.reload()  # chosen: the banner stays hidden on the next page
            frame_page = page.frame_locator("#tailor-consent-banner")
            frame_page.locator("body[data-needs-banner='0']").wait_for(state="attached")
            assert page.locator("#tailor-consent-banner").is_hidden()
    finally:
        context.close()


def test_a_policy_version_bump_shows_the_banner_again(site, browser, french_visitor, tmp_path):  # noqa: F811
    bumped = tmp_path / "consent_policy.yaml"
    bumped.write_text(
        yaml.safe_dump(
            {**POLICY.model_dump(mode="json"), "policy_version": "2099-01-01"}, sort_keys=False
        ),
        encoding="utf-8",
    )
    site.start({env_name("consent_policy"): str(bumped)})  # same workspace, ledger and key
    context = browser.new_context(locale="fr-FR")
    try:
        context.add_cookies(french_visitor["cookies"])
        page = context.new_page()
        page.goto(f"{site.url}/privacy")
        banner = page.locator("#banner")
        assert banner.is_visible()
        assert "Notre politique de confidentialité a changé" in banner.inner_text()
        # opt-in until they choose again: nothing is on, whatever they chose before
        for name in POLICY.optional_purposes:
            assert not page.locator(f"#p-{name}").is_checked()
        screenshot(page, "privacy_page_fr_policy_changed")
        state = _consent(site, french_visitor["anonymous_id"])
        assert state["needs_banner"] is True and state["policy_version"] == "2099-01-01"
        assert state["purposes"]["analytics"]["allowed"] is False
    finally:
        context.close()
