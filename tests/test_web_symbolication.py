"""The symbolication page (docs/web.md, "Symbolication"): the form, the API's checks and
messages, the frames in a table, escaped."""

from __future__ import annotations

import html
import json
import re
import uuid

import pytest

from tests.accounts import Caller, make_user
from tests.conftest import served
from tests.symbolication_support import new_id, sym, with_debug_id
from tests.web_pages import Page, fetch_page, read

DEMO_ID = "5C5A1B1D2E3F405162738495061728390"


@pytest.fixture
def settings(symbolication_settings):
    """An upstream symbol server and a symcache directory of this test's own."""
    return symbolication_settings


@pytest.fixture
def demo(upstream):
    upstream.put("libdemo.so", DEMO_ID, sym("examples/libdemo.so.sym"))
    return upstream


async def symbolicate(http_client, base_url, caller: Caller, **form: str) -> Page:
    return await fetch_page(http_client, base_url, caller, "/symbolication/", "POST", form=form)


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_sign_in_first(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/symbolication/")
    assert page.status == 302 and page.location == "/oidc/authenticate/?next=%2Fsymbolication%2F"
    posted = await symbolicate(http_client, base_url, Caller.anonymous(), mode="json", payload="{}")
    assert posted.status == 403


@pytest.mark.gen_test(timeout=60)
async def test_the_form_and_the_documentation_links(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime))  # no permission needed
    page = await fetch_page(http_client, base_url, caller, "/symbolication/")
    assert page.status == 200 and page.h1() == "Symbolication"
    assert ("OpenAPI description", "/api/openapi.json") in page.links
    assert "docs/symbolication.md" in page.text
    forms = [f for f in page.forms if f["action"] == "/symbolication/"]
    assert [f["fields"]["mode"] for f in forms] == ["modules", "json"]
    assert all(f["method"] == "post" and f["fields"]["csrf_token"] == caller.csrf for f in forms)
    assert "curl -s -X POST" in page.text and "/symbolicate/v5" in page.text
    assert "YOURTOKENHERE" not in page.text  # the API needs no token


@pytest.mark.gen_test(timeout=60)
async def test_modules_and_addresses_give_the_frames(
    http_client, base_url, runtime, demo, symbolication
):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    missing = new_id()
    page = await symbolicate(
        http_client,
        base_url,
        caller,
        mode="modules",
        modules=f"libdemo.so {DEMO_ID}\nlibmissing.so {missing}\n",
        addresses="0 0x1008\nlibdemo.so 4124\n1 0x100\n-1 65536\n",
    )
    assert page.status == 200, page.text
    rows = page.body.split('<table class="frames">', 1)[1].split("</table>", 1)[0]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", rows)).split())
    assert "0x1008" in text and "process_request" in text and "/src/demo/app.c:10" in text
    assert "/src/demo/app.c:12" in text and "inlined: clamp_value" in text
    assert "libmissing.so" in text and "<unknown>" in text and "&lt;unknown&gt;" in rows
    assert "found" in page.text and "not found" in page.text
    # What was sent, as the API takes it, and the curl command that sends it.
    sent = {"jobs": [{"memoryMap": [["libdemo.so", DEMO_ID], ["libmissing.so", missing]],
                      "stacks": [[[0, 4104], [0, 4124], [1, 256], [-1, 65536]]]}]}  # fmt: skip
    assert json.dumps(sent, separators=(",", ":")) in html.unescape(page.body)
    # The same answer as the API's, frame for frame.
    api = await http_client.fetch(
        base_url + "/symbolicate/v5", method="POST", body=json.dumps(sent)
    )
    frames = json.loads(api.body)["results"][0]["stacks"][0]
    assert [f.get("function") for f in frames] == ["process_request", "process_request", None, None]


@pytest.mark.gen_test(timeout=60)
async def test_a_v5_payload_with_several_jobs(http_client, base_url, runtime, demo, symbolication):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    payload = {
        "jobs": [
            {"memoryMap": [["libdemo.so", DEMO_ID]], "stacks": [[[0, 4104]]]},
            {"memoryMap": [["libdemo.so", DEMO_ID]], "stacks": [[[0, 4136]], [[0, 4104]]]},
        ]
    }
    page = await symbolicate(
        http_client, base_url, caller, mode="json", payload=json.dumps(payload)
    )
    assert page.status == 200
    headings = [text for tag, text in page.headings if tag == "h3"]
    assert headings == ["Job 0", "Job 1"]
    assert page.body.count('<table class="frames">') == 3
    # The request stays in its form, to change and send again.
    assert (
        json.loads(
            html.unescape(
                page.body.split('name="payload"', 1)[1].split(">", 1)[1].split("</textarea>")[0]
            )
        )
        == payload
    )


@pytest.mark.gen_test(timeout=60)
async def test_the_apis_messages_and_the_forms_own(http_client, base_url, runtime, symbolication):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    cases = [
        ({"mode": "json", "payload": "{not json"}, "Payload is not valid JSON"),
        ({"mode": "json", "payload": json.dumps({"jobs": [{}] * 11})},
         "please limit number of jobs in a single request to <= 10"),
        ({"mode": "json", "payload": json.dumps({"memoryMap": [], "stacks": [[[5, 1]]]})},
         "job 0 has invalid stacks"),
        ({"mode": "modules", "modules": "xul.pdb", "addresses": "0 1"},
         "Module line 1: give a debug file and a debug id"),
        ({"mode": "modules", "modules": "xul.pdb ABC", "addresses": "nss.pdb 0x10"},
         "Address line 1: no module 'nss.pdb' in the module list"),
        ({"mode": "modules", "modules": "xul.pdb ABC", "addresses": "0 0xzz"},
         "'0xzz' is not an address"),
        ({"mode": "modules", "modules": "xul.pdb ABC", "addresses": ""}, "Give at least one address"),
    ]  # fmt: skip
    for form, message in cases:
        page = await symbolicate(http_client, base_url, caller, **form)
        assert page.status == 400, form
        assert message in page.text, (message, page.text[:500])
    # What was typed stays in the form, escaped; a debug file name may hold < and >.
    page = await symbolicate(
        http_client, base_url, caller, mode="modules", modules="x<script>.pdb ABC", addresses="0 1"
    )
    assert page.status == 200
    assert "x&lt;script&gt;.pdb ABC</textarea>" in page.body
    assert "<script>.pdb" not in page.body


@pytest.mark.gen_test(timeout=60)
async def test_names_from_symbol_files_are_shown_escaped(
    http_client, base_url, runtime, upstream, symbolication
):
    ident = new_id()
    evil = with_debug_id(sym("examples/libdemo.so.sym"), ident).replace(
        b"process_request", b"<img src=x onerror=alert(1)>"
    )
    upstream.put("libdemo.so", ident, evil)
    caller = await Caller.with_session(runtime, await make_user(runtime))
    page = await symbolicate(
        http_client,
        base_url,
        caller,
        mode="modules",
        modules=f"libdemo.so {ident}",
        addresses="0 0x1008",
    )
    assert page.status == 200
    assert "<img src=x" not in page.body
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.body


@pytest.mark.gen_test(timeout=60)
async def test_without_the_csrf_token_nothing_is_symbolicated(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    page = await fetch_page(
        http_client, base_url, caller, "/symbolication/", "POST",
        form={"mode": "json", "payload": "{}"}, csrf=False,
    )  # fmt: skip
    assert page.status == 403 and "CSRF token missing or incorrect" in page.text


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    """The body a browser sends for the page's forms (multipart/form-data)."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for name, value in fields.items()
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.gen_test(timeout=60)
async def test_the_page_takes_what_the_api_takes(settings):
    """The page's body limit is the API's (SYMBOLICATION_MAX_BODY_SIZE), not the smaller one of
    other routes, with room for the form around the request."""
    limit = 256 * 1024
    server = served(
        settings.replace(request_max_body_size=16 * 1024, symbolication_max_body_size=limit)
    )
    async with server as (client, base):
        caller = await Caller.with_session(server.runtime, await make_user(server.runtime))
        assert caller.csrf is not None
        csrf = caller.csrf
        form = await fetch_page(client, base, caller, "/symbolication/")
        assert form.body.count('enctype="multipart/form-data"') == 2

        async def post(payload: str) -> Page:
            body, content_type = multipart({"csrf_token": csrf, "mode": "json", "payload": payload})
            response = await client.fetch(
                base + "/symbolication/",
                method="POST",
                body=body,
                headers={**caller.headers, "Content-Type": content_type},
                raise_error=False,
            )
            return read(response.code, response.headers, response.body.decode())

        request = json.dumps({"jobs": [{"memoryMap": [["a.pdb", "ABC"]], "stacks": [[[0, 1]]]}]})
        # Past the other routes' limit, within the API's: symbolicated.
        # (Padded inside the JSON: the form's values are stripped.)
        wide = request[:-1] + " " * (limit - len(request)) + "}"
        assert len(wide) == limit
        page = await post(wide)
        assert page.status == 200 and "refused" not in page.text
        assert (await client.fetch(base + "/symbolicate/v5", method="POST", body=wide)).code == 200
        # One byte past the API's limit: refused as the API refuses it, in the form.
        page = await post(wide[:-1] + " }")
        assert page.status == 413
        assert f"Request body too large: {limit + 1} bytes, the limit is {limit} bytes" in page.text
        # A body far past it is refused before it is read.
        page = await post(wide + wide)
        assert page.status == 413 and page.h1() == "Request Entity Too Large"
