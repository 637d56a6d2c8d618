"""Native debug files in uploads (docs/upload.md, "Native debug files"): real ELF, PE and PDB
files, built by the tests, uploaded in archives and by upload v2, identified by content and
stored under every key they are looked up by, on each storage backend."""

from __future__ import annotations

import gzip
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest
from symbolic.debuginfo import Archive

from symbolon.symbols import archive, native
from symbolon.uploads import process
from tests import native_files
from tests.backends import (  # noqa: F401 - the backends' fixtures, both of them
    backend,
    backend_settings,
    io_loop,
    own,
    planned,
    runtime,
    settings,
    tokens,
    v2_call,
    v2_put,
    worker,
)
from tests.conftest import unique_email
from tests.downloads import get
from tests.uploads import debug_id, make_zip, multipart, post, sym_text


def expected(path: Path, name: str | None = None) -> dict[str, Any]:
    """What the contract says of a file, derived here from symbolic's object."""
    (obj,) = list(Archive.open(str(path)).iter_objects())
    parts = obj.debug_id.split("-")
    ident = ("".join(parts[:5]) + format(int(parts[5] if len(parts) > 5 else "0", 16), "X")).upper()
    base = name or path.name
    d = base.removesuffix(".debug") if obj.file_format == "elf" else base
    keys: list[str] = []
    if obj.file_format == "pdb":
        keys = [f"{d}/{ident}/{d}"]
    elif obj.file_format == "pe":
        keys = [f"{d}/{obj.code_id.upper()}/{d}"]
    else:
        if obj.kind != "dbg":
            keys.append(f"{d}/{ident}/{d}")
        if "debug" in obj.features:
            keys.append(f"{d}/{ident}/{d}.debug")
        if obj.kind != "dbg":
            keys.append(f"buildid/{obj.code_id}/executable")
        if "debug" in obj.features:
            keys.append(f"buildid/{obj.code_id}/debuginfo")
    return {
        "id": ident,
        "d": d,
        "keys": keys,
        "file_format": obj.file_format,
        "kind": obj.kind,
        "code_id": obj.code_id,
        "features": sorted(obj.features),
        "arch": obj.arch,
    }


async def read_stored(runtime: Any, key: str) -> tuple[bytes, Any]:
    async with own(runtime).open(key) as opened:
        data = b"".join([chunk async for chunk in opened.chunks])
    return data, opened.info


async def send(http_client: Any, base_url: str, token: str, members: dict[str, bytes]) -> Any:
    body, content_type = multipart({"symbols.zip": make_zip(members)})
    return await post(http_client, base_url, body, content_type, token)


# -- identification, without services ------------------------------------------------------------


def test_breakpad_ids_and_keys_follow_the_contract():
    assert native.breakpad_id("dfb8e43a-f242-3d73-a453-aeb6a777ef75") == (
        "DFB8E43AF2423D73A453AEB6A777EF750"
    )
    assert native.breakpad_id("a7f0b27e-9d37-7cbd-4c4c-44205044422e-1a") == (
        "A7F0B27E9D377CBD4C4C44205044422E1A"
    )
    assert native.debug_file_name("elf", "libfoo.so.debug") == "libfoo.so"
    assert native.debug_file_name("macho", "Foo.dbg") == "Foo"
    assert native.debug_file_name("pe", "foo.debug") == "foo.debug"
    assert native.object_keys("elf", "lib", True, "libx.so", "AB0", "ab") == (
        "libx.so/AB0/libx.so",
        "libx.so/AB0/libx.so.debug",
        "buildid/ab/executable",
        "buildid/ab/debuginfo",
    )
    assert native.object_keys("elf", "dbg", True, "libx.so", "AB0", "ab") == (
        "libx.so/AB0/libx.so.debug",
        "buildid/ab/debuginfo",
    )
    assert native.object_keys("macho", "exe", False, "Foo", "AB0", "ab") == ("Foo/AB0/Foo",)


def test_identify_reads_real_files_and_refuses_others(tmp_path):
    lib = native_files.cached_elf_lib()
    (full,) = native.identify(lib.full, "lib/libfoo.so")
    assert (full.file_format, full.kind, full.code_file) == ("elf", "lib", "libfoo.so")
    assert "debug" in full.features and len(full.keys) == 4
    (split,) = native.identify(lib.debug, "libfoo.so.debug")
    assert (split.kind, split.debug_file, split.code_file) == ("dbg", "libfoo.so", None)
    assert split.debug_id == full.debug_id and split.code_id == full.code_id
    (stripped,) = native.identify(lib.stripped, "libfoo.so")
    assert "debug" not in stripped.features
    assert stripped.keys == (
        f"libfoo.so/{full.debug_id}/libfoo.so",
        f"buildid/{full.code_id}/executable",
    )
    text = tmp_path / "notes.txt"
    text.write_text("MODULE Linux x86_64 0 x\n")
    with pytest.raises(native.NotNative):
        native.identify(text, "notes.txt")


@pytest.mark.parametrize("name", ["...debug", "lib/..dbg"])
def test_a_name_that_leaves_no_debug_file_name_is_refused(name):
    lib = native_files.cached_elf_lib()
    with pytest.raises(native.NotNative, match="as the debug file's name"):
        native.identify(lib.debug, name)


def test_a_member_outside_the_shape_is_inspected_by_its_first_bytes():
    lib = native_files.cached_elf_lib()
    data = make_zip(
        {"libfoo.so": lib.stripped.read_bytes(), f"xul.pdb/{debug_id()}/xul.sym": b"MODULE"}
    )
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = archive.inspect(zf)
    assert [m.candidate for m in members] == [True, False]
    for name, content in (("random.bin", bytes(range(256))), ("docs/readme.txt", b"hello")):
        zipped = io.BytesIO(make_zip({name: content}))
        with zipfile.ZipFile(zipped) as zf, pytest.raises(archive.ArchiveError) as refused:
            archive.inspect(zf)
        assert str(refused.value) == archive.UNRECOGNIZED.format(name)


# -- uploads, on each backend ---------------------------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_an_archive_of_native_files_is_stored_under_every_key(
    http_client, base_url, runtime, worker, tokens, tmp_path
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    exe = native_files.elf_exe(tmp_path / "exe", tag=str(tmp_path))
    pe = native_files.pe_pdb(tmp_path / "pe", tag=str(tmp_path))
    ident = debug_id().upper()
    sym = sym_text(ident)
    members = {
        "libfoo.so": lib.stripped.read_bytes(),  # at the root: a stripped library
        "debug/usr/lib/libfoo.so.debug": lib.debug.read_bytes(),  # nested: its split debug
        "bin/prog": exe.full.read_bytes(),  # unstripped, compressed DWARF: both kinds of keys
        "win/foo.dll": pe.dll.read_bytes(),
        "win/foo.pdb": pe.pdb.read_bytes(),
        f"xul.pdb/{ident}/xul.sym": sym,
    }
    response = await send(http_client, base_url, tokens["upload"], members)
    assert response.code == 201, response.body
    upload = json.loads(response.body)["upload"]
    assert upload["skipped_keys"] == []

    files = {
        "libfoo.so": (lib.stripped, "libfoo.so"),
        "debug/usr/lib/libfoo.so.debug": (lib.debug, "libfoo.so.debug"),
        "bin/prog": (exe.full, "prog"),
        "win/foo.dll": (pe.dll, "foo.dll"),
        "win/foo.pdb": (pe.pdb, "foo.pdb"),
    }
    wanted = {member: expected(path, name) for member, (path, name) in files.items()}
    assert len(wanted["bin/prog"]["keys"]) == 4  # an unstripped binary: every kind of key
    assert wanted["debug/usr/lib/libfoo.so.debug"]["kind"] == "dbg"
    for member, facts in wanted.items():
        for key in facts["keys"]:
            data, info = await read_stored(runtime, f"v1/{key}")
            assert info.content_encoding == "gzip", key
            assert gzip.decompress(data) == members[member], key
            assert info.metadata["original_size"] == str(len(members[member]))
    data, info = await read_stored(runtime, f"v1/xul.pdb/{ident}/xul.sym")
    assert gzip.decompress(data) == sym

    rows = await runtime.db.fetch(
        "SELECT * FROM file_uploads WHERE upload_id = $1 ORDER BY key", upload["id"]
    )
    by_key = {r["key"]: r for r in rows}
    assert len(rows) == len(files) + 1
    for facts in wanted.values():
        row = by_key[f"v1/{facts['keys'][0]}"]
        assert row["debug_filename"] == facts["d"]
        assert row["debug_id"] == facts["id"]
        assert row["code_id"] == facts["code_id"]
        assert (row["file_format"], row["kind"], row["arch"]) == (
            facts["file_format"],
            facts["kind"],
            facts["arch"],
        )
        assert sorted(row["features"]) == facts["features"]
        assert list(row["aliases"] or []) == [f"v1/{k}" for k in facts["keys"][1:]]
        assert row["compressed"] is True
    assert by_key[f"v1/xul.pdb/{ident}/xul.sym"]["file_format"] == "breakpad"
    assert wanted["win/foo.pdb"]["id"] == wanted["win/foo.dll"]["id"]  # a PE and its PDB

    detail = await http_client.fetch(
        f"{base_url}/api/uploads/upload/{upload['id']}",
        headers={"Auth-Token": tokens["upload"]},
        raise_error=False,
    )
    assert detail.code == 200, detail.body
    shown = {f["key"]: f for f in json.loads(detail.body)["upload"]["file_uploads"]}
    dll = shown[f"v1/{wanted['win/foo.dll']['keys'][0]}"]
    assert (dll["file_format"], dll["kind"], dll["code_file"]) == ("pe", "lib", "foo.dll")
    prog = shown[f"v1/{wanted['bin/prog']['keys'][0]}"]
    assert "debug" in prog["features"] and len(prog["aliases"]) == 3

    # The code-file lookup knows .sym headers only: a DLL's row would send it to <dll>/<id>/….
    dll_id = wanted["win/foo.dll"]["id"]
    syminfo = await get(http_client, base_url, f"/api/syminfo/foo.dll/{dll_id}")
    assert syminfo.code == 404
    assert (await get(http_client, base_url, f"/api/syminfo/xul.pdb/{ident}")).code == 200

    again = await send(http_client, base_url, tokens["upload"], members)
    assert again.code == 201, again.body
    skipped = json.loads(again.body)["upload"]["skipped_keys"]
    every = [f"v1/{k}" for facts in wanted.values() for k in facts["keys"]]
    assert sorted(skipped) == sorted([*every, f"v1/xul.pdb/{ident}/xul.sym"])


@pytest.mark.gen_test(timeout=120)
async def test_members_that_are_no_debug_files_are_refused_naming_them(
    http_client, base_url, runtime, worker, tokens, tmp_path
):
    lib = native_files.cached_elf_lib()
    good = {"libfoo.so": lib.stripped.read_bytes()}
    for name, content in (
        ("random.bin", bytes(range(256)) * 8),
        ("docs/readme.txt", b"just text\n"),
    ):
        response = await send(http_client, base_url, tokens["upload"], {**good, name: content})
        assert response.code == 400, response.body
        assert json.loads(response.body)["error"] == archive.UNRECOGNIZED.format(name)
    # Starts like an ELF file, and is none: refused by the task, before anything is stored.
    fake = b"\x7fELF" + bytes(range(200))
    fresh = native_files.elf_lib(tmp_path / "fresh", tag=str(tmp_path))
    ident = native.identify(fresh.stripped, "libfoo.so")[0].debug_id
    response = await send(
        http_client,
        base_url,
        tokens["upload"],
        {"libfoo.so": fresh.stripped.read_bytes(), "lib/fake.so": fake},
    )
    assert response.code == 400, response.body
    error = json.loads(response.body)["error"]
    assert "'lib/fake.so'" in error and "native debug file" in error
    assert await own(runtime).head(f"v1/libfoo.so/{ident}/libfoo.so") is None


@pytest.mark.gen_test(timeout=120)
async def test_an_upload_v2_of_native_files(
    http_client, base_url, runtime, worker, tokens, tmp_path
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    pe = native_files.pe_pdb(tmp_path / "pe", tag=str(tmp_path))
    dll_key = expected(pe.dll)["keys"][0]  # at <module>/<hex>/<file>: PUT as it is
    contents = {
        "libfoo.so": lib.full.read_bytes(),
        "symbols/foo.pdb": pe.pdb.read_bytes(),
        dll_key: pe.dll.read_bytes(),
    }
    files = [planned(key, data) for key, data in contents.items()]
    plan = await v2_call(http_client, base_url, "/upload/v2/", tokens["upload"], {"files": files})
    assert plan.code == 201, plan.body
    body = json.loads(plan.body)
    actions = [f["action"] for f in body["files"]]
    assert [a["type"] for a in actions] == ["upload", "upload", "upload"]
    assert [a["content_encoding"] for a in actions] == ["gzip", "gzip", None]
    for action, data in zip(actions, contents.values(), strict=True):
        assert await v2_put(action, data) == 200
    done = await v2_call(http_client, base_url, body["complete_url"], tokens["upload"], {})
    assert done.code == 201, done.body
    for key, path in (("libfoo.so", lib.full), ("symbols/foo.pdb", pe.pdb), (dll_key, pe.dll)):
        facts = expected(path)
        for stored in facts["keys"]:
            data, info = await read_stored(runtime, f"v1/{stored}")
            assert info.content_encoding == "gzip"
            assert gzip.decompress(data) == contents[key], stored
    rows = await runtime.db.fetch(
        "SELECT key, kind, file_format, aliases FROM file_uploads WHERE upload_id = $1",
        body["id"],
    )
    assert sorted(r["file_format"] for r in rows) == ["elf", "pdb", "pe"]
    elf = next(r for r in rows if r["file_format"] == "elf")
    assert elf["kind"] == "lib" and len(elf["aliases"]) == 3
    assert [item.key async for item in own(runtime).list("pending/")] == []  # published

    # A key outside the shape whose content is no debug file fails the upload, naming it.
    text = b"not a debug file\n"
    plan = await v2_call(
        http_client,
        base_url,
        "/upload/v2/",
        tokens["upload"],
        {"files": [planned("notes/readme.txt", text)]},
    )
    body = json.loads(plan.body)
    assert await v2_put(body["files"][0]["action"], text) == 200
    done = await v2_call(http_client, base_url, body["complete_url"], tokens["upload"], {})
    assert done.code == 400
    assert "notes/readme.txt" in json.loads(done.body)["error"]


def macho_keys(path: Path, debug: bool) -> list[tuple[str, str]]:
    """(arch, key) of each slice of a Mach-O file, as the contract names them."""
    found = []
    for obj in Archive.open(str(path)).iter_objects():
        parts = obj.debug_id.split("-")
        ident = ("".join(parts[:5]) + "0").upper()
        d = path.name
        found.append((obj.arch, f"{d}/{ident}/{d}.debug" if debug else f"{d}/{ident}/{d}"))
    return found


@pytest.mark.gen_test(timeout=120)
async def test_a_fat_mach_o_library_and_its_dsym(
    http_client, base_url, runtime, worker, tokens, tmp_path
):
    built = native_files.macho(tmp_path / "macho", tag=str(tmp_path))
    dsym_member = "libbar.dylib.dSYM/Contents/Resources/DWARF/libbar.dylib"
    members = {"lib/libbar.dylib": built.fat.read_bytes(), dsym_member: built.dsym.read_bytes()}
    response = await send(http_client, base_url, tokens["upload"], members)
    assert response.code == 201, response.body
    upload = json.loads(response.body)["upload"]
    library, debug = macho_keys(built.fat, False), macho_keys(built.dsym, True)
    assert sorted(arch for arch, _ in library) == ["arm64", "x86_64"]
    for member, keys in (("lib/libbar.dylib", library), (dsym_member, debug)):
        for _, key in keys:
            data, info = await read_stored(runtime, f"v1/{key}")
            assert info.content_encoding == "gzip"
            assert gzip.decompress(data) == members[member], key  # the whole fat file
    rows = await runtime.db.fetch(
        "SELECT key, arch, kind, file_format FROM file_uploads WHERE upload_id = $1",
        upload["id"],
    )
    assert sorted((r["key"], r["arch"], r["kind"]) for r in rows) == sorted(
        [(f"v1/{key}", arch, "lib") for arch, key in library]
        + [(f"v1/{key}", arch, "dbg") for arch, key in debug]
    )


@pytest.mark.gen_test(timeout=120)
async def test_two_members_one_key_is_refused_and_aliases_share_the_bytes(
    http_client, base_url, runtime, worker, tokens, tmp_path, backend
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    # The unstripped library and its split debug file both give <id>/libfoo.so.debug.
    response = await send(
        http_client,
        base_url,
        tokens["upload"],
        {"a/libfoo.so": lib.full.read_bytes(), "b/libfoo.so.debug": lib.debug.read_bytes()},
    )
    assert response.code == 400, response.body
    error = json.loads(response.body)["error"]
    assert "'a/libfoo.so' and 'b/libfoo.so.debug' would both be stored as" in error
    facts = expected(lib.full)
    assert await own(runtime).head(f"v1/{facts['keys'][0]}") is None

    response = await send(
        http_client, base_url, tokens["upload"], {"libfoo.so": lib.full.read_bytes()}
    )
    assert response.code == 201, response.body
    if backend.kind == "directory":  # copies are hard links: one file, four names
        root = Path(backend.url.removeprefix("file://"))
        inodes = {(root / "v1" / key).stat().st_ino for key in facts["keys"]}
        assert len(inodes) == 1


@pytest.mark.gen_test(timeout=120)
async def test_other_content_under_a_key_is_replaced_and_marked_update(
    http_client, base_url, runtime, worker, tokens, tmp_path
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    stripped = await send(
        http_client, base_url, tokens["upload"], {"libfoo.so": lib.stripped.read_bytes()}
    )
    assert stripped.code == 201, stripped.body
    # The unstripped library has the same id: its own key now holds other bytes.
    full = await send(http_client, base_url, tokens["upload"], {"libfoo.so": lib.full.read_bytes()})
    assert full.code == 201, full.body
    upload = json.loads(full.body)["upload"]
    assert upload["skipped_keys"] == []
    facts = expected(lib.full)
    (row,) = await runtime.db.fetch(
        "SELECT key, update, aliases FROM file_uploads WHERE upload_id = $1", upload["id"]
    )
    assert row["key"] == f"v1/{facts['keys'][0]}" and row["update"] is True
    for key in facts["keys"]:
        data, _ = await read_stored(runtime, f"v1/{key}")
        assert gzip.decompress(data) == lib.full.read_bytes(), key


@pytest.mark.gen_test(timeout=120)
async def test_an_attempt_that_died_between_keys_is_finished_by_the_next(
    runtime, monkeypatch, tmp_path
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    facts = expected(lib.full)
    staged = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(make_zip({"lib/libfoo.so": lib.full.read_bytes()}))
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    destination = runtime.storage.upload_default
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'n.zip', $2, $3, $4) RETURNING id""",
        user_id,
        destination.bucket,
        str(staged),
        destination.url,
    )
    store = runtime.stores.at(destination)
    copies: list[str] = []
    real = store.copy

    async def dying(source: str, key: str) -> None:
        copies.append(key)
        if len(copies) > 1:
            raise ConnectionError("the worker died here")
        await real(source, key)

    monkeypatch.setattr(store, "copy", dying)
    with pytest.raises(ConnectionError):
        await process.process_upload(runtime, upload_id)
    monkeypatch.setattr(store, "copy", real)
    await process.process_upload(runtime, upload_id)
    await process.process_upload(runtime, upload_id)  # a duplicate delivery changes nothing
    rows = await runtime.db.fetch(
        "SELECT key, update FROM file_uploads WHERE upload_id = $1", upload_id
    )
    assert [(r["key"], r["update"]) for r in rows] == [(f"v1/{facts['keys'][0]}", False)]
    for key in facts["keys"]:
        data, _ = await read_stored(runtime, f"v1/{key}")
        assert gzip.decompress(data) == lib.full.read_bytes(), key
    upload = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert upload["completed_at"] is not None
    # What the first attempt stored is found there: skipped by the second.
    assert sorted(upload["skipped_keys"]) == sorted(f"v1/{k}" for k in facts["keys"][:2])


@pytest.mark.gen_test(timeout=120)
async def test_keys_a_directory_cannot_hold_refuse_the_upload_before_anything_is_stored(
    http_client, base_url, runtime, worker, tokens, tmp_path, backend
):
    if backend.kind != "directory":
        pytest.skip("an S3 bucket holds these keys")
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    other = native_files.elf_lib(tmp_path / "other", tag=f"{tmp_path}-other").stripped
    # Its own name fits a directory; with ".debug" it passes the 250 bytes a file name may have.
    name = "l" * 243 + ".so"
    data = lib.full.read_bytes()
    response = await send(
        http_client,
        base_url,
        tokens["upload"],
        {name: data, "libfoo.so": other.read_bytes()},
    )
    assert response.code == 400, response.body
    assert "The destination cannot hold" in json.loads(response.body)["error"]
    facts = expected(other)
    assert await own(runtime).head(f"v1/{facts['keys'][0]}") is None

    files = [planned(name, data), planned("libfoo.so", other.read_bytes())]
    plan = await v2_call(http_client, base_url, "/upload/v2/", tokens["upload"], {"files": files})
    assert plan.code == 201, plan.body
    body = json.loads(plan.body)
    for entry, content in zip(body["files"], (data, other.read_bytes()), strict=True):
        assert await v2_put(entry["action"], content) == 200
    done = await v2_call(http_client, base_url, body["complete_url"], tokens["upload"], {})
    assert done.code == 400, done.body
    assert f"{name} cannot be stored as" in json.loads(done.body)["error"]
    assert await own(runtime).head(f"v1/{facts['keys'][0]}") is None


@pytest.mark.gen_test(timeout=120)
async def test_a_member_named_dot_dot_debug_is_refused_on_every_backend(
    http_client, base_url, runtime, worker, tokens, tmp_path, backend
):
    lib = native_files.elf_lib(tmp_path / "lib", tag=str(tmp_path))
    response = await send(
        http_client, base_url, tokens["upload"], {"x/...debug": lib.debug.read_bytes()}
    )
    assert response.code == 400, response.body
    error = json.loads(response.body)["error"]
    assert "leaves '..' as the debug file's name" in error, error
