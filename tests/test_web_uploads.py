"""The uploads pages (docs/web.md, "Uploads"): ``/uploads/``, ``/uploads/files/``, an upload's and
a file's page, and "Upload now" from the browser, for each kind of caller."""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest

from tests.accounts import Caller, make_upload, make_user
from tests.conftest import unique_email
from tests.uploads import debug_id, make_zip, sym_text
from tests.web_pages import Page, fetch_page, read

SIGN_IN = "/oidc/authenticate/"


@pytest.fixture
def settings(upload_settings):
    """The app runs with the upload settings (longer waits), for "Upload now"."""
    return upload_settings


def tag() -> str:
    return uuid.uuid4().hex[:10]


async def get(http_client, base_url, caller: Caller, path: str) -> Page:
    return await fetch_page(http_client, base_url, caller, path)


def sends_to_sign_in(page: Page, path: str) -> bool:
    location = urllib.parse.urlsplit(page.location or "")
    query = urllib.parse.parse_qs(location.query)
    return page.status == 302 and location.path == SIGN_IN and query.get("next") == [path]


# -- who sees what


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_are_sent_to_sign_in(http_client, base_url, runtime):
    owner = await make_user(runtime)
    upload_id, (file_id,) = await make_upload(runtime, owner)
    for path in (
        "/uploads/",
        "/uploads/?mine",
        "/uploads/files/",
        f"/uploads/upload/{upload_id}",
        f"/uploads/files/file/{file_id}",
        "/uploads/upload",
    ):
        page = await get(http_client, base_url, Caller.anonymous(), path)
        assert sends_to_sign_in(page, path), (path, page.status, page.location)
    # Without a trailing slash: to the page first, as the API's paths do.
    page = await get(http_client, base_url, Caller.anonymous(), "/uploads")
    assert page.status == 301 and page.location == "/uploads/"
    page = await get(http_client, base_url, Caller.anonymous(), "/uploads?mine")
    assert page.status == 301 and page.location == "/uploads/?mine="


@pytest.mark.gen_test(timeout=60)
async def test_without_view_all_you_see_your_own_uploads_only(http_client, base_url, runtime):
    mark = tag()
    me = await make_user(runtime)
    other = await make_user(runtime, email=unique_email(f"other-{mark}"))
    mine, (my_file,) = await make_upload(runtime, me, filename=f"mine-{mark}.zip")
    theirs, (their_file,) = await make_upload(runtime, other, filename=f"theirs-{mark}.zip")
    caller = await Caller.with_session(runtime, me)

    page = await get(http_client, base_url, caller, "/uploads/")
    assert page.status == 200 and page.h1() == "Uploads"
    assert f"mine-{mark}.zip" in page.text and f"theirs-{mark}.zip" not in page.text
    assert other.email not in page.text
    assert ("#" + str(mine), f"/uploads/upload/{mine}") in page.links
    assert "Everyone's uploads" not in page.text  # no tabs: there is nothing else to see
    assert "f-user" not in page.body  # the uploader filter is for view-all only
    # Asking for someone's uploads by the filter changes nothing.
    filtered = await get(http_client, base_url, caller, f"/uploads/?user={other.email}")
    assert f"theirs-{mark}.zip" not in filtered.text and f"mine-{mark}.zip" in filtered.text
    # Nor does a NUL there: the filter is not read.
    ignored = await get(http_client, base_url, caller, "/uploads/?user=%00")
    assert ignored.status == 200 and f"mine-{mark}.zip" in ignored.text
    # The curl equivalent, with the placeholder token.
    assert "Auth-Token: YOURTOKENHERE" in page.text and "/api/uploads/" in page.text

    # Someone else's upload and file: refused, saying why; every file: needs view-all.
    for path in (f"/uploads/upload/{theirs}", f"/uploads/files/file/{their_file}"):
        refused = await get(http_client, base_url, caller, path)
        assert refused.status == 403, path
        assert "View all uploads" in refused.text and f"theirs-{mark}" not in refused.text
    files = await get(http_client, base_url, caller, "/uploads/files/")
    assert files.status == 403 and "View all uploads" in files.text
    # Your own: shown.
    assert (await get(http_client, base_url, caller, f"/uploads/upload/{mine}")).status == 200
    assert (
        await get(http_client, base_url, caller, f"/uploads/files/file/{my_file}")
    ).status == 200
    # Uploading from the browser needs an upload permission.
    form = await get(http_client, base_url, caller, "/uploads/upload")
    assert form.status == 403 and "Upload symbols" in form.text
    missing = await get(http_client, base_url, caller, "/uploads/upload/999999999999")
    assert missing.status == 404 and missing.h1() == "Not Found"
    # A page past the last (one upload: one page) says so and leads back.
    past = await get(http_client, base_url, caller, "/uploads/?page=7")
    assert past.status == 200 and "No items on page 7; the last page is 1." in past.text
    assert ("Last page", "/uploads/") in past.links and f"mine-{mark}.zip" not in past.text


@pytest.mark.gen_test(timeout=60)
async def test_with_view_all_you_see_everyone_and_can_narrow_to_yours(
    http_client, base_url, runtime
):
    mark = tag()
    for kind in ("auditor", "superuser"):
        viewer = (
            await make_user(runtime, groups=("Upload Auditors",))
            if kind == "auditor"
            else await make_user(runtime, superuser=True)
        )
        other = await make_user(runtime, email=unique_email(f"other-{mark}"))
        await make_upload(runtime, viewer, filename=f"mine-{mark}.zip")
        theirs, (their_file,) = await make_upload(
            runtime,
            other,
            filename=f"theirs-{mark}.zip",
            try_symbols=True,
            files=(f"v1/t{mark}.pdb/AB12/t{mark}.sym",),
        )
        caller = await Caller.with_session(runtime, viewer)

        everyone = await get(http_client, base_url, caller, f"/uploads/?user=other-{mark}")
        assert everyone.status == 200, kind
        assert f"theirs-{mark}.zip" in everyone.text and f"mine-{mark}.zip" not in everyone.text
        assert other.email in everyone.text
        assert ("Your uploads", "/uploads/?mine") in everyone.links
        mine_page = await get(http_client, base_url, caller, "/uploads/?mine=")
        assert f"mine-{mark}.zip" in mine_page.text and f"theirs-{mark}.zip" not in mine_page.text

        files = await get(
            http_client, base_url, caller, f"/uploads/files/?key=t{mark}&upload_type=try"
        )
        assert files.status == 200, kind
        assert (f"v1/t{mark}.pdb/AB12/t{mark}.sym", f"/uploads/files/file/{their_file}") in (
            files.links
        )
        regular = await get(
            http_client, base_url, caller, f"/uploads/files/?key=t{mark}&upload_type=regular"
        )
        assert f"t{mark}.sym" not in regular.text and "No files match." in regular.text

        detail = await get(http_client, base_url, caller, f"/uploads/upload/{theirs}")
        assert detail.status == 200 and f"theirs-{mark}.zip" in detail.text
        assert "try symbols" in detail.text
        file_page = await get(http_client, base_url, caller, f"/uploads/files/file/{their_file}")
        assert file_page.status == 200
        assert f"/t{mark}.pdb/AB12/t{mark}.sym?try" in file_page.body  # try files ask for try


@pytest.mark.gen_test(timeout=60)
async def test_filters_sorting_and_bad_filters(http_client, base_url, runtime):
    mark = tag()
    viewer = await make_user(runtime, groups=("Upload Auditors",))
    owner = await make_user(runtime, email=unique_email(f"sort-{mark}"))
    small, _ = await make_upload(runtime, owner, size=1000, files=())
    big, _ = await make_upload(runtime, owner, size=5 * 1024**2, files=())
    caller = await Caller.with_session(runtime, viewer)

    def order(page: Page) -> list[int]:
        return [int(href.rsplit("/", 1)[1]) for _, href in page.links if "/uploads/upload/" in href]

    query = f"user=sort-{mark}"
    by_size = await get(http_client, base_url, caller, f"/uploads/?{query}&sort=size")
    assert order(by_size) == [small, big]
    assert 'aria-sort="ascending"' in by_size.body
    flipped = await get(http_client, base_url, caller, f"/uploads/?{query}&sort=size&reverse=true")
    assert order(flipped) == [big, small]
    large = await get(http_client, base_url, caller, f"/uploads/?{query}&size=>1mb")
    assert order(large) == [big]
    assert "1\N{EN DASH}1 of 1" in large.text  # a filtered listing is counted
    # A filter the API refuses: the page says which and why, with a 400.
    bad = await get(http_client, base_url, caller, "/uploads/?size=huge")
    assert bad.status == 400 and "Size: 'huge' is not a valid size" in bad.text
    bad_files = await get(http_client, base_url, caller, "/uploads/files/?upload_type=nope")
    assert bad_files.status == 400 and "Invalid upload type 'nope'" in bad_files.text
    # A NUL (PostgreSQL refuses it in text) or another control character is refused by name
    # rather than reaching the database.
    for path, label in (
        ("/uploads/?user=%00", "Uploader"),
        ("/uploads/?user=a%01b", "Uploader"),
        ("/uploads/files/?key=xul%00", "Key"),
        ("/uploads/files/?bucket_name=%00", "Bucket"),
    ):
        refused = await get(http_client, base_url, caller, path)
        assert refused.status == 400 and refused.h1() != "Internal Server Error", path
        assert f"{label}: must not hold control characters" in refused.text, path
    # Bytes that are not UTF-8 are no error: they match nothing.
    odd = await get(http_client, base_url, caller, "/uploads/?user=%FF")
    assert odd.status == 200 and "No uploads match." in odd.text


@pytest.mark.gen_test(timeout=60)
async def test_upload_page_shows_redirects_files_skipped_ignored_and_related(
    http_client, base_url, runtime
):
    me = await make_user(runtime)
    ident = debug_id().upper()
    first, _ = await make_upload(runtime, me, filename="again.zip", size=4321, files=())
    upload_id, (file_id,) = await make_upload(
        runtime, me, filename="again.zip", size=4321, files=(f"v1/xul.pdb/{ident}/xul.sym",)
    )
    await runtime.db.execute(
        """UPDATE uploads SET skipped_keys = $2, ignored_keys = $3, download_url = $4,
                              redirect_urls = $5 WHERE id = $1""",
        upload_id,
        ["v1/old.pdb/AA/old.sym"],
        ["build-symbols.txt"],
        "https://example.com/a.zip",
        ["https://cdn.example.com/b.zip", "https://cdn2.example.com/c.zip"],
    )
    await runtime.db.execute(
        """UPDATE file_uploads SET debug_filename = 'xul.pdb', debug_id = $2, code_file = 'xul.dll',
                                   code_id = '5F2A1B0C7E000', generator = 'dump_syms 2'
           WHERE id = $1""",
        file_id,
        ident,
    )
    caller = await Caller.with_session(runtime, me)
    page = await get(http_client, base_url, caller, f"/uploads/upload/{upload_id}")
    assert page.status == 200
    assert page.title == f"Upload #{upload_id} · Symbolon"
    text = page.text
    chain = text.index("https://example.com/a.zip")
    assert chain < text.index("https://cdn.example.com/b.zip") < text.index("cdn2.example.com")
    assert "following 2 redirects" in text
    assert (f"v1/xul.pdb/{ident}/xul.sym", f"/uploads/files/file/{file_id}") in page.links
    assert "Skipped (1)" in text and "v1/old.pdb/AA/old.sym" in text
    assert "Ignored (1)" in text and "build-symbols.txt" in text
    assert (f"#{first}", f"/uploads/upload/{first}") in page.links  # the same archive again
    assert "Took" in text and "Processing attempts" in text
    assert f"/api/uploads/upload/{upload_id}" in text  # the curl equivalent

    file_page = await get(http_client, base_url, caller, f"/uploads/files/file/{file_id}")
    assert file_page.status == 200
    assert ident in file_page.text and "xul.dll" in file_page.text
    assert "5F2A1B0C7E000" in file_page.text and "dump_syms 2" in file_page.text
    assert f"{base_url}/xul.pdb/{ident}/xul.sym" in file_page.text
    # Without JavaScript a plain link; with it, a HEAD check of the same URL.
    assert ("Download this file", f"/xul.pdb/{ident}/xul.sym") in file_page.links
    assert f'data-exists="/xul.pdb/{ident}/xul.sym"' in file_page.body
    assert "/static/pages.js" in file_page.body


@pytest.mark.gen_test(timeout=60)
async def test_a_native_files_page_shows_what_it_is_and_its_other_keys(
    http_client, base_url, runtime
):
    me = await make_user(runtime)
    ident = debug_id().upper()
    key = f"v1/libfoo.so/{ident}/libfoo.so"
    _, (file_id,) = await make_upload(runtime, me, files=(key,))
    await runtime.db.execute(
        """UPDATE file_uploads SET debug_filename = 'libfoo.so', debug_id = $2,
                  file_format = 'elf', kind = 'lib', arch = 'x86_64',
                  features = '{debug,symtab}', aliases = $3
           WHERE id = $1""",
        file_id,
        ident,
        [f"v1/libfoo.so/{ident}/libfoo.so.debug", "v1/buildid/ab12/executable"],
    )
    caller = await Caller.with_session(runtime, me)
    page = await get(http_client, base_url, caller, f"/uploads/files/file/{file_id}")
    assert page.status == 200
    text = page.text
    assert "Format" in text and "elf" in text and "(lib, x86_64)" in text
    assert "debug, symtab" in text
    assert "Also stored as" in text and "v1/buildid/ab12/executable" in text
    assert f"v1/libfoo.so/{ident}/libfoo.so.debug" in text


@pytest.mark.gen_test(timeout=60)
async def test_what_uploaders_typed_is_shown_escaped(http_client, base_url, runtime):
    me = await make_user(runtime, superuser=True)
    evil = '<script>alert("x")</script>.zip'
    upload_id, (file_id,) = await make_upload(
        runtime, me, filename=evil, files=("v1/<img src=x onerror=alert(1)>/AB/x.sym",)
    )
    await runtime.db.execute(
        "UPDATE uploads SET error = $2, completed_at = NULL, failed_at = now() WHERE id = $1",
        upload_id,
        "<b>bad</b>",
    )
    caller = await Caller.with_session(runtime, me)
    for path in (
        "/uploads/",
        f"/uploads/upload/{upload_id}",
        f"/uploads/files/file/{file_id}",
        "/uploads/files/?key=onerror",
    ):
        page = await get(http_client, base_url, caller, path)
        assert page.status == 200, path
        assert "<script>alert" not in page.body and "<img src=x" not in page.body, path
        assert "<b>bad</b>" not in page.body
    detail = await get(http_client, base_url, caller, f"/uploads/upload/{upload_id}")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;.zip" in detail.body
    assert "Failed." in detail.text and "<b>bad</b>" in detail.text  # as text


# -- Upload now


def browser_form(
    csrf: str | None, archive: bytes | None, filename: str = "symbols.zip", **fields: str
) -> tuple[bytes, str]:
    """The body a browser sends for the upload form: the CSRF field first, then the file
    input (empty when no file is chosen), then the other fields."""
    boundary = uuid.uuid4().hex
    parts = []
    if csrf is not None:
        parts.append(('name="csrf_token"', csrf.encode()))
    if archive is not None:
        parts.append(
            (f'name="archive"; filename="{filename}"\r\nContent-Type: application/zip', archive)
        )
    else:
        parts.append(('name="archive"; filename=""\r\nContent-Type: application/octet-stream', b""))
    for name, value in fields.items():
        parts.append((f'name="{name}"', value.encode()))
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; {head}\r\n\r\n".encode() + data + b"\r\n"
        for head, data in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def post_form(http_client, base_url, caller: Caller, body: bytes, content_type: str) -> Page:
    response = await http_client.fetch(
        base_url + "/uploads/upload",
        method="POST",
        headers={**caller.headers, "Content-Type": content_type},
        body=body,
        raise_error=False,
        follow_redirects=False,
        request_timeout=60,
    )
    return read(response.code, response.headers, response.body.decode() if response.body else "")


async def uploads_of(runtime, user) -> list[int]:
    rows = await runtime.db.fetch("SELECT id FROM uploads WHERE user_id = $1 ORDER BY id", user.id)
    return [r["id"] for r in rows]


@pytest.mark.gen_test(timeout=90)
async def test_upload_now_stores_the_archive_and_lands_on_its_page(
    http_client, base_url, runtime, worker
):
    uploader = await make_user(runtime, groups=("Uploaders",))
    caller = await Caller.with_session(runtime, uploader)
    form = await get(http_client, base_url, caller, "/uploads/upload")
    assert form.status == 200 and form.h1() == "Upload now"
    fields = form.form("/uploads/upload")["fields"]
    assert fields["csrf_token"] == caller.csrf and "archive" in fields and "try" in fields
    assert "-F symbols.zip=@symbols.zip" in form.text  # the curl equivalent

    ident = debug_id()
    archive = make_zip({f"xul.pdb/{ident}/xul.sym": sym_text(ident.upper())})
    body, content_type = browser_form(caller.csrf, archive, filename="my-build.zip", url="")
    answer = await post_form(http_client, base_url, caller, body, content_type)
    assert answer.status == 303, answer.text
    (upload_id,) = await uploads_of(runtime, uploader)
    assert answer.location == f"/uploads/upload/{upload_id}"
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert row["filename"] == "my-build.zip"  # named after the chosen file
    assert row["completed_at"] is not None and row["try_symbols"] is False

    jar = {}
    for header in answer.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";", 1)[0]
    cookie = "; ".join([caller.headers["Cookie"], *(f"{k}={v}" for k, v in jar.items())])
    landed = await get(
        http_client, base_url, Caller({"Cookie": cookie}, caller.csrf), answer.location
    )
    assert landed.status == 200 and "Uploaded and processed." in landed.text
    assert f"xul.pdb/{ident.upper()}/xul.sym" in landed.text

    # Try symbols, asked for by the checkbox.
    ident = debug_id()
    archive = make_zip({f"xul.pdb/{ident}/xul.sym": sym_text(ident.upper())})
    body, content_type = browser_form(caller.csrf, archive, url="", **{"try": "1"})
    answer = await post_form(http_client, base_url, caller, body, content_type)
    assert answer.status == 303
    latest = (await uploads_of(runtime, uploader))[-1]
    assert await runtime.db.fetchval("SELECT try_symbols FROM uploads WHERE id = $1", latest)


@pytest.mark.gen_test(timeout=90)
async def test_upload_now_shows_the_servers_message_and_keeps_nothing(
    http_client, base_url, runtime, worker
):
    uploader = await make_user(runtime, groups=("Uploaders",))
    caller = await Caller.with_session(runtime, uploader)
    cases = [
        (
            browser_form(caller.csrf, b"PK not really", filename="x.tar.gz"),
            "Unrecognized archive file extension",
        ),
        (browser_form(caller.csrf, b"not a zip at all"), "zip"),
        (
            browser_form(caller.csrf, None, url=""),
            "Must be multipart form data with at least one file",
        ),
        (browser_form(caller.csrf, None, url="http://127.0.0.1:1/x.zip"), ""),
    ]
    for (body, content_type), message in cases:
        page = await post_form(http_client, base_url, caller, body, content_type)
        assert page.status in (400, 403), page.text
        assert page.h1() == "Upload now"  # the form again, with the server's message
        assert "The upload did not succeed." in page.text and message in page.text
    # The URL typed is kept in the form.
    assert 'value="http://127.0.0.1:1/x.zip"' in page.body
    assert await uploads_of(runtime, uploader) == []


@pytest.mark.gen_test(timeout=90)
async def test_upload_now_needs_the_csrf_token_first_and_a_permission(
    http_client, base_url, runtime, worker
):
    ident = debug_id()
    archive = make_zip({f"xul.pdb/{ident}/xul.sym": sym_text(ident.upper())})
    uploader = await make_user(runtime, groups=("Uploaders",))
    caller = await Caller.with_session(runtime, uploader)
    staging = runtime.settings.staging_dir
    before = set(staging.iterdir()) if staging.exists() else set()

    for token in (None, "wrong", ""):
        body, content_type = browser_form(token, archive)
        page = await post_form(http_client, base_url, caller, body, content_type)
        assert page.status == 403 and "CSRF token missing or incorrect" in page.text
    # The token after the file is too late: the file would have been kept before the check.
    boundary = uuid.uuid4().hex
    late = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="archive"; filename="s.zip"\r\n\r\n'
        ).encode()
        + archive
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"{caller.csrf}\r\n--{boundary}--\r\n"
        ).encode()
    )
    page = await post_form(
        http_client, base_url, caller, late, f"multipart/form-data; boundary={boundary}"
    )
    assert page.status == 403 and "CSRF token missing or incorrect" in page.text
    assert await uploads_of(runtime, uploader) == []
    assert (set(staging.iterdir()) if staging.exists() else set()) == before

    # Signed in without an upload permission: refused, with what is missing.
    plain = await make_user(runtime)
    plain_caller = await Caller.with_session(runtime, plain)
    body, content_type = browser_form(plain_caller.csrf, archive)
    page = await post_form(http_client, base_url, plain_caller, body, content_type)
    assert page.status == 403 and "Upload symbols" in page.text
    assert await uploads_of(runtime, plain) == []
    # Anonymous: refused.
    page = await post_form(http_client, base_url, Caller.anonymous(), body, content_type)
    assert page.status == 403 and "Sign in first." in page.text


@pytest.mark.gen_test(timeout=90)
async def test_upload_now_with_a_token_as_the_api(http_client, base_url, runtime, worker):
    from tests.accounts import token_of

    uploader = await make_user(runtime, groups=("Uploaders",))
    key = await token_of(runtime, uploader, ("upload.upload_symbols",))
    ident = debug_id()
    archive = make_zip({f"xul.pdb/{ident}/xul.sym": sym_text(ident.upper())})
    body, content_type = browser_form(None, archive)
    page = await post_form(http_client, base_url, Caller.with_token(key), body, content_type)
    assert page.status == 303
    (upload_id,) = await uploads_of(runtime, uploader)
    api = await http_client.fetch(
        f"{base_url}/api/uploads/upload/{upload_id}", headers={"Auth-Token": key}
    )
    assert json.loads(api.body)["upload"]["status"] == "completed"
