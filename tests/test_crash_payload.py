"""The multipart rules of docs/crashes.md ("What happens to a report"), on the parser alone."""

from __future__ import annotations

import hashlib
import json

import pytest

from symbolon.crashes.payload import (
    Malformed,
    boundary_of,
    parse,
    sanitize_dump_name,
    split_header_params,
)
from tests.crashes import BOUNDARY, body_of, part


def reason_of(body: bytes, boundary: str = BOUNDARY) -> str:
    with pytest.raises(Malformed) as caught:
        parse(body, boundary)
    return caught.value.reason


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=X", "X"),
        ("multipart/form-data;boundary=X", "X"),
        ("multipart/form-data;   boundary=X", "X"),
        ('multipart/form-data; boundary="X y"', "X y"),
        ("multipart/form-data; boundary=X; charset=utf-8", "X"),
        ("multipart/mixed; boundary=X", "X"),
        ("  multipart/form-data  ; boundary=X", "X"),
    ],
)
def test_accepted_content_types(content_type, boundary):
    assert boundary_of(content_type) == boundary


@pytest.mark.parametrize(
    ("content_type", "reason"),
    [
        (None, "no_content_type"),
        ("", "no_content_type"),
        ("application/json", "wrong_content_type"),
        ("Multipart/Form-Data; boundary=x", "wrong_content_type"),  # case-sensitive
        ("multipart/related; boundary=x", "wrong_content_type"),
        ("text/plain", "wrong_content_type"),
        ("multipart/form-data", "no_boundary"),
        ("multipart/form-data; charset=utf-8; boundary=X", "no_boundary"),
        ("multipart/form-data; Boundary=X", "no_boundary"),
        ("multipart/form-data; boundary=", "no_boundary"),
        ("multipart/form-data; boundary=" + "b" * 71, "no_boundary"),
    ],
)
def test_refused_content_types(content_type, reason):
    with pytest.raises(Malformed) as caught:
        boundary_of(content_type)
    assert caught.value.reason == reason


def test_preamble_and_epilogue_are_ignored_and_the_last_crlf_may_be_missing():
    body = b"preamble\r\n" + body_of([part("A", "1")]) + b"epilogue"
    assert parse(body, BOUNDARY).annotations == {"A": "1"}
    body = body_of([part("A", "1")]).removesuffix(b"\r\n")
    assert parse(body, BOUNDARY).annotations == {"A": "1"}


def test_bare_lf_line_breaks_are_invalid():
    body = body_of([part("A", "1")]).replace(b"\r\n", b"\n")
    assert reason_of(body) == "invalid_payload_structure"


def test_the_closing_delimiter_is_required():
    assert reason_of(body_of([part("A", "1")], closing=False)) == "invalid_payload_structure"


def test_a_body_with_another_boundary_is_invalid():
    assert reason_of(body_of([part("A", "1")], boundary="other")) == "invalid_payload_structure"


def test_part_headers_are_limited_to_8_kib():
    fits = part("A", "1", extra_headers=["X-Pad: " + "p" * (8 * 1024 - 60)])
    assert parse(body_of([fits]), BOUNDARY).annotations == {"A": "1"}
    too_long = part("A", "1", extra_headers=["X-Pad: " + "p" * (8 * 1024)])
    assert reason_of(body_of([too_long])) == "invalid_payload_structure"


def test_header_names_are_case_insensitive_and_params_may_be_unquoted():
    raw = b"content-disposition: attachment; name=Plain\r\nCONTENT-TYPE: text/plain\r\n\r\nv"
    assert parse(body_of([raw]), BOUNDARY).annotations == {"Plain": "v"}


def test_values_may_contain_crlf_and_near_boundaries():
    value = f"line1\r\nline2\r\n--{BOUNDARY[:-1]}\r\n-- not a delimiter"
    assert parse(body_of([part("A", value)]), BOUNDARY).annotations == {"A": value}


def test_two_hundred_and_ten_fields_are_all_kept():
    parts = [part(f"Field{i}", str(i)) for i in range(210)]
    annotations = parse(body_of(parts), BOUNDARY).annotations
    assert len(annotations) == 210 and annotations["Field209"] == "209"


def test_parts_without_a_name_are_dropped():
    body = body_of([part(None, "x"), part("", "y"), b"\r\nno headers at all", part("A", "1")])
    assert parse(body, BOUNDARY).annotations == {"A": "1"}


def test_names_are_not_sanitised_and_are_case_sensitive():
    body = body_of([part("a b/c.d", "1"), part("Ünï", "2"), part("x", "3"), part("X", "4")])
    assert parse(body, BOUNDARY).annotations == {"a b/c.d": "1", "Ünï": "2", "x": "3", "X": "4"}


def test_duplicate_annotations_last_wins_and_empty_values_are_kept():
    body = body_of([part("A", "1"), part("A", "2"), part("E", "")])
    assert parse(body, BOUNDARY).annotations == {"A": "2", "E": ""}


def test_charset_is_honoured_and_a_bad_one_drops_the_field_with_a_note():
    body = body_of(
        [
            part("Latin", "café".encode("latin-1"), "text/plain; charset=latin-1"),
            part("Bad", b"\xff\xfe", "text/plain; charset=utf-8"),
            part("Unknown", "x", "text/plain; charset=no-such-charset"),
            part("Bytes", "eA==", "text/plain; charset=base64"),
            part("Kept", "yes"),
        ]
    )
    payload = parse(body, BOUNDARY)
    assert payload.annotations == {"Latin": "café", "Kept": "yes"}
    assert payload.notes == [
        "extract payload text part exception: invalid text or charset: utf-8",
        "extract payload text part exception: invalid text or charset: no-such-charset",
        "extract payload text part exception: invalid text or charset: base64",
    ]


def test_a_text_value_over_20_mib_is_dropped_with_a_note():
    big = b"a" * (20 * 1024 * 1024 + 1)
    payload = parse(body_of([part("Big", big), part("A", "1")]), BOUNDARY)
    assert payload.annotations == {"A": "1"}
    assert payload.notes == ["extract payload text part exception: body part is too large"]


def test_classification_of_parts():
    body = body_of(
        [
            part("upload_file_minidump", b"no type, no filename: an annotation"),
            part("textfile", "has a filename", "text/plain", "notes.txt"),
            part("image", b"\x89PNG", "image/png"),
            part("octet", b"\x00", "application/octet-stream"),
            part("attachment", b"MDMP", None, "crash.dmp"),  # a file part with no type
        ]
    )
    payload = parse(body, BOUNDARY)
    assert payload.annotations == {"upload_file_minidump": "no type, no filename: an annotation"}
    assert {k: bytes(v) for k, v in payload.dumps.items()} == {
        "textfile": b"has a filename",
        "image": b"\x89PNG",
        "octet": b"\x00",
        "attachment": b"MDMP",
    }
    assert payload.notes == [
        "unknown content type: textfile text/plain",
        "unknown content type: image image/png",
        "unknown content type: attachment text/plain",  # multipart's default type
    ]


def test_json_parts_are_recognised_by_content_type_whatever_their_name():
    payload = parse(
        body_of([part("anything", '{"A": 1}', "application/json; charset=utf-8")]), BOUNDARY
    )
    assert payload.annotations == {"A": 1} and payload.has_json


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"A": "\xff"}', "invalid_json"),
        (b"[1, 2]", "invalid_json_value"),
        (b'"text"', "invalid_json_value"),
    ],
)
def test_bad_json_parts(value, reason):
    assert reason_of(body_of([part("extra", value, "application/json")])) == reason


def test_the_first_problem_in_body_order_wins():
    body = body_of(
        [
            part("raw_crash", b"x", "application/octet-stream"),
            part("extra", b"[]", "application/json"),
        ]
    )
    assert reason_of(body) == "invalid_dump_name"
    body = body_of(
        [
            part("extra", b"[]", "application/json"),
            part("raw_crash", b"x", "application/octet-stream"),
        ]
    )
    assert reason_of(body) == "invalid_json_value"


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("upload file-minidump.Δx!", "uploadfileminidumpx"),
        ("upload_file_minidump_abcdefghijklmnopqrstuvwxyz", "upload_file_minidump_abcdefghi"),
        ("!!!", ""),
        ("raw.crash", "rawcrash"),
    ],
)
def test_dump_names_are_sanitised(name, clean):
    assert sanitize_dump_name(name) == clean


@pytest.mark.parametrize("name", ["dump_names", "processed_crash", "raw_crash", "raw_crash!"])
def test_reserved_dump_names_are_refused(name):
    body = body_of([part("A", "1"), part(name, b"x", "application/octet-stream")])
    assert reason_of(body) == "invalid_dump_name"


@pytest.mark.parametrize("other", ["dump", "!!!"])
def test_a_dump_that_would_share_the_main_dumps_key_is_refused(other):
    body = body_of(
        [
            part("upload_file_minidump", b"1", "application/octet-stream"),
            part(other, b"2", "application/octet-stream"),
        ]
    )
    assert reason_of(body) == "invalid_dump_name"


def test_duplicate_dumps_last_wins_and_its_checksum_is_recorded():
    body = body_of(
        [
            part("upload_file_minidump", b"first", "application/octet-stream"),
            part("upload_file_minidump", b"second", "application/octet-stream"),
        ]
    )
    payload = parse(body, BOUNDARY)
    assert bytes(payload.dumps["upload_file_minidump"]) == b"second"
    assert payload.checksums() == {"upload_file_minidump": hashlib.sha256(b"second").hexdigest()}


def test_header_params_keep_quoted_semicolons():
    kind, params = split_header_params('form-data; name="a;b"; filename=x.dmp')
    assert kind == "form-data"
    assert params == {"name": "a;b", "filename": "x.dmp"}


def test_parse_works_on_memory_mapped_bodies(tmp_path):
    import mmap

    path = tmp_path / "body"
    path.write_bytes(body_of([part("A", "1"), part("d", b"\x01\x02", "application/octet-stream")]))
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        payload = parse(mapped, BOUNDARY)
        assert payload.annotations == {"A": "1"}
        assert bytes(payload.dumps["d"]) == b"\x01\x02"
        for view in payload.dumps.values():
            view.release()
        payload.dumps.clear()
    assert json.dumps(payload.annotations) == '{"A": "1"}'


def test_deeply_nested_json_is_invalid_json_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000
    assert reason_of(body_of([part("extra", deep, "application/json")])) == "invalid_json"


def test_many_dumps_named_like_the_main_one_are_refused_once():
    parts = [part(f"d{i}", b"x", "application/octet-stream") for i in range(3000)]
    parts += [part("dump", b"x", "application/octet-stream")] * 3000
    payload = parse(body_of(parts), BOUNDARY)  # one "dump" only: no collision
    assert len(payload.dumps) == 3001
    parts.append(part("upload_file_minidump", b"x", "application/octet-stream"))
    assert reason_of(body_of(parts)) == "invalid_dump_name"


def test_query_fields_alone_do_not_make_a_json_report_mixed():
    body = body_of([part("extra", '{"ProductName": "X"}', "application/json")])
    payload = parse(body, BOUNDARY, {"product": "Y"})
    assert payload.annotations == {"ProductName": "X"}
    assert payload.notes == []
