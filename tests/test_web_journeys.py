"""The uploads, symbolication, crashes, users and status pages in a real browser (docs/web.md):
Chromium, ``symbolon serve`` and the real OpenID Connect provider. A superuser gives a person the
Uploaders group; that person uploads an archive from the browser, opens the upload and a file,
and symbolicates a stack from it; crash reports and the status page are looked at. Each page is
kept as screenshots at phone and desktop widths."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid

from tests.browser import Journey, chromium, journey, site
from tests.conftest import running_worker, unique_email
from tests.crash_pages import HOSTILE_FUNCTION, app_symbols, crash_dump
from tests.crashes import headers_for, report
from tests.symbolication_support import new_id, put_own, sym, with_debug_id
from tests.uploads import make_zip

__all__ = ["chromium", "journey", "site"]  # fixtures, used by name


def submit_crash(site_url: str, product: str) -> str:
    body = report(
        {"ProductName": product, "Version": "1.2.3", "URL": "https://private.example/"},
        {"upload_file_minidump": b"MDMP" + b"\x00" * 4000},
    )
    request = urllib.request.Request(
        site_url + "/submit", data=body, headers=headers_for(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = response.read().decode()
    return answer.strip().removeprefix("CrashID=bp-")


def submit_processed_crash(site_url: str, settings) -> str:
    """A crash of a dump written byte by byte, with its app's symbols stored here."""
    dump, debug_file, debug_id = crash_dump()
    put_own(
        settings, f"{debug_file}/{debug_id}/{debug_file}.sym", app_symbols(debug_file, debug_id)
    )
    body = report(
        {"ProductName": "Journey", "Version": "3.1", "ReleaseChannel": "beta"},
        {"upload_file_minidump": dump},
    )
    request = urllib.request.Request(
        site_url + "/submit", data=body, headers=headers_for(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = response.read().decode()
    return answer.strip().removeprefix("CrashID=bp-")


def test_uploads_symbolication_crashes_users_and_status(
    journey: Journey, chromium, tmp_path, live_settings
):
    site = journey.site
    person_email = unique_email("uploader")
    boss_email = unique_email("boss")

    # The person signs in once, so that the account exists, and may not upload yet.
    person = journey
    person.go("/")
    person.sign_in(person_email)
    page = person.page
    person.go("/uploads/")
    assert page.get_by_role("heading", level=1).inner_text() == "Uploads"
    assert page.get_by_role("link", name="Upload now").count() == 0
    person.shots("uploads-01-none-yet")

    # A superuser gives the person the Uploaders group on the users page.
    boss = Journey(site, chromium, person.shots_dir)
    try:
        boss.go("/")
        boss.sign_in(boss_email)
        site.symbolon("superuser", boss_email)
        boss.go("/users/")
        bp = boss.page
        bp.get_by_label("E-mail holds").fill(person_email.split("@")[0])
        bp.get_by_role("button", name="Search").click()
        boss.shots("users-01-search")
        bp.get_by_role("link", name=person_email).click()
        bp.wait_for_url(re.compile(r".*/users/user/\d+$"))
        boss.shots("users-02-user")
        bp.get_by_role("checkbox", name=re.compile(r"Uploaders \(")).check()
        bp.get_by_role("button", name="Save groups").click()
        assert "groups are saved" in bp.locator(".flash").inner_text()
        assert "(none) -> Uploaders" in bp.locator("table").last.inner_text()
        boss.shots("users-03-user-given-uploaders")

        boss.go("/status/")
        assert bp.get_by_role("heading", level=1).inner_text() == "Status"
        assert "Every check passed." in bp.locator("main").inner_text()
        assert "SECRET_KEY" in bp.locator("main").inner_text()
        boss.shots("status-01")

        # Crash reports: the list and one report, with its dump for a superuser.
        # Opened by its id: the list shows the first 20 crashes not processed yet, and the
        # session's crash store holds every other test's too.
        crash_id = submit_crash(site.url, f"Journey<{uuid.uuid4().hex[:6]}>")
        boss.go(f"/crashes/{crash_id}")
        assert "not processed yet" in bp.locator("main").inner_text()
        assert "https://private.example/" in bp.locator("main").inner_text()
        assert bp.get_by_role("link", name="Download", exact=True).count() == 1
        boss.shots("crashes-02-report")
        # A crash the processor walks and symbolicates: its stacks, modules and notes.
        processed_id = submit_processed_crash(site.url, live_settings)
        with running_worker(live_settings):
            deadline = time.monotonic() + 120
            while True:
                boss.go(f"/crashes/{processed_id}")
                state = bp.locator("dl.facts .badge").first.inner_text()
                if state != "pending" or time.monotonic() > deadline:
                    break
                bp.wait_for_timeout(200)
        assert state == "processed", bp.locator("main").inner_text()
        frames = bp.locator("table.frames").first.inner_text()
        assert HOSTILE_FUNCTION in frames and "libnosyms.so" in frames
        assert bp.locator("tr.missing").count() == 1
        boss.shots("crashes-04-processed")
        bp.get_by_text("Other threads (1)").click()
        assert "spin_here" in bp.locator("details.threads").inner_text()
        boss.go("/crashes/")
        assert bp.get_by_role("link", name=processed_id).count() == 1
        boss.shots("crashes-01-list")
    except BaseException:
        boss.close()
        raise

    # The person, an uploader now, uploads an archive from the browser.
    ident = new_id()
    archive = tmp_path / "journey-symbols.zip"
    archive.write_bytes(
        make_zip(
            {
                f"libdemo.so/{ident}/libdemo.so.sym": with_debug_id(
                    sym("examples/libdemo.so.sym"), ident
                )
            }
        )
    )
    # serve runs no worker here (WORKER_THREADS=0): one beside it, on the same broker.
    with running_worker(live_settings):
        person.go("/uploads/")
        page.get_by_role("link", name="Upload now").click()
        page.wait_for_url(re.compile(r".*/uploads/upload$"))
        page.get_by_label("Archive file").set_input_files(str(archive))
        person.shots("uploads-02-upload-now")
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(re.compile(r".*/uploads/upload/\d+$"))
    main = page.locator("main").inner_text()
    assert "journey-symbols.zip" in main and "Completed." in main
    person.shots("uploads-03-upload")
    page.get_by_role("link", name=f"libdemo.so/{ident}/libdemo.so.sym").click()
    page.wait_for_url(re.compile(r".*/uploads/files/file/\d+$"))
    check = page.locator("[data-exists][data-state]")
    check.wait_for(state="visible")  # the HEAD request answered
    assert check.get_attribute("data-state") == "found", check.inner_text()
    assert ident in page.locator("main").inner_text()
    person.shots("uploads-04-file")
    person.go("/uploads/")
    person.shots("uploads-05-yours")

    # Symbolicate a stack of that module from the form.
    person.go("/symbolication/")
    page.get_by_label("Modules", exact=True).fill(f"libdemo.so {ident}")
    page.get_by_label("Addresses", exact=True).fill("0 0x1008\n0 0x101c\n-1 0x42")
    page.get_by_role("button", name="Symbolicate").first.click()
    frames = page.locator("table.frames").inner_text()
    assert "process_request" in frames and "/src/demo/app.c:10" in frames
    person.shots("symbolication-01")

    # Annotations, dumps and stacks need "View crash reports", which uploaders do not hold.
    person.go(f"/crashes/{crash_id}")
    text = page.locator("main").inner_text()
    assert "private.example" not in text and "View crash reports" in text
    person.shots("crashes-03-forbidden")
    assert person.errors == []

    # Everyone's uploads and every file, as a superuser sees them.
    try:
        boss.go("/uploads/")
        assert "journey-symbols.zip" in bp.locator("table").inner_text()
        boss.shots("uploads-06-everyones")
        boss.go("/uploads/files/")
        assert ident in bp.locator("table").inner_text()
        boss.shots("uploads-07-files")
        assert boss.errors == []
    finally:
        boss.close()
