"""``/symbolicate/v5`` and ``/v4`` answers (docs/symbolication.md), on small
example modules and on real ``dump_syms`` output, served by a real upstream and own storage."""

from __future__ import annotations

import json

import pytest

from symbolon.symbolication.request import MAX_JOBS
from tests.symbolication_support import new_id, put_own, sym, with_debug_id


@pytest.fixture
def settings(symbolication_settings):
    """The app of these tests has an upstream and a symcache directory of its own."""
    return symbolication_settings


DEMO_ID = "5C5A1B1D2E3F405162738495061728390"
WIN_ID = "A1B2C3D4E5F60718293A4B5C6D7E8F901"
MISSING_ID = "00112233445566778899AABBCCDDEEFF0"


async def post(http_client, base_url, path, body, headers=None):
    if not isinstance(body, bytes | str):
        body = json.dumps(body)
    return await http_client.fetch(
        base_url + path, method="POST", body=body, headers=headers or {}, raise_error=False
    )


@pytest.fixture
def example_modules(upstream):
    upstream.put("libdemo.so", DEMO_ID, sym("examples/libdemo.so.sym"))
    upstream.put("demo.pdb", WIN_ID, sym("examples/demo.sym"))
    return upstream


EXAMPLE_MEMORY_MAP = [
    ["libdemo.so", DEMO_ID],
    ["demo.pdb", WIN_ID],
    ["libmissing.so", MISSING_ID],
    ["unused.so", "ABCDEF"],
]


@pytest.mark.gen_test(timeout=60)
async def test_v5_answers_the_worked_example(http_client, base_url, example_modules, symbolication):
    stack = [[0, 4104], [0, 4124], [0, 4136], [1, 20496], [1, 20740], [2, 256], [-1, 65536]]
    stack.append([0, -1])
    body = {"jobs": [{"memoryMap": EXAMPLE_MEMORY_MAP, "stacks": [stack]}]}
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    assert response.code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body) == {
        "results": [
            {
                "stacks": [
                    [
                        {
                            "frame": 0,
                            "module": "libdemo.so",
                            "module_offset": "0x1008",
                            "function": "process_request",
                            "function_offset": "0x8",
                            "file": "/src/demo/app.c",
                            "line": 10,
                        },
                        {
                            "frame": 1,
                            "module": "libdemo.so",
                            "module_offset": "0x101c",
                            "function": "process_request",
                            "function_offset": "0x1c",
                            "file": "/src/demo/app.c",
                            "line": 12,
                            "inlines": [
                                {"function": "clamp_value", "file": "/src/demo/util.h", "line": 4}
                            ],
                        },
                        {
                            "frame": 2,
                            "module": "libdemo.so",
                            "module_offset": "0x1028",
                            "function": "process_request",
                            "function_offset": "0x28",
                            "file": "/src/demo/app.c",
                            "line": 14,
                        },
                        {
                            "frame": 3,
                            "module": "demo.dll",
                            "module_offset": "0x5010",
                            "function": "DemoMain",
                            "function_offset": "0x10",
                        },
                        {
                            "frame": 4,
                            "module": "demo.dll",
                            "module_offset": "0x5104",
                            "function": "DemoHelper",
                            "function_offset": "0x4",
                        },
                        {"frame": 5, "module": "libmissing.so", "module_offset": "0x100"},
                        {"frame": 6, "module": "<unknown>", "module_offset": "0x10000"},
                        {"frame": 7, "module": "libdemo.so", "module_offset": "-0x1"},
                    ]
                ],
                "found_modules": {
                    f"libdemo.so/{DEMO_ID}": True,
                    f"demo.pdb/{WIN_ID}": True,
                    f"libmissing.so/{MISSING_ID}": False,
                    "unused.so/ABCDEF": None,
                },
            }
        ]
    }
    # Key order is part of the shape clients see.
    frame = json.loads(response.body)["results"][0]["stacks"][0][1]
    assert list(frame) == [
        "frame",
        "module",
        "module_offset",
        "function",
        "function_offset",
        "file",
        "line",
        "inlines",
    ]


@pytest.mark.gen_test(timeout=60)
async def test_v4_answers_the_worked_example(http_client, base_url, example_modules, symbolication):
    body = {
        "memoryMap": EXAMPLE_MEMORY_MAP,
        "stacks": [[[0, 4104], [0, 4124], [1, 20496], [2, 256], [-1, 65536]], [[0, 1000]]],
        "version": 4,
    }
    response = await post(http_client, base_url, "/symbolicate/v4", body)
    assert response.code == 200
    assert json.loads(response.body) == {
        "symbolicatedStacks": [
            [
                "process_request (in libdemo.so)",
                "process_request (in libdemo.so)",
                "DemoMain (in demo.dll)",
                "0x100 (in libmissing.so)",
                "0x10000 (in <unknown>)",
            ],
            ["0x3e8 (in libdemo.so)"],
        ],
        "knownModules": [True, True, False, None],
    }


@pytest.mark.gen_test(timeout=60)
async def test_v4_gives_duplicate_modules_their_own_slot(
    http_client, base_url, example_modules, symbolication
):
    body = {"memoryMap": [EXAMPLE_MEMORY_MAP[0], EXAMPLE_MEMORY_MAP[0]], "stacks": [[[1, 4104]]]}
    response = await post(http_client, base_url, "/symbolicate/v4", body)
    assert json.loads(response.body)["knownModules"] == [True, True]


@pytest.mark.gen_test(timeout=60)
async def test_real_dump_syms_output_with_inline_frames(
    http_client, base_url, upstream, symbolication
):
    # libinlines.so: demo::scale() is inlined twice into demo::Request::process (dump_syms -d).
    ident = new_id()
    upstream.put("libinlines.so", ident, with_debug_id(sym("libinlines.so.sym"), ident))
    body = {
        "jobs": [
            {
                "memoryMap": [["libinlines.so", ident]],
                "stacks": [[[0, 0x1120], [0, 0x1190], [0, 0x1230], [0, 0x1000], [0, 0x10000]]],
            }
        ]
    }
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    frames = json.loads(response.body)["results"][0]["stacks"][0]
    assert frames[0] == {
        "frame": 0,
        "module": "libinlines.so",
        "module_offset": "0x1120",
        "function": "demo::Request::process(int const*, int)",
        "function_offset": "0x0",
        "file": "/tmp/symbolon-fixtures/inlines.cpp",
        "line": 30,
    }
    # Inside the inlined call: the outer frame keeps the call-site line, the callee is listed.
    assert frames[1] == {
        "frame": 1,
        "module": "libinlines.so",
        "module_offset": "0x1190",
        "function": "demo::Request::process(int const*, int)",
        "function_offset": "0x70",
        "file": "/tmp/symbolon-fixtures/inlines.cpp",
        "line": 33,
        "inlines": [
            {"function": "demo::scale", "file": "/tmp/symbolon-fixtures/inlines.cpp", "line": 19}
        ],
    }
    assert frames[2]["function"] == "process_request"
    # A PUBLIC symbol: no file or line.
    assert frames[3] == {
        "frame": 3,
        "module": "libinlines.so",
        "module_offset": "0x1000",
        "function": "_init",
        "function_offset": "0x0",
    }
    # Past the last FUNC, the last PUBLIC covers every higher address.
    assert frames[4]["function"] == "_fini"
    assert int(frames[4]["function_offset"], 16) == 0x10000 - 0x124C  # PUBLIC 124c _fini


@pytest.mark.gen_test(timeout=60)
async def test_linux_modules_keep_their_debug_name(http_client, base_url, upstream, symbolication):
    # plain.sym (dump_syms of an executable): "INFO CODE_ID <id>" has no PE name.
    ident = new_id()
    upstream.put("plain", ident, with_debug_id(sym("plain.sym"), ident))
    body = {"memoryMap": [["plain", ident]], "stacks": [[[0, 0x1169]]]}
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    frame = json.loads(response.body)["results"][0]["stacks"][0][0]
    assert frame["module"] == "plain"
    assert frame["function"] == "checksum"
    assert frame["file"] == "/tmp/symbolon-fixtures/plain.c"


@pytest.mark.gen_test(timeout=60)
async def test_own_storage_is_read_first(http_client, base_url, settings, upstream, symbolication):
    ident = new_id()
    put_own(
        settings,
        f"libdemo.so/{ident}/libdemo.so.sym",
        with_debug_id(sym("examples/libdemo.so.sym"), ident),
    )
    body = {"memoryMap": [["libdemo.so", ident.lower()]], "stacks": [[[0, 4104]]]}
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    result = json.loads(response.body)["results"][0]
    assert result["stacks"][0][0]["function"] == "process_request"
    assert result["found_modules"] == {f"libdemo.so/{ident.lower()}": True}
    assert upstream.hits == []  # never asked: own storage had it (upper-cased id, gzip)


@pytest.mark.gen_test(timeout=60)
async def test_own_storage_finds_a_lower_case_debug_id_directory(
    http_client, base_url, settings, upstream, symbolication
):
    # Buckets inherited from older uploads may hold the archive's own spelling.
    ident = new_id()
    put_own(
        settings,
        f"libdemo.so/{ident.lower()}/libdemo.so.sym",
        with_debug_id(sym("examples/libdemo.so.sym"), ident),
    )
    body = {"memoryMap": [["libdemo.so", ident]], "stacks": [[[0, 4104]]]}
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    result = json.loads(response.body)["results"][0]
    assert result["stacks"][0][0]["function"] == "process_request"
    assert upstream.hits == []


@pytest.mark.gen_test(timeout=60)
async def test_found_modules_are_shared_across_jobs(
    http_client, base_url, example_modules, symbolication
):
    body = {
        "jobs": [
            {
                "memoryMap": [EXAMPLE_MEMORY_MAP[0], EXAMPLE_MEMORY_MAP[2]],
                "stacks": [[[0, 4104], [1, 1]]],
            },
            # Lists both, references neither: job 0's lookups still show.
            {"memoryMap": [EXAMPLE_MEMORY_MAP[2], EXAMPLE_MEMORY_MAP[0], ["", ""]], "stacks": [[]]},
            {"memoryMap": [["libdemo.so", ""], ["", DEMO_ID]], "stacks": [[[0, 1], [1, 1]]]},
        ]
    }
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    results = json.loads(response.body)["results"]
    assert results[1]["found_modules"] == {
        f"libmissing.so/{MISSING_ID}": False,
        f"libdemo.so/{DEMO_ID}": True,
        "/": None,
    }
    assert results[1]["stacks"] == [[]]
    # Empty names or ids are never looked up.
    assert results[2]["found_modules"] == {"libdemo.so/": None, f"/{DEMO_ID}": None}
    assert results[2]["stacks"][0][1]["module"] == "<unknown>"


@pytest.mark.gen_test(timeout=60)
async def test_found_modules_collapse_duplicates_and_keep_case(
    http_client, base_url, example_modules, symbolication
):
    lower = DEMO_ID.lower()
    body = {
        "memoryMap": [EXAMPLE_MEMORY_MAP[0], EXAMPLE_MEMORY_MAP[0], ["libdemo.so", lower]],
        "stacks": [[[0, 4104], [2, -1]]],
    }
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    result = json.loads(response.body)["results"][0]
    # The upper-case request cached the module; the lower-case id is a hit on that entry.
    assert result["found_modules"] == {f"libdemo.so/{DEMO_ID}": True, f"libdemo.so/{lower}": True}
    assert result["stacks"][0][1] == {"frame": 1, "module": "libdemo.so", "module_offset": "-0x1"}


@pytest.mark.gen_test(timeout=60)
async def test_debug_id_mismatch_and_malformed_files_are_not_found(
    http_client, base_url, upstream, symbolication
):
    wrong, malformed, short = new_id(), new_id(), "ABCDE"
    upstream.put("wrong.so", wrong, sym("examples/libdemo.so.sym"))  # MODULE names another id
    upstream.put("bad.so", malformed, b"this is not a symbol file\n")
    upstream.put("short.so", short, sym("examples/libdemo.so.sym"))
    body = {
        "memoryMap": [["wrong.so", wrong], ["bad.so", malformed], ["short.so", short]],
        "stacks": [[[0, 4104], [1, 4104], [2, 4104]]],
    }
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    result = json.loads(response.body)["results"][0]
    assert list(result["found_modules"].values()) == [False, False, False]
    assert all("function" not in frame for frame in result["stacks"][0])


@pytest.mark.gen_test(timeout=60)
async def test_offsets_beyond_64_bits_are_formatted_not_looked_up(
    http_client, base_url, example_modules, symbolication
):
    body = {"memoryMap": [EXAMPLE_MEMORY_MAP[0]], "stacks": [[[0, 2**64], [0, 2**64 + 4104]]]}
    response = await post(http_client, base_url, "/symbolicate/v5", body)
    assert response.code == 200
    frames = json.loads(response.body)["results"][0]["stacks"][0]
    assert frames[0] == {"frame": 0, "module": "libdemo.so", "module_offset": "0x10000000000000000"}


@pytest.mark.gen_test(timeout=60)
async def test_debug_header_adds_diagnostics(http_client, base_url, example_modules, symbolication):
    body = {"jobs": [{"memoryMap": EXAMPLE_MEMORY_MAP, "stacks": [[[0, 4104], [2, 1]]]}]}
    first = await post(http_client, base_url, "/symbolicate/v5", body, {"Debug": "false"})
    debug = json.loads(first.body)["debug"]
    assert list(json.loads(first.body)) == ["results", "debug"]
    assert debug["cache_lookups"]["count"] == 2
    assert debug["cache_lookups"]["hits"] == 0
    assert debug["downloads"]["count"] == 2
    size = len(sym("examples/libdemo.so.sym"))
    assert debug["downloads"]["size_per_module"] == {f"libdemo.so/{DEMO_ID}": size}
    assert list(debug["downloads"]["fail_time_per_module"]) == [f"libmissing.so/{MISSING_ID}"]
    assert list(debug["parse_sym"]["time_per_module"]) == [f"libdemo.so/{DEMO_ID}"]
    assert debug["modules"] == {
        "count": 2,
        "stacks_per_module": {f"libdemo.so/{DEMO_ID}": 1, f"libmissing.so/{MISSING_ID}": 1},
    }
    again = await post(http_client, base_url, "/symbolicate/v5", body, {"Debug": "1"})
    debug = json.loads(again.body)["debug"]
    # libdemo.so from the cache; libmissing.so remembered as missing: no download at all.
    assert debug["cache_lookups"]["hits"] == 1
    assert debug["downloads"] == {"count": 0, "size": 0, "time": 0}
    assert debug["parse_sym"] == {"time": 0}
    plain = await post(http_client, base_url, "/symbolicate/v5", body)
    assert "debug" not in json.loads(plain.body)
    v4 = await post(http_client, base_url, "/symbolicate/v4", body["jobs"][0], {"Debug": "1"})
    assert "debug" not in json.loads(v4.body)


@pytest.mark.gen_test(timeout=60)
async def test_empty_jobs_and_limits(http_client, base_url, symbolication):
    response = await post(http_client, base_url, "/symbolicate/v5", {"jobs": []})
    assert json.loads(response.body) == {"results": []}
    for jobs in ("", {}):
        response = await post(http_client, base_url, "/symbolicate/v5", {"jobs": jobs})
        assert json.loads(response.body) == {"results": []}
    job = {"memoryMap": [], "stacks": [[[-1, 5]]]}
    response = await post(http_client, base_url, "/symbolicate/v5", {"jobs": [job] * MAX_JOBS})
    assert response.code == 200
    assert len(json.loads(response.body)["results"]) == MAX_JOBS


@pytest.mark.gen_test(timeout=60)
async def test_content_type_is_ignored(http_client, base_url, example_modules, symbolication):
    body = json.dumps({"memoryMap": [EXAMPLE_MEMORY_MAP[0]], "stacks": [[[0, 4104]]]})
    headers = {"Content-Type": "text/plain;charset=UTF-8"}
    response = await post(http_client, base_url, "/symbolicate/v5", body, headers)
    assert json.loads(response.body)["results"][0]["stacks"][0][0]["function"] == "process_request"
    # UTF-16 with a byte order mark, as json.loads reads it.
    response = await post(http_client, base_url, "/symbolicate/v5", body.encode("utf-16"))
    assert response.code == 200


# -- CORS ------------------------------------------------------------------------------------

EXPOSE = (
    "accept, accept-encoding, authorization, content-type, dnt, origin, user-agent, "
    "x-csrftoken, x-requested-with"
)


@pytest.mark.gen_test
async def test_cors_on_answers_and_errors(http_client, base_url, symbolication):
    origin = {"Origin": "http://example.com"}
    ok = await post(http_client, base_url, "/symbolicate/v5", {"jobs": []}, origin)
    bad = await post(http_client, base_url, "/symbolicate/v5", b"", origin)
    for response in (ok, bad):
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Access-Control-Expose-Headers"] == EXPOSE
        assert "Access-Control-Allow-Credentials" not in response.headers
    plain = await post(http_client, base_url, "/symbolicate/v5", {"jobs": []})
    assert "Access-Control-Allow-Origin" not in plain.headers


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/symbolicate/v5", "/symbolicate/v4"])
async def test_cors_preflight(http_client, base_url, path):
    headers = {
        "Origin": "http://example.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,debug",
    }
    response = await http_client.fetch(
        base_url + path, method="OPTIONS", headers=headers, raise_error=False
    )
    assert response.code == 200
    assert response.body == b""
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "POST"
    assert response.headers["Access-Control-Allow-Headers"] == "content-type,debug"
    assert response.headers["Access-Control-Max-Age"] == "86400"
    del headers["Access-Control-Request-Headers"]
    response = await http_client.fetch(
        base_url + path, method="OPTIONS", headers=headers, raise_error=False
    )
    assert response.headers["Access-Control-Allow-Headers"] == "*"


@pytest.mark.gen_test
async def test_options_without_origin_lists_the_methods(http_client, base_url):
    response = await http_client.fetch(
        base_url + "/symbolicate/v5", method="OPTIONS", raise_error=False
    )
    assert response.code == 200
    assert response.body == b""
    assert response.headers["Allow"] == "POST"
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.gen_test(timeout=60)
async def test_v5_text_is_formatted_as_json_dumps_formats_it(
    http_client, base_url, example_modules, symbolication
):
    stack = [[0, 4104], [0, 4124], [1, 20740], [2, 256], [-1, 65536], [0, -1]]
    body = {"jobs": [{"memoryMap": EXAMPLE_MEMORY_MAP, "stacks": [stack, []]}]}
    response = await post(http_client, base_url, "/symbolicate/v5", body, {"Debug": "1"})
    assert response.body.decode() == json.dumps(json.loads(response.body))


@pytest.mark.gen_test(timeout=60)
async def test_debug_block_leaves_out_stacks_per_module_when_no_module_was_looked_up(
    http_client, base_url, symbolication
):
    # A module with no frame is not looked up (found_modules null), so nothing is recorded.
    body = {"jobs": [{"memoryMap": [["libunused.so", new_id()]], "stacks": [[[-1, 5]]]}]}
    response = await post(http_client, base_url, "/symbolicate/v5", body, {"Debug": "1"})
    answer = json.loads(response.body)
    assert list(answer["results"][0]["found_modules"].values()) == [None]
    assert answer["debug"]["modules"] == {"count": 0}
