"""Code-file / code-id lookup and ``/api/syminfo/`` (docs/download.md, "Code file and code id")."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import unique_email
from tests.downloads import get


async def uploaded(runtime, debug_filename, debug_id, code_file, code_id, try_symbols=False):
    """A file row as the upload of a .sym file records it."""
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, bucket_name, try_symbols) VALUES ($1, 'symbols', $2)
           RETURNING id""",
        user_id,
        try_symbols,
    )
    await runtime.db.execute(
        """INSERT INTO file_uploads
             (upload_id, bucket_name, key, debug_filename, debug_id, code_file, code_id, generator)
           VALUES ($1, 'symbols', $2, $3, $4, $5, $6, 'mozilla/dump_syms 2.3.3')""",
        upload_id,
        f"v1/{debug_filename}/{debug_id}/x.sym",
        debug_filename,
        debug_id,
        code_file,
        code_id,
    )


def ids() -> tuple[str, str]:
    return uuid.uuid4().hex.upper() + "1", uuid.uuid4().hex.upper()[:15]


@pytest.mark.gen_test
async def test_code_file_and_id_redirect_to_the_debug_path(http_client, base_url, runtime):
    debug_id, code_id = ids()
    await uploaded(runtime, "xul.pdb", debug_id, "xul.dll", code_id)
    response = await get(http_client, base_url, f"/xul.dll/{code_id}/xul.sym?code_file=xul.dll&x=1")
    assert response.code == 302
    assert response.headers["Location"] == f"/xul.pdb/{debug_id}/xul.sym?code_file=xul.dll&x=1"
    head = await get(http_client, base_url, f"/xul.dll/{code_id}/xul.sym", method="HEAD")
    assert head.code == 302
    assert head.headers["Location"] == f"/xul.pdb/{debug_id}/xul.sym"
    tried = await get(http_client, base_url, f"/try/xul.dll/{code_id}/xul.sym")
    assert tried.headers["Location"] == f"/try/xul.pdb/{debug_id}/xul.sym"


@pytest.mark.gen_test
async def test_code_id_lookup_only_for_short_ids_and_sym_files(http_client, base_url, runtime):
    debug_id, code_id = ids()
    await uploaded(runtime, "gk.pdb", debug_id, "gk.dll", code_id)
    not_sym = await get(http_client, base_url, f"/gk.dll/{code_id}/gk.dl_")
    assert not_sym.code == 404
    long_id = code_id + "0" * (33 - len(code_id))
    await uploaded(runtime, "gk2.pdb", debug_id, "gk2.dll", long_id)
    assert (await get(http_client, base_url, f"/gk2.dll/{long_id}/gk2.sym")).code == 404


@pytest.mark.gen_test
async def test_missing_debug_pair_is_not_redirected_to_itself(http_client, base_url, runtime):
    _, code_id = ids()
    await uploaded(runtime, "self.pdb", code_id, None, None)
    response = await get(http_client, base_url, f"/self.pdb/{code_id}/self.sym")
    assert response.code == 404


@pytest.mark.gen_test
async def test_lookup_result_is_cached_and_refresh_bypasses_it(http_client, base_url, runtime):
    debug_id, code_id = ids()
    assert (await get(http_client, base_url, f"/late.dll/{code_id}/late.sym")).code == 404
    await uploaded(runtime, "late.pdb", debug_id, "late.dll", code_id)
    assert (await get(http_client, base_url, f"/late.dll/{code_id}/late.sym")).code == 404
    refreshed = await get(http_client, base_url, f"/late.dll/{code_id}/late.sym?_refresh")
    assert refreshed.code == 302


@pytest.mark.gen_test
async def test_syminfo_api(http_client, base_url, runtime):
    debug_id, code_id = ids()
    await uploaded(runtime, "xul.pdb", debug_id, "xul.dll", code_id)
    response = await get(http_client, base_url, f"/api/syminfo/xul.dll/{code_id.lower()}")
    assert response.code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert json.loads(response.body) == {
        "debug_filename": "xul.pdb",
        "debug_id": debug_id,
        "code_file": "xul.dll",
        "code_id": code_id,
        "generator": "mozilla/dump_syms 2.3.3",
        "url": f"{base_url}/xul.pdb/{debug_id}/xul.sym",
    }
    by_debug = json.loads(
        (await get(http_client, base_url, f"/api/syminfo/xul.pdb/{debug_id}")).body
    )
    assert by_debug["code_file"] == "xul.dll"


@pytest.mark.gen_test
async def test_syminfo_api_try_and_linux_names(http_client, base_url, runtime):
    debug_id, _ = ids()
    await uploaded(runtime, "libxul.so", debug_id, "libxul.so", None, try_symbols=True)
    body = json.loads((await get(http_client, base_url, f"/api/syminfo/libxul.so/{debug_id}")).body)
    assert body["url"] == f"{base_url}/try/libxul.so/{debug_id}/libxul.so.sym"


@pytest.mark.gen_test
async def test_syminfo_api_not_found_and_methods(http_client, base_url):
    missing = await get(http_client, base_url, "/api/syminfo/nothing.dll/ABC")
    assert missing.code == 404
    assert missing.body == b"Code file / id Not Found"
    post = await get(http_client, base_url, "/api/syminfo/nothing.dll/ABC", method="POST", body=b"")
    assert post.code == 405
    assert post.headers["Allow"] == "GET"
