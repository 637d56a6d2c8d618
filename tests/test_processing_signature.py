"""Crash signatures (docs/processing.md, "Signatures"): frames normalised as Socorro normalises
C and C++ frames, irrelevant frames left out, prefix frames joined to the frame after them, the
lists replaceable by settings."""

from __future__ import annotations

import pytest

from symbolon.conf import SettingsError, load_settings
from symbolon.processing.pipeline.signature import (
    NO_FRAMES,
    SignatureRules,
    frame_signature,
    normalize_function,
    signature_of,
)

RULES = SignatureRules.make()


def fn(name: str) -> dict[str, str]:
    return {"function": name, "module": "app", "module_offset": "0x10"}


@pytest.mark.parametrize(
    ("function", "normalized"),
    [
        ("crash_here", "crash_here"),
        ("demo::Request::process(int, char const*)", "demo::Request::process"),
        ("std::vector<int, std::allocator<int> >::at(unsigned long) const", "std::vector<T>::at"),
        ("ns::Thing::operator()(int)", "ns::Thing::operator()"),
        ("operator new(unsigned long)", "operator new"),
        ("operator delete[](void*)", "operator delete[]"),
        ("ns::Stream::operator<<(int)", "ns::Stream::operator<<"),
        ("a::b<c>::operator<(a::b<c> const&) const", "a::b<T>::operator<"),
        ("(anonymous namespace)::helper(int)", "(anonymous namespace)::helper"),
        ("f(std::function<void (int)>)", "f"),
        ("unbalanced(int", "unbalanced(int"),
    ],
)
def test_functions_are_normalised_as_socorro_does(function, normalized):
    assert normalize_function(function) == normalized


def test_a_frame_without_a_function_is_its_file_and_line_or_its_module_and_offset():
    assert frame_signature({"file": "/src/a/b.c", "line": 12, "module": "m"}) == "b.c#12"
    assert frame_signature({"file": "c:\\src\\a.cpp", "line": 3}) == "a.cpp#3"
    assert frame_signature({"module": "libc.so.6", "module_offset": "0x2724a"}) == (
        "libc.so.6@0x2724a"
    )
    assert frame_signature({"offset": "0x600000000"}) == "@0x600000000"


def test_the_top_frame_names_the_crash_unless_it_is_a_prefix_or_irrelevant():
    assert signature_of([fn("crash_here"), fn("main")], RULES) == "crash_here"
    frames = [
        {"offset": "0x7f0000001000"},  # outside every module: irrelevant
        fn("__GI_raise"),
        fn("abort"),
        fn("__assert_fail"),
        fn("Parser::check(int)"),
        fn("main"),
    ]
    assert signature_of(frames, RULES) == "abort | __assert_fail | Parser::check"
    frames = [fn("__memmove_avx_unaligned_erms"), fn("malloc"), fn("Buffer::grow(unsigned long)")]
    assert signature_of(frames, RULES) == "__memmove_avx_unaligned_erms | malloc | Buffer::grow"
    # Unsymbolicated frames of a module stay: they say which module crashed.
    unnamed = [{"module": "libfoo.so", "module_offset": "0x1234"}, fn("main")]
    assert signature_of(unnamed, RULES) == "libfoo.so@0x1234"
    assert signature_of([], RULES) == NO_FRAMES
    assert signature_of([{"offset": "0x1234"}], RULES) == NO_FRAMES


def test_at_most_max_frames_are_joined():
    frames = [fn("malloc")] * 20 + [fn("main")]
    assert signature_of(frames, SignatureRules.make(max_frames=3)) == "malloc | malloc | malloc"
    assert signature_of(frames, RULES).count("malloc") == 10


def test_settings_replace_the_lists():
    settings = load_settings(
        {
            "PROCESSOR_SIGNATURE_PREFIX": "my_alloc|Checked.*",
            "PROCESSOR_SIGNATURE_IRRELEVANT": "trampoline",
            "PROCESSOR_SIGNATURE_FRAMES": "4",
        },
        dotenv_path=None,
    )
    rules = SignatureRules.make(
        settings.processor_signature_prefix,
        settings.processor_signature_irrelevant,
        settings.processor_signature_frames,
    )
    frames = [fn("trampoline"), fn("my_alloc"), fn("CheckedCopy(int)"), fn("abort"), fn("x")]
    # "abort" is not a prefix any more: the built-in list was replaced.
    assert signature_of(frames, rules) == "my_alloc | CheckedCopy | abort"
    with pytest.raises(SettingsError) as refused:
        load_settings({"PROCESSOR_SIGNATURE_PREFIX": "(unclosed"}, dotenv_path=None)
    assert "PROCESSOR_SIGNATURE_PREFIX='(unclosed': expected a Python regular expression" in str(
        refused.value
    )


def test_a_long_signature_is_cut_as_socorro_cuts_it():
    name = "ns::" + "VeryLongTemplateHeavyName" * 12
    frames = [fn("malloc"), fn(f"{name}::run(int)"), fn("main")]
    signature = signature_of(frames, RULES)
    assert len(signature) == 255
    assert signature.startswith(f"malloc | {name[:100]}") and signature.endswith("...")


def test_normalising_takes_time_in_proportion_to_the_name():
    import time

    # Each group used to join everything written before it: 40,000 groups took seconds, these
    # would take minutes. The generous bound tells linear from quadratic on any machine.
    started = time.monotonic()
    assert normalize_function("f" + "()" * 400_000) == "f"
    assert normalize_function("f" + " ()" * 400_000) == "f"
    assert time.monotonic() - started < 10
    # What decides operator() still sees past whitespace and earlier groups.
    assert normalize_function("ns::T<int>::operator  ()(int)") == "ns::T<T>::operator ()"


def test_a_long_function_name_is_cut_before_it_is_normalised():
    name = "ns::" + "a" * 100_000 + "(int)"
    assert frame_signature(fn(name)) == ("ns::" + "a" * 100_000)[:1024]


def test_a_function_normalising_to_nothing_is_named_by_its_module_and_offset():
    assert normalize_function("(int)") == ""
    assert frame_signature(fn("(int)")) == "app@0x10"
    assert frame_signature({"function": "(x)", "file": "a.c", "line": 3}) == "a.c#3"
    assert signature_of([fn("()"), fn("main")], RULES) == "app@0x10"
