#!/usr/bin/env python3
"""End-to-end run of the real desktop app through WebDriver (WebKitWebDriver), in demo mode:
an embedded broker, simulated agents and the development authenticator. Run inside
scripts/session.sh (Xvfb, D-Bus, gnome-keyring, dunst). Standard library only.

Checks: requests arrive and are notified (dunst's history); a click on a notification opens its
request; review; the keyboard path through a review (Tab from its heading to Approve and Deny…,
the reason field, Deny, Deny and suspend agent, Back; each with a visible focus ring) and an
approval by Enter with the dev authenticator; the agent's gateway redeems, history shows it
redeemed and the chain verifies; a status message goes when the owner opens another item or
view; deny, and deny-and-suspend; two requests approved in one ceremony (each grant redeemed
once, a replay refused); export; hostile content; rename, autostart; countersign://pair
links. axe-core (ui/node_modules/axe-core, injected into the app's page) checks Pending, a
Review, a batch review, History and Settings in light and in dark (the batch in light): any
serious or critical finding fails the run, the others are printed. Saves screenshots of
Pending, Review, the batch review, History and Settings in light and dark to $COUNTERSIGN_SCREENSHOTS (default target/e2e-screenshots; `make screenshots` refreshes
docs/screenshots/).
"""
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.environ.get("COUNTERSIGN_SCREENSHOTS") or os.path.join(ROOT, "target", "e2e-screenshots")
PORT = int(os.environ.get("E2E_WEBDRIVER_PORT", "4446"))
BASE = f"http://127.0.0.1:{PORT}"
AXE = os.path.join(ROOT, "ui", "node_modules", "axe-core", "axe.min.js")
# WebDriver key codes.
TAB, ENTER, SHIFT = "\ue004", "\ue007", "\ue008"


def call(method, path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None


class Session:
    def __init__(self, binary):
        caps = {"capabilities": {"alwaysMatch": {
            "webkitgtk:browserOptions": {"binary": binary, "args": ["--demo"]}}}}
        self.id = call("POST", "/session", caps, timeout=120)["sessionId"]

    def p(self, path):
        return f"/session/{self.id}{path}"

    def find_all(self, css):
        return [list(e.values())[0] for e in call("POST", self.p("/elements"), {"using": "css selector", "value": css})]

    def text(self, el):
        return call("GET", self.p(f"/element/{el}/text"))

    def click(self, el):
        call("POST", self.p(f"/element/{el}/click"), {})

    def value(self, el):
        return call("GET", self.p(f"/element/{el}/property/value"))

    def type(self, el, text):
        call("POST", self.p(f"/element/{el}/value"), {"text": text})

    def script(self, js, *args, timeout=60):
        return call("POST", self.p("/execute/sync"), {"script": js, "args": list(args)}, timeout=timeout)

    def script_async(self, js, *args, timeout=60):
        call("POST", self.p("/timeouts"), {"script": timeout * 1000})
        return call("POST", self.p("/execute/async"), {"script": js, "args": list(args)}, timeout=timeout + 10)

    def keys(self, *keys, held=None):
        """Presses each key in turn (with `held` down throughout) on whatever has the focus."""
        pressed = []
        for k in keys:
            pressed += [{"type": "keyDown", "value": k}, {"type": "keyUp", "value": k}]
        if held:
            pressed = [{"type": "keyDown", "value": held}, *pressed, {"type": "keyUp", "value": held}]
        call("POST", self.p("/actions"), {"actions": [{"type": "key", "id": "keyboard", "actions": pressed}]})
        call("DELETE", self.p("/actions"))

    def focused(self):
        """The focused element's text, whether it is inside the review, and whether it shows a
        focus ring (:focus-visible and an outline)."""
        return self.script("const a = document.activeElement;"
                           "if (!a || a === document.body) return null;"
                           "const ring = a.matches(':focus-visible') && getComputedStyle(a).outlineStyle !== 'none';"
                           "return {text: a.textContent.trim(), tag: a.tagName.toLowerCase(),"
                           " review: !!a.closest('article.review'), ring};")

    def wait(self, what, f, timeout=60):
        until = time.time() + timeout
        while time.time() < until:
            try:
                got = f()
                if got:
                    return got
            except RuntimeError:
                pass
            time.sleep(0.25)
        self.shot("failure")
        raise AssertionError(f"timed out waiting for {what}")

    def shot(self, name):
        # Two animation frames, so what is painted is what the DOM says.
        self.script("return await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        png = base64.b64decode(call("GET", self.p("/screenshot")))
        os.makedirs(SHOTS, exist_ok=True)
        with open(os.path.join(SHOTS, f"{name}.png"), "wb") as f:
            f.write(png)
        print(f"screenshot {os.path.relpath(os.path.join(SHOTS, name + '.png'), ROOT)}")

    def find_in(self, el, css):
        found = call("POST", self.p(f"/element/{el}/elements"), {"using": "css selector", "value": css})
        return list(found[0].values())[0] if found else None

    def button(self, label):
        for el in self.find_all("button"):
            if self.text(el).strip().lower().startswith(label.lower()):
                return el
        return None

    def nav(self, label):
        self.click(self.wait(f"the {label} tab", lambda: self.button(label)))

    def message(self):
        els = self.find_all("main > .status-region > p.notice, main > p.notice")
        return self.text(els[0]) if els else ""

    def close(self):
        try:
            call("DELETE", self.p(""))
        except Exception:
            pass


def accessible(s, page):
    """axe-core, injected into the app's page, finds nothing serious or critical on it (colour
    contrast included, so each theme is checked); moderate and minor findings are printed."""
    if not s.script("return typeof window.axe === 'object'"):
        with open(AXE) as f:
            s.script(f.read())
    found = s.script_async(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then("
        " r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        "  nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))),"
        " e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
        timeout=120)
    bad = [v for v in found if v["impact"] in ("serious", "critical")]
    for v in found:
        if v not in bad:
            print(f"axe {page}: {v['impact']} {v['id']}: {v['help']} {v['nodes']}")
    if bad:
        s.shot(f"axe-{page}")
        raise AssertionError(f"axe on {page}: serious or critical findings\n" + json.dumps(bad, indent=1))
    print(f"axe {page}: no serious or critical finding ({len(found)} other)")


def tab(s, label, back=False, review=True):
    """Presses Tab (Shift+Tab with `back`) until the control whose text starts with `label` has
    the focus, which must show a ring; with `review`, no stop on the way is outside the review."""
    for _ in range(60):
        s.keys(TAB, held=SHIFT if back else None)
        at = s.focused()
        assert at, f"Tab left the focus on the page before {label!r}"
        assert at["review"] or not review, f"Tab left the review before {label!r}: {at}"
        if at["text"].startswith(label):
            assert at["ring"], f"no focus ring on {label!r}"
            return
    raise AssertionError(f"Tab never reached {label!r}")


def keyboard_review(s):
    """The review by keyboard alone: Tab from its heading reaches Approve, then Deny…; Enter on
    Deny… puts the focus in the reason field; Tab reaches Deny, Deny and suspend agent and Back;
    Back returns the focus to Deny…; every stop shows a focus ring and none is outside the review.
    Leaves the focus on Approve."""
    s.script("document.querySelector('article.review h2').focus(); return true")

    def tab_to(label, back=False):
        tab(s, label, back)

    tab_to("Approve with authenticator")
    tab_to("Deny…")
    s.keys(ENTER)
    s.wait("the focus in the reason field", lambda: s.script("return document.activeElement.matches('.deny-form input')"))
    s.keys(*"by keyboard")
    tab_to("Deny")
    tab_to("Deny and suspend agent")
    tab_to("Back")
    s.keys(ENTER)
    s.wait("the focus back on Deny…", lambda: (s.focused() or {}).get("text") == "Deny…")
    tab_to("Approve with authenticator", back=True)
    print("keyboard: Tab reaches Approve, Deny…, the reason, Deny, Deny and suspend agent, Back")


def notified():
    subprocess.run(["dunstctl", "close-all"], check=True)
    out = subprocess.run(["dunstctl", "history"], check=True, capture_output=True, text=True).stdout
    return [(n["appname"]["data"], n["summary"]["data"], n["body"]["data"]) for n in json.loads(out)["data"][0]]


def select(s, tool):
    """Selects the first pending item for `tool`; returns its intent."""
    def find():
        for li in s.find_all("li[role=option]"):
            if s.text(li).startswith(tool):
                return li
        return None
    def opened():
        s.click(s.wait(f"a pending {tool}", find))
        codes = s.find_all("article.review dl.facts code")
        return codes and s.text(codes[0]) == tool
    return s.wait(f"the review of {tool}", opened)


def refund_call(demo, agent, intent, arguments, resource_properties=None):
    """A refund call (AuthZEN-shaped) as one of the demo agents would make it."""
    resource = {"type": "tool", "id": "stripe/refunds.create"}
    if resource_properties:
        resource["properties"] = resource_properties
    return {
        "subject": {"type": "user", "id": demo["owner"]},
        "actor": {"id": agent["id"], **({"act": {"sub": agent["delegated_by"]}} if agent["delegated_by"] else {})},
        "action": {"name": "tools/call"},
        "resource": resource,
        "context": {"intent": intent, "arguments": arguments, "data": {"domain": "payments", "classification": ["financial"]}},
    }


def post(demo, path, secret, body, method="POST"):
    """A call to the demo broker with a bearer secret; returns (HTTP status or error text, body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(demo["broker"] + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + secret})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()[:300]
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text
    except (urllib.error.URLError, ConnectionError) as e:
        return str(e), None


def evaluate(demo, agent, intent, arguments, resource_properties=None):
    """Submits a call as one of the demo agents; returns (HTTP status or error text, body)."""
    return post(demo, "/access/v1/evaluation", agent["secret"],
                refund_call(demo, agent, intent, arguments, resource_properties))


def redeem(demo, grant, call):
    """Redeems `grant` for `call` as the demo gateway it was made for; returns (status, body)."""
    for gateway in demo["gateways"]:
        status, body = post(demo, "/v1/grants/redeem", gateway["secret"], {"grant": grant, "action": call})
        if not (isinstance(body, dict) and body.get("code") == "wrong_audience"):
            return status, body
    raise AssertionError("no demo gateway is the grant's audience")


def batch_approval(s):
    """Two refunds chosen on Pending, by keyboard alone, are reviewed side by side and approved
    with one touch of the development authenticator; each gets its own grant, which its gateway
    redeems once, and a replay is refused."""
    demo = demo_info()
    agent = demo["agents"][0]
    held = []
    for order in ("7001", "7002"):
        intent = f"Batch refund of order {order}"
        call = refund_call(demo, agent, intent, {"order": order, "amount": "8000.00", "currency": "EUR"})
        status, answer = post(demo, "/access/v1/evaluation", agent["secret"], call)
        assert status == 200 and not answer["decision"], (status, answer)
        held.append((answer["context"]["approval"]["id"], intent, call))

    # By keyboard: Select several, Space on each checkbox, Tab to Review, then from the batch's
    # heading Tab to Approve all, each stop with a focus ring.
    s.nav("Pending")
    s.wait("the way to select several", lambda: s.button("Select several"))
    s.script("document.querySelector('.list-head button').focus(); return true")
    s.keys(ENTER)
    for _, intent, _ in held:
        def box():
            for li in s.find_all("ul.picks li"):
                if intent in s.text(li):
                    return s.find_in(li, "input[type=checkbox]")
            return None
        s.wait(f"the checkbox of {intent!r}", box)
        s.script("const li = [...document.querySelectorAll('ul.picks li')].find(l => l.textContent.includes(arguments[0]));"
                 "li.scrollIntoView({block: 'center'}); li.querySelector('input').focus(); return true", intent)
        s.keys(" ")
        s.wait(f"{intent!r} selected", lambda: s.script("return document.activeElement.checked === true"))
    tab(s, "Review 2 selected", review=False)
    s.keys(ENTER)
    def listed():
        articles = s.find_all("article.batch")
        return articles and all(intent.lower() in s.text(articles[0]).lower() for _, intent, _ in held)
    s.wait("both requests listed in full", listed)
    s.wait("the focus on the batch's heading", lambda: s.script("return document.activeElement.id === 'batch-title'"))
    s.shot("batch-light")
    accessible(s, "batch-light")
    tab(s, "Approve all 2 with authenticator")
    s.keys(ENTER)
    s.wait("the batch approval", lambda: "Approved 2 requests; the broker has them." in s.message())
    print("batch:", s.message())

    grants = set()
    for item, _, call in held:
        status, answer = post(demo, f"/v1/requests/{item}?wait=10", agent["secret"], None, method="GET")
        assert status == 200 and answer["status"] == "approved", (status, answer)
        grants.add(answer["grant"])
        assert redeem(demo, answer["grant"], call)[0] == 200
        replay = redeem(demo, answer["grant"], call)
        assert replay[0] == 409 and replay[1]["code"] == "replayed", replay
    assert len(grants) == 2, "each request has its own grant"
    print("batch: each grant redeemed once for its own call; the replays refused")


def bounded_grant(s):
    """A refund approved with limits, by keyboard: later refunds of any order up to a ceiling run
    without a prompt — the next one is released at once — the Grants page lists the grant with
    its uses, and revoking it (by keyboard) stops it: the call after that is held again."""
    demo = demo_info()
    agent = demo["agents"][0]

    # In francs: the grant keeps the currency equal, and the demo's simulated agents, still
    # running, refund in euros, so none of their calls can take one of the grant's uses.
    def ask(order, amount):
        call = refund_call(demo, agent, f"Bounded refund of order {order}", {"order": order, "amount": amount, "currency": "CHF"})
        status, answer = post(demo, "/access/v1/evaluation", agent["secret"], call)
        assert status == 200 and not answer["decision"], (status, answer)
        item = answer["context"]["approval"]["id"]
        status, now = post(demo, f"/v1/requests/{item}", agent["secret"], None, method="GET")
        assert status == 200, (status, now)
        return item, now["status"], answer["context"]["reason"]

    first, status, _ = ask("7101", "8000.00")
    assert status == "pending", status
    s.nav("Pending")
    def row():
        return next((li for li in s.find_all("li[role=option]") if "order 7101" in s.text(li)), None)
    s.click(s.wait("the refund of order 7101", row))
    s.wait("its review", lambda: "order 7101" in s.text(s.find_all("article.review h2")[0]))
    s.script("document.querySelector('article.review h2').focus(); return true")
    tab(s, "Approve with limits…")
    s.keys(ENTER)
    s.wait("the focus on the limits' heading", lambda: s.script("return document.activeElement.id === 'limits-title'"))
    # The limits: three calls in all; any order; the amount at most 9000; the currency the same.
    s.script("""
      const set = (el, value, event) => { el.value = value; el.dispatchEvent(new Event(event, {bubbles: true})); };
      set(document.querySelector('.limits-row input[type=number]'), '3', 'input');
      set(document.querySelector('select[aria-label="Later calls: order"]'), 'any', 'change');
      set(document.querySelector('select[aria-label="Later calls: amount"]'), 'max', 'change');
      return true""")
    ceiling = s.wait("the ceiling field", lambda: s.script(
        "return !!document.querySelector('input[aria-label=\"Ceiling of amount\"]')"))
    assert ceiling
    s.script("""
      const el = document.querySelector('input[aria-label="Ceiling of amount"]');
      el.value = '9000'; el.dispatchEvent(new Event('input', {bubbles: true}));
      document.getElementById('limits-title').focus();
      document.querySelector('.limits-form').scrollIntoView({block: 'end'}); return true""")
    s.shot("bounded-create-light")
    accessible(s, "bounded-create-light")
    tab(s, "Approve up to 3 calls with authenticator")
    s.keys(ENTER)
    s.wait("the bounded approval", lambda: "Approved; the broker has it." in s.message())
    print("bounded:", s.message())

    # The next refund within the limits is released at once; one over the ceiling is held.
    later, status, reason = ask("7102", "8500.00")
    assert status == "approved" and "bounded grant" in reason, (status, reason)
    over, status, _ = ask("7103", "9500.00")
    assert status == "pending", status
    print("bounded: a later refund within the limits released without a prompt; one over the ceiling held")

    s.nav("Grants")
    def listed():
        items = s.find_all("ul[aria-label='Active bounded grants'] > li")
        return items and "1 of 3 uses left" in s.text(items[0]) and "amount at most 9000" in s.text(items[0])
    s.wait("the grant with its uses", listed)
    s.shot("grants-light")
    accessible(s, "grants-light")
    s.script("document.getElementById('grants-title').focus(); return true")
    tab(s, "Revoke", review=False)
    s.keys(ENTER)
    s.wait("the revocation", lambda: "Revoked the grant" in s.message())
    s.wait("no grant left", lambda: "No bounded grant can release a call now." in s.text(s.find_all("section.grants")[0]))
    _, status, _ = ask("7104", "2000.00")
    assert status == "pending", status
    status, after = post(demo, f"/v1/requests/{later}", agent["secret"], None, method="GET")
    assert after["status"] == "revoked", after
    print("bounded: revoked by keyboard; the released call revoked with it; the next call held")

    # The owner's history has the released call, recorded under the grant.
    s.nav("History")
    def released_row():
        s.click(s.button("Filter"))
        return next((r for r in s.find_all("ul.rows button.row") if "order 7102" in s.text(r)), None)
    s.click(s.wait("the released call in the history", released_row, timeout=60))
    s.wait("its entry under the grant", lambda: "under bounded grant" in s.text(s.find_all("ol.timeline")[0]))
    print("bounded: the released call is in the history under its grant")


def demo_info():
    with open(os.path.join(os.environ["COUNTERSIGN_DEMO_DIR"], "demo.json")) as f:
        return json.load(f)


def displayed():
    out = subprocess.run(["dunstctl", "count", "displayed"], check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def notification_opens_its_item(s):
    """A new request is notified; a click on the notification (its default action, as dunst
    invokes it) brings the window up on that request's review. The simulated agents keep
    submitting, so another notification may come between ours and the click: the click then
    opens that one, and the run tries again with a new request."""
    demo = demo_info()
    for attempt in range(5):
        order = str(4242 + attempt)
        subprocess.run(["dunstctl", "close-all"], check=True)
        s.nav("History")
        status, body = evaluate(demo, demo["agents"][0], f"Refund order {order}, opened from its notification",
                                {"order": order, "amount": "9100.00", "currency": "EUR"})
        assert status == 200 and not body["decision"], (status, body)
        s.wait("its notification on screen", lambda: displayed() >= 1)
        if displayed() != 1:
            continue
        subprocess.run(["dunstctl", "action", "0"], check=True)
        def opened():
            heads = s.find_all("article.review h2.intent")
            return heads and s.find_all("section.list") and s.text(heads[0])
        s.wait("a review opened by the notification", opened)
        # The review may show the item open before for a moment; ours, if it was our click.
        try:
            s.wait("the review of its own request", lambda: f"order {order}" in opened(), timeout=5)
            break
        except AssertionError:
            continue
    else:
        raise AssertionError("five notifications in a row opened another request than their own")
    print("notification clicked: the window shows its request")


def pairing_link(s, binary):
    """countersign://pair links, opened as the desktop opens them (a second instance with the
    link as its argument), fill in the pairing form and pair nothing by themselves; a bad link
    is refused with its reason."""
    demo = demo_info()
    link = "countersign://pair?broker=" + urllib.parse.quote(demo["broker"], safe="") + "&code=e2e-link-code"
    second = subprocess.run([binary, link], timeout=60, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    def filled():
        inputs = s.find_all("section.settings form.pair input")
        return len(inputs) == 3 and [s.value(i) for i in inputs][:2] == [demo["broker"], "e2e-link-code"]
    s.wait("the pairing form filled in by the link", filled)
    notice = s.text(s.find_all("section.settings p.notice")[0])
    assert "A link asks to pair with" in notice, notice
    s.shot("settings-pair-link-light")
    # Pairing is still the owner's step, with its checks: this broker is paired already.
    s.click(s.button("Pair"))
    s.wait("the refusal", lambda: "is already paired" in s.text(s.find_all("section.settings p.notice")[0]))
    print("pairing link: form filled;", s.text(s.find_all("section.settings p.notice")[0]))
    subprocess.run([binary, "countersign://pair?code=abc"], timeout=60, check=True, capture_output=True)
    s.wait("the bad link refused", lambda: "Link refused: the pairing link has no broker"
           in s.text(s.find_all("section.settings p.notice")[0]))
    print("bad link refused")


def settings_round_trip(s):
    """Rename an authenticator (and back), turn autostart on (the login entry appears) and off."""
    s.nav("Settings")
    card = s.wait("an authenticator", lambda: s.find_all("section.settings ul.auths li"))[0]
    name = s.text(s.find_all("section.settings ul.auths li strong")[0])
    for new in (name + " (renamed)", name):
        s.click(s.wait("the rename button", lambda: s.button("Rename")))
        field = s.wait("the new name field", lambda: s.find_all("section.settings form.rename input"))[0]
        call("POST", s.p(f"/element/{field}/clear"), {})
        s.type(field, new)
        s.click(s.button("Save"))
        s.wait(f"the name {new!r}", lambda: s.text(s.find_all("section.settings ul.auths li strong")[0]) == new)
    del card
    entry = os.path.join(os.environ["HOME"], ".config", "autostart", "Countersign.desktop")
    box = s.find_all("section.settings input.autostart")[0]
    s.click(box)
    s.wait("the login entry", lambda: os.path.exists(entry))
    with open(entry) as f:
        text = f.read()
    assert "--autostart" in text, text
    s.click(box)
    s.wait("the login entry removed", lambda: not os.path.exists(entry))
    print("settings: authenticator renamed and back; autostart on (login entry written) and off")


def export_history(s):
    s.nav("History")
    s.click(s.wait("the export button", lambda: s.button("JSON Lines")))
    def exported():
        for p in s.find_all("section.history p.notice"):
            t = s.text(p)
            if t.startswith("Exported "):
                return t
        return None
    text = s.wait("the export", exported)
    path = text.split(" to ", 1)[1]
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == int(text.split()[1]) and all(json.loads(l)["hash"] for l in lines), text
    print("history exported:", text)


def hostile(s):
    """Markup and script, bidi overrides and a 200 KB argument render inert and whole; a 1 MB
    argument is refused by the broker; the app keeps working."""
    demo = demo_info()
    agent = demo["agents"][0]
    script = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    # Markup, bidi overrides, a line break posing as a line of the review, a Cyrillic look-alike,
    # properties the review must show too, and a 200 KB value.
    status, body = evaluate(demo, agent, f"Refund {script} to \u202emoc.liame\u202c\nTool: calendar/read", {
        "order": "6666", "amount": "9000.00", "currency": "EUR", "payee": "p\u0430ypal",
        "note": "pay to \u202egnp.exe\u202c now\u200b", "blob": "B" * 200_000},
        resource_properties={"account": "acct_attacker_999", "mode": "live"})
    assert status == 200 and not body["decision"], (status, body)
    item = body["context"]["approval"]["id"]
    huge, _ = evaluate(demo, agent, "Refund with a 1 MB argument", {"order": "1", "amount": "9000.00", "blob": "A" * (1 << 20)})
    assert huge != 200, huge
    print(f"hostile: held as {item}; the 1 MB argument refused ({huge})")

    s.nav("Pending")
    def hostile_item():
        for li in s.find_all("li[role=option]"):
            if "moc.liame" in s.text(li):
                return li
        return None
    def review():
        s.click(s.wait("the hostile item", hostile_item))
        heads = s.find_all("article.review h2.intent")
        return heads and "moc.liame" in s.text(heads[0]) and s.text(heads[0])
    text = s.wait("its review", review)
    assert "<script>" in text and "[U+202E RLO]" in text, text
    assert "[U+000A LF]Tool: calendar/read" in text, "a line break stays inside its field: " + text
    page = s.text(s.find_all("article.review")[0])
    # Headings are shown in capitals (CSS): compare words case-blind, markers exactly.
    words = page.lower()
    assert "acct_attacker_999" in page and "about the tool" in words, "properties are shown: " + page
    assert "p[U+0430 CYRILLIC]ypal" in page, "a look-alike letter is marked: " + page
    assert "line breaks" in words and "claimed by the agent" in words, page
    marks = s.find_all("article.review mark.hidden-char")
    assert len(marks) >= 3, len(marks)
    # The arguments' own fold (the context's comparison may fold the same value too).
    unfold = [b for b in s.find_all("table.arguments button.link") if "show all" in s.text(b)]
    folded = unfold[0] if unfold else None
    assert folded is not None, "the 200 KB value is folded, with a way to see all of it"
    s.shot("review-hostile-light")
    s.script("[...document.querySelectorAll('table.arguments button.link')]"
             ".find(b => b.textContent.includes('show all')).scrollIntoView({block: 'center'})")
    s.click(folded)
    # Laying out 200 KB without a break opportunity takes the webview a few seconds on a quiet
    # machine and much longer on a loaded one; the script runs once it is done.
    started = time.time()
    shown = s.script("return Math.max(...[...document.querySelectorAll('table.arguments td')].map(td => td.textContent.length))", timeout=600)
    assert shown >= 200_000, shown
    print(f"hostile: the 200 KB value shown whole in {time.time() - started:.1f} s")
    assert s.script("return window.__pwned === undefined") is True, "agent markup must never run"
    s.click(s.button("Deny"))
    s.type(s.wait("the reason field", lambda: s.find_all(".deny-form input"))[0], "prompt injection")
    s.click(s.button("Deny"))
    s.wait("the denial", lambda: "Denied; the broker has it." in s.message())
    print("hostile: shown inert and whole, nothing ran, denied; the app goes on")


def main():
    binary = sys.argv[1]
    demo_dir = tempfile.mkdtemp(prefix="countersign-e2e-")
    os.environ["COUNTERSIGN_DEMO_DIR"] = demo_dir
    env = dict(os.environ, TAURI_WEBVIEW_AUTOMATION="true", COUNTERSIGN_DEMO_PAUSE_MS="400")
    driver = subprocess.Popen(["WebKitWebDriver", f"--port={PORT}", "--host=127.0.0.1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = None
    try:
        for _ in range(100):
            try:
                call("GET", "/status")
                break
            except Exception:
                time.sleep(0.1)
        s = Session(binary)
        s.nav("Settings")
        s.click(s.wait("the light theme", lambda: s.button("light")))
        s.nav("Pending")

        # Requests arrive, and each is notified once.
        s.wait("pending requests", lambda: len(s.find_all("li[role=option]")) >= 4)
        summaries = s.wait("notifications in dunst", lambda: [n for n in notified() if n[0] == "Countersign"])
        assert any("wants stripe/refunds.create" in n[1] for n in summaries), summaries
        print(f"notified: {len(summaries)} (e.g. {summaries[0][1]!r})")
        s.shot("pending-light")
        accessible(s, "pending-light")
        notification_opens_its_item(s)

        # Review a refund, by keyboard, and approve it with Enter and the development authenticator.
        select(s, "stripe/refunds.create")
        s.shot("review-light")
        accessible(s, "review-light")
        keyboard_review(s)
        s.keys(ENTER)
        s.wait("the approval", lambda: "Approved; the broker has it." in s.message())
        print("approved:", s.message())
        # The decision took its buttons away; the focus went to what is on screen, not the page.
        s.wait("the focus kept after the decision", s.focused)

        # Deny one, then deny another and suspend its agent. A message belongs to its item: it
        # goes when the owner opens another.
        select(s, "github/repos.delete")
        assert s.message() == "", "the approval's message stays with the approved item: " + s.message()
        s.click(s.button("Deny"))
        s.type(s.wait("the reason field", lambda: s.find_all(".deny-form input"))[0], "not without a ticket")
        s.click(s.button("Deny"))
        s.wait("the denial", lambda: "Denied; the broker has it." in s.message())
        select(s, "gmail/send")
        s.click(s.button("Deny"))
        s.type(s.wait("the reason field", lambda: s.find_all(".deny-form input"))[0], "suspicious recipient")
        s.click(s.button("Deny and suspend agent"))
        s.wait("the denial with suspension", lambda: "Denied; the broker has it." in s.message())
        print("denied twice, the second with suspension")
        batch_approval(s)
        bounded_grant(s)

        # History: the approved refund is redeemed by the agent's gateway; the chain verifies. The
        # denial's message stayed on Pending.
        s.nav("History")
        assert s.message() == "", "the denial's message follows the owner to History: " + s.message()
        def redeemed():
            s.click(s.button("Filter"))
            return [r for r in s.find_all("ul.rows button.row") if "redeemed" in s.text(r).lower()]
        rows = s.wait("the grant redeemed", redeemed, timeout=90)
        integrity = s.wait("the integrity status", lambda: s.find_all(".integrity.ok"))
        print("history:", s.text(rows[0])[:80], "|", s.text(integrity[0]))
        s.click(rows[0])
        s.wait("the redeemed item's review", lambda: "redeemed" in s.text(s.find_all("ol.timeline")[0]).lower())
        s.script("document.querySelector('section.history ul.rows').scrollTop = 0; return true")
        s.shot("history-light")
        accessible(s, "history-light")

        export_history(s)
        hostile(s)
        settings_round_trip(s)
        s.nav("Settings")
        s.wait("settings", lambda: s.find_all("section.settings"))
        s.shot("settings-light")
        accessible(s, "settings-light")
        pairing_link(s, binary)

        # Dark theme, through the settings page.
        s.click(s.button("dark"))
        s.wait("the dark theme", lambda: s.script("return document.documentElement.dataset.theme") == "dark")
        s.shot("settings-dark")
        accessible(s, "settings-dark")
        s.nav("Pending")
        s.wait("pending requests", lambda: s.find_all("li[role=option]"))
        s.shot("pending-dark")
        accessible(s, "pending-dark")
        select(s, "postgres/query")
        s.shot("review-dark")
        accessible(s, "review-dark")
        s.nav("History")
        s.wait("history rows", lambda: s.find_all("ul.rows button.row"))
        s.shot("history-dark")
        accessible(s, "history-dark")
        print("e2e: all checks passed")
    finally:
        if s:
            s.close()
        driver.terminate()
        driver.wait(10)


if __name__ == "__main__":
    main()
