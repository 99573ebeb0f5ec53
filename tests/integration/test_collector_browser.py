"""The browser collector in a real browser (issue #11): headless Chromium loads a shop page from
another origin on the same site and sends events to a real ``bentoml serve`` three ways, as a
page would: ``fetch`` with credentials (JSON, a CORS preflight), ``navigator.sendBeacon`` (a
``text/plain`` string) and a 1×1 ``<img src=/collect.gif?e=...>`` pixel.

What only a browser shows: the cookies it keeps (``HttpOnly``, so ``document.cookie`` cannot read
them; ``SameSite=Lax``, yet sent on these same-site cross-origin calls), one anonymous id across
page loads and the three forms, a page from an origin outside ``TAILOR_COLLECT_ORIGINS`` failing
CORS in the browser with nothing stored, and a login (``/identify``) that brings the browser's
anonymous history to the user's ``/recommend``. Screenshots of both pages are kept in
``.artifacts/``.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import httpx
import pytest

from features.eventlog import EventLog
from features.settings import env_name
from serving.cookies import AID_COOKIE, SID_COOKIE
from serving.process import running_service
from tests.browser import browser, screenshot, serve_pages  # noqa: F401  (browser is a fixture)
from tests.integration.test_collector_http import Served, _stored
from tests.integration.test_identity_http import _state
from tests.integration.test_serving_http import (
    _categories,
    _post,
    _queue_empty,
    _until,
    admin_headers,
)

pytestmark = pytest.mark.integration

#: The shop page: on load it sends one event per form, in turn (the fetch first, so a new
#: visitor's cookies exist before the beacon and the pixel go), and writes each outcome into the
#: table; ``body[data-done]`` says it has finished. ``?pixel=0`` leaves the pixel out.
SHOP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Shop (collector browser test)</title>
<style>
  body { font: 16px sans-serif; margin: 2em; }
  td { padding: .3em .8em; border-bottom: 1px solid #ccc; font-family: monospace; }
</style></head>
<body>
<h1>Shop page</h1>
<table id="results"></table>
<script>
const params = new URLSearchParams(location.search);
const collector = params.get("collector");
const base = {product_id: params.get("product"), category: params.get("category"), price: 12.5};
document.cookie = "shop_pref=dark; path=/";  // the page's own cookie, readable by script

function show(name, value) {
  const row = document.getElementById("results").insertRow();
  row.id = "r-" + name;
  row.insertCell().textContent = name;
  row.insertCell().textContent = value;
}
function event(form, fields) {
  return {event_id: `${params.get("run")}-${params.get("load")}-${form}`, ...fields};
}

async function send() {
  show("origin", location.origin);
  try {
    const response = await fetch(collector + "/collect", {
      method: "POST", credentials: "include", headers: {"content-type": "application/json"},
      body: JSON.stringify(event("fetch", {event_type: "product_view", ...base})),
    });
    show("fetch", `${response.status} ${await response.text()}`);
  } catch (error) {
    show("fetch", `${error.name}: ${error.message}`);
  }
  const beacon = [event("beacon", {event_type: "add_to_cart", quantity: 1, ...base})];
  show("beacon", navigator.sendBeacon(collector + "/collect", JSON.stringify(beacon))
    ? "queued" : "refused");
  if (params.get("pixel") !== "0") {
    const pixel = event("pixel", {event_type: "page_view", page: location.pathname});
    await new Promise(resolve => {
      const img = document.createElement("img");
      img.onload = () => { show("pixel", `${img.naturalWidth}x${img.naturalHeight}`); resolve(); };
      img.onerror = () => { show("pixel", "error"); resolve(); };
      img.src = collector + "/collect.gif?e=" + encodeURIComponent(JSON.stringify(pixel));
      document.body.append(img);
    });
  }
  show("document.cookie", document.cookie);
  document.body.dataset.done = "1";
}
send();
</script>
</body></html>
"""

FORMS = ("fetch", "beacon", "pixel")
WAIT_SECONDS = 10.0


@pytest.fixture(scope="module")
def sites(trained_workspace, tmp_path_factory):
    """The service, allowing CORS for the shop's origin only, and two origins serving the shop
    page: ``shop`` (allowed) and ``other`` (same site, another port, not allowed)."""
    with (
        serve_pages({"/shop.html": SHOP_PAGE}) as shop,
        serve_pages({"/shop.html": SHOP_PAGE}) as other,
    ):
        ws = trained_workspace.copy_to(tmp_path_factory.mktemp("collector-browser"))
        with running_service(ws, extra_env={env_name("collect_origins"): shop}) as url:
            yield Served(url, ws, admin_headers(ws)), shop, other


def _open(page, origin: str, served: Served, **query: str) -> dict[str, str]:
    """Load the shop page from ``origin`` and wait for it to send; its outcome table."""
    page.goto(f"{origin}/shop.html?{urlencode({'collector': served.url, **query})}")
    page.wait_for_selector("body[data-done]", timeout=WAIT_SECONDS * 1000)
    rows = page.locator("#results tr").all()
    return dict(tuple(row.locator("td").all_inner_texts()) for row in rows)


def _refused_origins(served: Served) -> float:
    text = httpx.get(f"{served.url}/metrics", headers=served.headers, timeout=30).text
    found = re.search(
        r'tailor_rejections_total\{endpoint="/collect",reason="origin_not_allowed"\} (\S+)', text
    )
    return float(found.group(1)) if found else 0.0


def test_a_browser_collects_under_one_anonymous_id_and_a_login_brings_it_to_the_user(
    sites,
    browser,  # noqa: F811
    trained_workspace,
):
    served, shop, other = sites
    run = f"b-{uuid.uuid4().hex[:12]}"
    product, category = next(iter(_categories(trained_workspace).items()))
    query = {"run": run, "product": product, "category": category}
    context = browser.new_context()
    try:
        page = context.new_page()
        for load in ("1", "2"):  # two page loads, one browser
            outcome = _open(page, shop, served, load=load, **query)
            assert outcome["origin"] == shop
            # the CORS grant with credentials lets the page read the answer
            assert outcome["fetch"].startswith("202 "), outcome
            assert '"accepted":1' in outcome["fetch"].replace(" ", ""), outcome
            assert outcome["beacon"] == "queued" and outcome["pixel"] == "1x1", outcome
            # cookies are per host, not per port: only HttpOnly keeps the collector's from
            # this page's script, which sees its own cookie
            assert outcome["document.cookie"] == "shop_pref=dark", outcome
        screenshot(page, "collector_browser_allowed_origin")

        cookies = {c["name"]: c for c in context.cookies(served.url)}
        assert set(cookies) == {AID_COOKIE, SID_COOKIE, "shop_pref"}
        for name in (AID_COOKIE, SID_COOKIE):
            cookie = cookies[name]
            flags = (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"])
            assert flags == (True, "Lax", False, "/"), cookie  # plain HTTP: no Secure
        expires = datetime.fromtimestamp(cookies[AID_COOKIE]["expires"], UTC)
        assert abs(expires - (datetime.now(UTC) + timedelta(days=395))) < timedelta(hours=1)

        ids = [f"{run}-{load}-{form}" for load in ("1", "2") for form in FORMS]
        stored = _stored(served, *ids)
        assert sorted(stored) == sorted(ids)
        assert {row["anonymous_id"] for row in stored.values()} == {stored[ids[0]]["anonymous_id"]}
        assert len({row["session_id"] for row in stored.values()}) == 1
        types = {event_id.rsplit("-", 1)[1]: row["event_type"] for event_id, row in stored.items()}
        assert types == {"fetch": "product_view", "beacon": "add_to_cart", "pixel": "page_view"}
        assert {row["device_type"] for row in stored.values()} == {"desktop"}  # Chromium's UA
        anonymous_id = stored[ids[0]]["anonymous_id"]
        assert uuid.UUID(anonymous_id)

        # a page on the same site but an origin outside the allow-list: the preflight is
        # refused, so the browser fails the fetch; the beacon goes (no preflight) and is refused
        refused_before = _refused_origins(served)
        outcome = _open(page, other, served, load="other", pixel="0", **query)
        assert outcome["fetch"] == "TypeError: Failed to fetch", outcome
        assert outcome["beacon"] == "queued", outcome
        screenshot(page, "collector_browser_refused_origin")
        assert _until(lambda: _refused_origins(served) >= refused_before + 2), (
            _refused_origins(served),
            refused_before,
        )
        assert _until(lambda: _queue_empty(served))
        assert EventLog(served.ws.event_log_dir).stored([f"{run}-other-fetch"]).empty
        assert EventLog(served.ws.event_log_dir).stored([f"{run}-other-beacon"]).empty
    finally:
        context.close()

    # the site's back end logs the visitor in: the browser's anonymous history is the user's
    user = f"browser-user-{run}"
    login = _post(served, "/identify", {"anonymous_id": anonymous_id, "user_id": user})
    assert login.status_code == 200, login.text
    assert login.json()["merged"] == [f"anon:{anonymous_id}"]
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        answer = _post(served, "/recommend", {"user_id": user}).json()
        state = _state(answer)
        if state.get("events") == 6 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (state["events"], state["views"], state["carts"]) == (6, 2, 2), state
    assert state["categories"] == {category: 2}
    assert answer["features"]["last_category"] == category
