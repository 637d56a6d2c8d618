import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from symbolon.crashes.crashid import create_crash_id, throttle_digit
from symbolon.crashes.throttling.engine import (
    NO_MATCH,
    Decision,
    Result,
    Rule,
    Sample,
    Throttler,
    always_match,
    log_decision,
)
from symbolon.crashes.throttling.mozilla import (
    MOZILLA_PRODUCT_PACKAGENAMES,
    MOZILLA_PRODUCTS,
    MOZILLA_RULES,
)
from symbolon.crashes.throttling.presets import (
    ACCEPT_ALL,
    ALL_PRODUCT_PACKAGENAMES,
    ALL_PRODUCTS,
    load_throttler,
)
from symbolon.crashes.throttling.rule_files import load_rules_file, rules_from_data

ACCEPT, DEFER, REJECT, FAKEACCEPT, CONTINUE = (
    Result.ACCEPT,
    Result.DEFER,
    Result.REJECT,
    Result.FAKEACCEPT,
    Result.CONTINUE,
)
NOW = datetime(2026, 11, 22, 12, 0)  # naive local time, like the reference's clock
LOGGER = "symbolon.crashes.throttler"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "throttling.md"


def mozilla(
    random=0.5, now=NOW, products=MOZILLA_PRODUCTS, packagenames=MOZILLA_PRODUCT_PACKAGENAMES
):
    return Throttler(MOZILLA_RULES, products, packagenames, random=lambda: random, now=lambda: now)


def decide(annotations, **kw):
    return mozilla(**kw).throttle(annotations)


def rule_of(annotations, **kw):
    return decide(annotations, **kw).rule


def messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


# --- The evaluation loop (docs/throttling.md, "How rules are evaluated") ------------------------


def test_star_key_gets_the_whole_map():
    seen = []
    rule = Rule("look", "*", lambda t, data: seen.append(data) or True, ACCEPT)
    annotations = {"A": 1}
    Throttler([rule]).throttle(annotations)
    assert seen == [annotations] and seen[0] is annotations


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (None, "None"), (True, "True"), (False, "False"), (1.5, "1.5"), ("x", "x")],
)
def test_keyed_condition_gets_str_of_the_value(value, text):
    seen = []
    rule = Rule("look", "Key", lambda t, v: seen.append(v) or True, ACCEPT)
    Throttler([rule]).throttle({"Key": value})
    assert seen == [text]


def test_keyed_rule_is_skipped_when_the_key_is_missing():
    called = []
    rules = [
        Rule("needs_key", "Key", lambda t, v: called.append(v) or True, REJECT),
        Rule("accept_everything", "*", always_match, ACCEPT),
    ]
    assert Throttler(rules).throttle({"Other": "x"}) == Decision(ACCEPT, "accept_everything", 100)
    assert called == []


def test_fixed_result_reports_100_percent():
    rules = [Rule("defer_all", "*", always_match, DEFER)]
    assert Throttler(rules).throttle({}) == Decision(DEFER, "defer_all", 100)


def test_first_deciding_rule_wins():
    rules = [
        Rule("first", "A", lambda t, v: v == "1", REJECT),
        Rule("second", "*", always_match, FAKEACCEPT),
        Rule("third", "*", always_match, ACCEPT),
    ]
    throttler = Throttler(rules)
    assert throttler.throttle({"A": "1"}).rule == "first"
    assert throttler.throttle({"A": "2"}) == Decision(FAKEACCEPT, "second", 100)


@pytest.mark.parametrize(
    ("random", "expected"),
    [(0.0, ACCEPT), (0.36, ACCEPT), (0.37, ACCEPT), (0.3700001, REJECT), (0.99, REJECT)],
)
def test_sampling_hit_is_random_times_100_at_most_percent(random, expected):
    rules = [Rule("sampled", "*", always_match, Sample(37, ACCEPT, REJECT))]
    decision = Throttler(rules, random=lambda: random).throttle({})
    assert decision == Decision(expected, "sampled", 37)


def test_percent_zero_hits_only_when_random_is_exactly_zero():
    rules = [Rule("never", "*", always_match, Sample(0, ACCEPT, REJECT))]
    assert Throttler(rules, random=lambda: 0.0).throttle({}).result is ACCEPT
    assert Throttler(rules, random=lambda: 1e-12).throttle({}).result is REJECT


def test_random_is_drawn_only_for_a_matching_sampling_rule():
    draws = []

    def random():
        draws.append(1)
        return 0.5

    rules = [
        Rule("sampled", "Key", always_match, Sample(10, ACCEPT, REJECT)),
        Rule("accept_everything", "*", always_match, ACCEPT),
    ]
    Throttler(rules, random=random).throttle({})
    assert draws == []
    Throttler(rules, random=random).throttle({"Key": "x"})
    assert draws == [1]


def test_continue_falls_through_to_the_next_rule():
    rules = [
        Rule("keep_some", "*", always_match, Sample(10, CONTINUE, REJECT)),
        Rule("then_defer", "*", always_match, DEFER),
    ]
    assert Throttler(rules, random=lambda: 0.05).throttle({}) == Decision(DEFER, "then_defer", 100)
    assert Throttler(rules, random=lambda: 0.5).throttle({}) == Decision(REJECT, "keep_some", 10)


def test_no_match():
    rules = [Rule("only_x", "X", always_match, ACCEPT)]
    assert Throttler(rules).throttle({"Y": "1"}) == Decision(REJECT, "NO_MATCH", 0) == NO_MATCH


def test_continue_past_the_last_rule_is_no_match():
    rules = [Rule("maybe", "*", always_match, Sample(50, CONTINUE, CONTINUE))]
    assert Throttler(rules, random=lambda: 0.1).throttle({}) == NO_MATCH


def test_empty_rule_set_is_no_match():
    assert Throttler([]).throttle({"ProductName": "Firefox"}) == NO_MATCH


# --- Rule and Throttler validation ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["has_comments", "Has_Comments", "rule_2", "_", "ABC"])
def test_good_rule_names(name):
    assert Rule(name, "*", always_match, ACCEPT).name == name


@pytest.mark.parametrize(
    "name", ["has-dash", "", "with space", "name\n", "dotted.name", "\u017f", None]
)
def test_bad_rule_names(name):
    with pytest.raises(ValueError, match="letters, digits and underscores"):
        Rule(name, "*", always_match, ACCEPT)


def test_rule_checks_key_condition_and_result():
    with pytest.raises(ValueError, match="key"):
        Rule("r", "", always_match, ACCEPT)
    with pytest.raises(ValueError, match="not callable"):
        Rule("r", "*", "Firefox", ACCEPT)
    with pytest.raises(ValueError, match="is not ACCEPT"):
        Rule("r", "*", always_match, CONTINUE)  # a fixed CONTINUE would do nothing
    with pytest.raises(ValueError, match="is not ACCEPT"):
        Rule("r", "*", always_match, 0)
    for percent in (-1, 101, 10.5, True):
        with pytest.raises(ValueError, match="percent"):
            Rule("r", "*", always_match, Sample(percent, ACCEPT, REJECT))
    with pytest.raises(ValueError, match="outcome"):
        Rule("r", "*", always_match, Sample(10, "accept", REJECT))


def test_throttler_refuses_duplicate_rule_names():
    rule = Rule("twice", "*", always_match, ACCEPT)
    with pytest.raises(ValueError, match="'twice' is used twice"):
        Throttler([rule, rule])


def test_throttler_refuses_a_string_as_product_list():
    with pytest.raises(ValueError, match="list of names"):
        Throttler(ACCEPT_ALL, "Firefox")
    with pytest.raises(ValueError, match="list of names"):
        Throttler(ACCEPT_ALL, (), {"Fenix": "org.mozilla.fenix"})


# --- Logging (docs/throttling.md#logging) ------------------------------------------------------


def test_log_decision_line(info):
    log_decision("de1bb258-cbbf-4589-a673-34f802160918", Decision(REJECT, "has_comments", 100))
    log_decision("de1bb258-cbbf-4589-a673-34f803160918", Decision(FAKEACCEPT, "b2g", 100))
    assert messages(info) == [
        "de1bb258-cbbf-4589-a673-34f802160918: matched by has_comments; returned REJECT",
        "de1bb258-cbbf-4589-a673-34f803160918: matched by b2g; returned FAKEACCEPT",
    ]
    assert all(r.levelno == logging.INFO for r in info.records)


def test_throttle_logs_the_decision_only_when_given_an_id(info):
    throttler = mozilla()
    throttler.throttle({"ProductName": "Firefox", "ReleaseChannel": "nightly"})
    assert messages(info) == []
    throttler.throttle({"ProductName": "Firefox", "ReleaseChannel": "nightly"}, "some-id")
    assert messages(info) == ["some-id: matched by is_nightly; returned ACCEPT"]


def test_no_match_is_logged_like_a_rule(info):
    log_decision("x", NO_MATCH)
    assert messages(info) == ["x: matched by NO_MATCH; returned REJECT"]


# --- The Mozilla rule set, one rule at a time (docs/throttling.md, "Built-in rule sets") ---------

FIREFOX_RELEASE = {"ProductName": "Firefox", "ReleaseChannel": "release"}
FIREFOX_NIGHTLY = {"ProductName": "Firefox", "ReleaseChannel": "nightly"}


def test_mozilla_rule_order():
    assert [r.name for r in MOZILLA_RULES] == [
        "has_old_buildid",
        "has_hangid_and_browser",
        "infobar_is_true",
        "b2g",
        "unsupported_product",
        "unsupported_packagename",
        "throttleable_0",
        "has_comments",
        "has_phc",
        "is_background",
        "is_shutdownkill",
        "is_firefox_esr_unsupported_windows",
        "is_alpha_beta_esr",
        "is_nightly",
        "is_firefox_desktop",
        "accept_everything",
    ]


def test_has_old_buildid():
    assert decide({**FIREFOX_NIGHTLY, "BuildID": "20100101000000"}) == Decision(
        REJECT, "has_old_buildid", 100
    )
    # Checked before anything else: even an otherwise unsupported report gets this name.
    assert rule_of({"BuildID": "20100101000000"}) == "has_old_buildid"


def test_has_old_buildid_boundary_is_730_days_before_now():
    # 2024-11-22 is 730 days before NOW; its midnight is before NOW minus 730 days (noon).
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": "20241122235959"}) == "has_old_buildid"
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": "20241123000000"}) == "is_nightly"
    midnight = datetime(2026, 11, 22, 0, 0)
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": "20241122000000"}, now=midnight) == "is_nightly"
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": "20241121000000"}, now=midnight) == (
        "has_old_buildid"
    )


def test_has_old_buildid_accepts_an_aware_clock():
    aware = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": "20241122000000"}, now=aware) == (
        "has_old_buildid"
    )


def test_has_old_buildid_uses_the_local_clock_by_default():
    throttler = Throttler(MOZILLA_RULES, MOZILLA_PRODUCTS, MOZILLA_PRODUCT_PACKAGENAMES)
    assert throttler.throttle({**FIREFOX_NIGHTLY, "BuildID": "20100101000000"}).rule == (
        "has_old_buildid"
    )
    today = datetime.now().strftime("%Y%m%d") + "000000"
    assert throttler.throttle({**FIREFOX_NIGHTLY, "BuildID": today}).rule == "is_nightly"


@pytest.mark.parametrize(
    "buildid",
    [
        "20231301000000",  # month 13
        "20230231000000",  # 31 February
        "20230000000000",  # month 0
        "2010010100000",  # 13 digits
        "201001010000000",  # 15 digits
        "19990101000000",  # not 20…
        "2010010100000a",
        "20100101",
        "",
    ],
)
def test_has_old_buildid_ignores_what_is_not_a_dated_build_id(buildid):
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": buildid}) == "is_nightly"


def test_has_old_buildid_reads_a_json_number_as_text():
    assert rule_of({**FIREFOX_NIGHTLY, "BuildID": 20100101000000}) == "has_old_buildid"


def test_has_hangid_and_browser():
    hang = {**FIREFOX_NIGHTLY, "HangID": "x"}
    assert decide(hang) == Decision(REJECT, "has_hangid_and_browser", 100)  # ProcessType missing
    assert rule_of({**hang, "ProcessType": "browser"}) == "has_hangid_and_browser"
    assert rule_of({**hang, "ProcessType": "content"}) == "is_nightly"
    assert rule_of({**hang, "ProcessType": None}) == "is_nightly"  # str(None) is not "browser"
    assert rule_of({**hang, "HangID": ""}) == "has_hangid_and_browser"  # presence is enough
    assert rule_of({**FIREFOX_NIGHTLY, "ProcessType": "browser"}) == "is_nightly"


INFOBAR = {
    "ProductName": "Firefox",
    "SubmittedFromInfobar": "true",
    "Version": "57.0.1",
    "BuildID": "20171225000000",
}
EARLY_2018 = datetime(2018, 1, 15)  # so that has_old_buildid does not get there first


def test_infobar_is_true():
    assert decide(INFOBAR, now=EARLY_2018) == Decision(REJECT, "infobar_is_true", 100)
    for version in ("52.0", "55.0b3", "59.0.2"):
        assert rule_of({**INFOBAR, "Version": version}, now=EARLY_2018) == "infobar_is_true"


@pytest.mark.parametrize(
    "change",
    [
        {"ProductName": "Thunderbird"},
        {"SubmittedFromInfobar": "True"},  # exact text
        {"SubmittedFromInfobar": True},  # a JSON true is "True"
        {"Version": "60.0"},
        {"Version": "51.0"},
        {"Version": "5.0"},
        {"BuildID": "20171226000000"},  # text comparison: longer than "20171226", so greater
        {"BuildID": "20171226"},
    ],
)
def test_infobar_is_true_needs_all_four(change):
    assert rule_of({**INFOBAR, **change}, now=EARLY_2018) != "infobar_is_true"


@pytest.mark.parametrize("missing", ["ProductName", "SubmittedFromInfobar", "Version", "BuildID"])
def test_infobar_is_true_needs_all_four_present(missing):
    annotations = {k: v for k, v in INFOBAR.items() if k != missing}
    assert rule_of(annotations, now=EARLY_2018, products=ALL_PRODUCTS) != "infobar_is_true"


def test_infobar_buildid_is_compared_as_text():
    # Numbers would order 3 before 20171226; text puts "3" after it and "1999" before it.
    assert rule_of({**INFOBAR, "BuildID": "2017122"}) == "infobar_is_true"
    assert rule_of({**INFOBAR, "BuildID": "1999"}) == "infobar_is_true"
    assert rule_of({**INFOBAR, "BuildID": "3"}) != "infobar_is_true"
    assert rule_of({**INFOBAR, "BuildID": ""}) != "infobar_is_true"


def test_b2g_is_fake_accepted(info):
    assert decide({"ProductName": "B2G"}) == Decision(FAKEACCEPT, "b2g", 100)
    assert rule_of({"ProductName": "b2g"}) == "b2g"
    assert messages(info) == ["ProductName B2G: fake accept", "ProductName B2G: fake accept"]


def test_b2g_is_fake_accepted_even_with_all_products():
    assert decide({"ProductName": "B2G"}, products=ALL_PRODUCTS).result is FAKEACCEPT


def test_b2g_is_processed_when_it_is_a_supported_product():
    assert decide({"ProductName": "B2G"}, products=["B2G"]) == Decision(
        ACCEPT, "accept_everything", 100
    )


def test_unsupported_product(info):
    assert decide({"ProductName": "Foo"}) == Decision(REJECT, "unsupported_product", 100)
    assert messages(info) == ["ProductName rejected: 'Foo'"]


def test_unsupported_product_is_case_sensitive():
    assert rule_of({"ProductName": "firefox", "ReleaseChannel": "nightly"}) == (
        "unsupported_product"
    )


def test_missing_product_name_is_unsupported(info):
    assert decide({"ReleaseChannel": "nightly"}).rule == "unsupported_product"
    assert decide({"ProductName": None}).rule == "unsupported_product"
    assert messages(info) == ["ProductName rejected: ''", "ProductName rejected: 'None'"]


def test_every_product_passes_an_empty_product_list(info):
    assert rule_of({"ProductName": "Foo"}, products=ALL_PRODUCTS) == "accept_everything"
    assert rule_of({}, products=ALL_PRODUCTS) == "accept_everything"
    assert messages(info) == []


@pytest.mark.parametrize("product", MOZILLA_PRODUCTS)
def test_supported_products_pass(product):
    annotations = {"ProductName": product, "ReleaseChannel": "beta"}
    if product in MOZILLA_PRODUCT_PACKAGENAMES:
        annotations["Android_PackageName"] = MOZILLA_PRODUCT_PACKAGENAMES[product][0]
    assert rule_of(annotations) == "is_alpha_beta_esr"


def test_unsupported_packagename_when_missing(info):
    assert decide({"ProductName": "Fenix"}) == Decision(REJECT, "unsupported_packagename", 100)
    assert decide({"ProductName": "Fenix", "Android_PackageName": None}).result is REJECT
    assert messages(info) == [
        "Android_PackageName rejected: Fenix no Android_PackageName",
        "Android_PackageName rejected: Fenix no Android_PackageName",
    ]


def test_unsupported_packagename_when_unknown(info):
    fenix = {"ProductName": "Fenix", "Android_PackageName": "org.mozilla.fenix.nightly"}
    assert decide(fenix).rule == "unsupported_packagename"
    assert messages(info) == ["Android_PackageName rejected: Fenix 'org.mozilla.fenix.nightly'"]


@pytest.mark.parametrize(
    ("product", "package"),
    [(p, name) for p, names in MOZILLA_PRODUCT_PACKAGENAMES.items() for name in names],
)
def test_supported_packagenames_pass(product, package):
    annotations = {
        "ProductName": product,
        "Android_PackageName": package,
        "ReleaseChannel": "release",
    }
    assert rule_of(annotations) == "accept_everything"


def test_products_without_a_package_list_are_not_checked():
    assert rule_of({**FIREFOX_NIGHTLY, "Android_PackageName": "anything"}) == "is_nightly"


def test_an_empty_package_map_turns_the_check_off():
    assert rule_of({"ProductName": "Fenix"}, packagenames=ALL_PRODUCT_PACKAGENAMES) == (
        "accept_everything"
    )


@pytest.mark.parametrize("value", ["0", 0])
def test_throttleable_0(value):
    assert decide({**FIREFOX_RELEASE, "Throttleable": value}) == Decision(
        ACCEPT, "throttleable_0", 100
    )


@pytest.mark.parametrize("value", ["1", 1, False, "", "00"])
def test_throttleable_other_values_are_sampled(value):
    assert rule_of({**FIREFOX_RELEASE, "Throttleable": value}) == "is_firefox_desktop"


@pytest.mark.parametrize("value", ["", "it crashed", None])
def test_has_comments_accepts_any_value(value):
    assert decide({**FIREFOX_RELEASE, "Comments": value}) == Decision(ACCEPT, "has_comments", 100)


def test_has_phc():
    assert decide({**FIREFOX_RELEASE, "PHCKind": "FreedPage"}) == Decision(ACCEPT, "has_phc", 100)


@pytest.mark.parametrize("process", ["gpu", "plugin", "rdd", "socket", "utility"])
def test_is_background(process):
    assert decide({**FIREFOX_RELEASE, "ProcessType": process}) == Decision(
        ACCEPT, "is_background", 100
    )


@pytest.mark.parametrize("process", ["content", "GPU", "tab", "browser"])
def test_other_process_types_are_not_background(process):
    assert rule_of({**FIREFOX_RELEASE, "ProcessType": process}) == "is_firefox_desktop"


SHUTDOWNKILL = {**FIREFOX_NIGHTLY, "ipc_channel_error": "ShutDownKill"}


def test_is_shutdownkill_rejects_90_percent():
    assert decide(SHUTDOWNKILL, random=0.9) == Decision(REJECT, "is_shutdownkill", 10)
    assert decide(SHUTDOWNKILL, random=0.1000001) == Decision(REJECT, "is_shutdownkill", 10)


def test_is_shutdownkill_lets_10_percent_go_on():
    assert decide(SHUTDOWNKILL, random=0.1) == Decision(ACCEPT, "is_nightly", 100)
    # The sample that went on is sampled again by is_firefox_desktop.
    release = {**FIREFOX_RELEASE, "ipc_channel_error": "ShutDownKill"}
    assert decide(release, random=0.05) == Decision(ACCEPT, "is_firefox_desktop", 10)


def test_other_ipc_errors_are_not_shutdownkill():
    assert rule_of({**FIREFOX_NIGHTLY, "ipc_channel_error": "shutdownkill"}, random=0.9) == (
        "is_nightly"
    )


def telemetry(build=9600, name="Windows_NT"):
    return json.dumps({"system": {"os": {"name": name, "windowsBuildNumber": build}}})


ESR_WIN81 = {"ProductName": "Firefox", "ReleaseChannel": "esr", "TelemetryEnvironment": telemetry()}


def test_is_firefox_esr_unsupported_windows_rejects_75_percent():
    assert decide(ESR_WIN81, random=0.26) == Decision(
        REJECT, "is_firefox_esr_unsupported_windows", 25
    )


def test_is_firefox_esr_unsupported_windows_lets_25_percent_go_on():
    assert decide(ESR_WIN81, random=0.25) == Decision(ACCEPT, "is_alpha_beta_esr", 100)


@pytest.mark.parametrize(
    "environment",
    [
        telemetry(9601),  # Windows 10
        telemetry(0),
        telemetry("9600"),  # not an integer
        telemetry(None),
        telemetry(9600, name="Darwin"),
        json.dumps({"system": {"os": "Windows_NT"}}),
        json.dumps({"system": []}),
        json.dumps([1, 2]),  # not an object: the reference would fail here
        "1",
        "null",
        "{not json",
        "",
    ],
)
def test_is_firefox_esr_unsupported_windows_needs_an_old_windows(environment):
    annotations = {**ESR_WIN81, "TelemetryEnvironment": environment}
    assert decide(annotations, random=0.99) == Decision(ACCEPT, "is_alpha_beta_esr", 100)


def test_is_firefox_esr_unsupported_windows_needs_firefox_esr():
    assert rule_of({**ESR_WIN81, "ReleaseChannel": "beta"}, random=0.99) == "is_alpha_beta_esr"
    thunderbird = {**ESR_WIN81, "ProductName": "Thunderbird"}
    assert rule_of(thunderbird, random=0.99) == "is_alpha_beta_esr"


def test_telemetry_environment_as_a_json_object_is_read_through_str():
    # str() of a dict is not JSON, so the reference never matches it; neither do we.
    annotations = {**ESR_WIN81, "TelemetryEnvironment": json.loads(telemetry())}
    assert rule_of(annotations, random=0.99) == "is_alpha_beta_esr"


@pytest.mark.parametrize("channel", ["aurora", "beta", "esr"])
def test_is_alpha_beta_esr(channel):
    assert decide({"ProductName": "Firefox", "ReleaseChannel": channel}) == Decision(
        ACCEPT, "is_alpha_beta_esr", 100
    )


@pytest.mark.parametrize("channel", ["nightly", "nightly-cck-test"])
def test_is_nightly(channel):
    assert decide({"ProductName": "Firefox", "ReleaseChannel": channel}) == Decision(
        ACCEPT, "is_nightly", 100
    )


@pytest.mark.parametrize("channel", ["Nightly", "beta2", "release", "default"])
def test_other_channels(channel):
    assert rule_of({"ProductName": "Thunderbird", "ReleaseChannel": channel}) == (
        "accept_everything"
    )


def test_is_firefox_desktop_samples_10_percent():
    assert decide(FIREFOX_RELEASE, random=0.1) == Decision(ACCEPT, "is_firefox_desktop", 10)
    assert decide(FIREFOX_RELEASE, random=0.1000001) == Decision(REJECT, "is_firefox_desktop", 10)
    assert decide(FIREFOX_RELEASE, random=0.0) == Decision(ACCEPT, "is_firefox_desktop", 10)


def test_accept_everything():
    assert decide({"ProductName": "Thunderbird", "ReleaseChannel": "release"}) == Decision(
        ACCEPT, "accept_everything", 100
    )
    assert rule_of({"ProductName": "Firefox"}) == "accept_everything"  # no channel at all


def test_accept_all_preset():
    throttler = Throttler(ACCEPT_ALL)
    assert throttler.throttle({}) == Decision(ACCEPT, "accept_everything", 100)
    assert throttler.throttle({"BuildID": "20100101000000", "HangID": "x"}).result is ACCEPT


# --- Worked outcomes of the mozilla rules (docs/throttling.md, "Built-in rule sets") -----------


def test_worked_outcomes():
    throttler = load_throttler("mozilla", "mozilla", "mozilla")
    throttler.random = lambda: 0.05
    assert throttler.throttle(FIREFOX_RELEASE) == Decision(ACCEPT, "is_firefox_desktop", 10)
    throttler.random = lambda: 0.5
    assert throttler.throttle(FIREFOX_RELEASE) == Decision(REJECT, "is_firefox_desktop", 10)
    assert throttler.throttle(FIREFOX_NIGHTLY) == Decision(ACCEPT, "is_nightly", 100)
    assert throttler.throttle({"ProductName": "Foo"}).rule == "unsupported_product"
    assert throttler.throttle({}).rule == "unsupported_product"
    assert throttler.throttle({"ProductName": "Fenix"}).rule == "unsupported_packagename"
    assert throttler.throttle({"BuildID": "20100101000000"}).rule == "has_old_buildid"
    assert throttler.throttle({"HangID": "x"}).rule == "has_hangid_and_browser"


def test_b2g_gets_a_crash_id_with_digit_3():
    decision = decide({"ProductName": "B2G"})
    crash_id = create_crash_id(datetime.now(UTC), decision.result)
    assert throttle_digit(crash_id) == 3


def test_10_percent_of_firefox_release_over_many_draws():
    import random

    generator = random.Random(1)
    throttler = Throttler(MOZILLA_RULES, MOZILLA_PRODUCTS, random=generator.random)
    kept = sum(throttler.throttle(FIREFOX_RELEASE).result is ACCEPT for _ in range(10_000))
    assert 850 < kept < 1150


# --- Rules files ------------------------------------------------------------------------------

GOOD_FILE = """
# Drop crashes of a retired product, keep everything with a comment, sample the rest.
[[rule]]
name = "retired_product"
key = "ProductName"
in = ["OldApp", "OlderApp"]
result = "reject"

[[rule]]
name = "has_comments"
key = "Comments"
exists = true
result = "accept"

[[rule]]
name = "nightly_builds"
key = "ReleaseChannel"
startswith = ["nightly", "aurora"]
result = "ACCEPT"

[[rule]]
name = "wrong_package"
key = "*"
all = [
  { field = "ProductName", equals = "MyApp" },
  { field = "Android_PackageName", default = "None", not_in = ["com.example.myapp"] },
]
result = "reject"

[[rule]]
name = "debug_builds"
key = "BuildType"
regex = "^(debug|asan)"
result = "defer"

[[rule]]
name = "spammy"
key = "*"
any = [
  { field = "Version", less_than = "2." },
  { field = "Version", greater_than = "9" },
  { all = [{ field = "Bot", exists = true }, { field = "Bot", not_equals = "0" }] },
]
result = "fakeaccept"

[[rule]]
name = "shutdown_noise"
key = "ipc_channel_error"
equals = "ShutDownKill"
result = { percent = 10, hit = "continue", miss = "reject" }

[[rule]]
name = "release"
key = "*"
always = true
result = { percent = 25, hit = "accept", miss = "reject" }
"""


@pytest.fixture
def rules_file(tmp_path):
    def write(text, name="rules.toml"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_good_rules_file(rules_file):
    rules = load_rules_file(rules_file(GOOD_FILE))
    assert [r.name for r in rules] == [
        "retired_product",
        "has_comments",
        "nightly_builds",
        "wrong_package",
        "debug_builds",
        "spammy",
        "shutdown_noise",
        "release",
    ]
    t = Throttler(rules, random=lambda: 0.5)
    hit = Throttler(rules, random=lambda: 0.05)
    assert t.throttle({"ProductName": "OldApp"}) == Decision(REJECT, "retired_product", 100)
    assert t.throttle({"ProductName": "OldApp2", "Comments": ""}).rule == "has_comments"
    assert t.throttle({"ReleaseChannel": "aurora5"}) == Decision(ACCEPT, "nightly_builds", 100)
    assert t.throttle({"ProductName": "MyApp"}).rule == "wrong_package"  # missing → "None"
    assert t.throttle({"ProductName": "MyApp", "Android_PackageName": None}).rule == "wrong_package"
    assert t.throttle({"ProductName": "MyApp", "Android_PackageName": "com.example.myapp"}) == (
        Decision(REJECT, "release", 25)
    )
    assert t.throttle({"BuildType": "asan-opt"}) == Decision(DEFER, "debug_builds", 100)
    assert t.throttle({"BuildType": "opt-asan"}).rule == "release"  # anchored by the pattern
    assert t.throttle({"Version": "1.9"}) == Decision(FAKEACCEPT, "spammy", 100)
    assert t.throttle({"Version": "3.0"}).rule == "release"
    assert t.throttle({"Version": "10.0"}).rule == "spammy"  # compared as text: "10.0" < "2."
    assert t.throttle({"Version": "91.0"}).rule == "spammy"
    assert t.throttle({"Bot": 1}).rule == "spammy"
    assert t.throttle({"Bot": 0}).rule == "release"
    assert t.throttle({"ipc_channel_error": "ShutDownKill"}) == Decision(
        REJECT, "shutdown_noise", 10
    )
    assert hit.throttle({"ipc_channel_error": "ShutDownKill"}) == Decision(ACCEPT, "release", 25)


def test_missing_field_without_default_makes_a_test_false():
    rules = rules_from_data(
        {
            "rule": [
                {
                    "name": "not_firefox",
                    "key": "*",
                    "all": [{"field": "ProductName", "not_equals": "Firefox"}],
                    "result": "reject",
                },
                {"name": "rest", "key": "*", "always": True, "result": "accept"},
            ]
        }
    )
    t = Throttler(rules)
    assert t.throttle({"ProductName": "Other"}).rule == "not_firefox"
    assert t.throttle({}).rule == "rest"


def test_a_field_test_can_ask_for_a_missing_annotation():
    rules = rules_from_data(
        {
            "rule": [
                {
                    "name": "no_product",
                    "key": "*",
                    "all": [{"field": "ProductName", "exists": False}],
                    "result": "reject",
                }
            ]
        }
    )
    t = Throttler(rules)
    assert t.throttle({}).rule == "no_product"
    assert t.throttle({"ProductName": ""}) == NO_MATCH


def test_keyed_file_rules_see_str_of_json_values():
    rules = rules_from_data(
        {"rule": [{"name": "t0", "key": "Throttleable", "equals": "0", "result": "accept"}]}
    )
    assert Throttler(rules).throttle({"Throttleable": 0}).rule == "t0"


def test_infobar_rule_can_be_written_as_data():
    text = """
[[rule]]
name = "infobar_is_true"
key = "*"
all = [
  { field = "ProductName", equals = "Firefox" },
  { field = "SubmittedFromInfobar", equals = "true" },
  { field = "Version", startswith = ["52.", "53.", "54.", "55.", "56.", "57.", "58.", "59."] },
  { field = "BuildID", not_equals = "" },
  { field = "BuildID", less_than = "20171226" },
]
result = "reject"
"""
    import tomllib

    data_rule = Throttler(rules_from_data(tomllib.loads(text)))
    code_rule = Throttler([r for r in MOZILLA_RULES if r.name == "infobar_is_true"])
    cases = [INFOBAR, {**INFOBAR, "BuildID": ""}, {**INFOBAR, "Version": "60.0"}, {}]
    cases += [{**INFOBAR, "BuildID": "20171226000000"}, {**INFOBAR, "SubmittedFromInfobar": True}]
    for case in cases:
        assert data_rule.throttle(case) == code_rule.throttle(case)


def test_the_example_in_the_docs_loads_and_works(rules_file):
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/throttling.md has a complete TOML example"
    rules = load_rules_file(rules_file(blocks[0]))
    throttler = Throttler(rules, random=lambda: 0.5)
    assert throttler.throttle({"ProductName": "MyApp", "ReleaseChannel": "beta"}).result is ACCEPT


def error_of(rules_file, text):
    path = rules_file(text)
    with pytest.raises(ValueError) as info:
        load_rules_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


RULE = '[[rule]]\nname = "{name}"\nkey = "{key}"\n{condition}\nresult = {result}\n'


def one_rule(name="r", key="ProductName", condition='equals = "A"', result='"accept"'):
    return RULE.format(name=name, key=key, condition=condition, result=result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # names
        (
            one_rule(name="bad-name"),
            "rule 1 ('bad-name'): name 'bad-name' may only contain letters",
        ),
        (
            one_rule(name=""),
            "rule 1 (''): name '' may only contain letters, digits and underscores",
        ),
        (
            '[[rule]]\nname = 3\nkey = "*"\nalways = true\nresult = "accept"',
            "rule 1: name 3 may only",
        ),
        # missing fields
        ('[[rule]]\nkey = "*"\nalways = true\nresult = "accept"', "rule 1: missing 'name'"),
        ('[[rule]]\nname = "r"\nalways = true\nresult = "accept"', "rule 1 ('r'): missing 'key'"),
        ('[[rule]]\nname = "r"\nkey = "*"\nalways = true', "rule 1 ('r'): missing 'result'"),
        # operators
        (one_rule(condition='eq = "A"'), "rule 1 ('r'): unknown condition 'eq'; use one of equals"),
        (one_rule(condition=""), "rule 1 ('r'): no condition; add one of equals"),
        (
            one_rule(condition='equals = "A"\nstartswith = "B"'),
            "more than one condition (equals, startswith); combine several tests",
        ),
        (
            one_rule(key="*"),
            "'equals' needs a key naming an annotation; with key = \"*\" use always",
        ),
        (one_rule(condition='all = [{ field = "A", equals = "1" }]'), "'all' needs key = \"*\""),
        (
            one_rule(condition="equals = 0"),
            'equals must be a string: annotation values are compared as text, so write equals = "0"',
        ),
        (one_rule(condition="equals = true"), 'so write equals = "True"'),
        (one_rule(condition="in = []"), "in must be a non-empty array of strings"),
        (one_rule(condition='in = "A"'), "in must be a non-empty array of strings"),
        (
            one_rule(condition="not_in = [1]"),
            'items of not_in must be strings (annotation values are compared as text), so write "1", not 1',
        ),
        (
            one_rule(condition="startswith = 5"),
            "startswith must be a string or an array of strings, not 5",
        ),
        (
            one_rule(condition='regex = "("'),
            "regex '(' does not compile: missing ), unterminated subpattern",
        ),
        (one_rule(condition="always = false"), "always must be true"),
        (
            one_rule(condition="exists = false"),
            "exists must be true; to match a missing annotation",
        ),
        (one_rule(key="*", condition="all = []"), "all must be a non-empty array of tests"),
        (one_rule(key="*", condition='any = [{ equals = "A" }]'), "any, test 1: missing 'field'"),
        (
            one_rule(
                key="*",
                condition='all = [{ field = "A", equals = "1" }, { field = "B", eq = "2" }]',
            ),
            "rule 1 ('r'): all, test 2: unknown operator 'eq'",
        ),
        (
            one_rule(key="*", condition='all = [{ any = [{ field = "A", like = "1" }] }]'),
            "all, test 1: any, test 1: unknown operator 'like'",
        ),
        (
            one_rule(key="*", condition='all = [{ field = "A" }]'),
            "needs exactly one operator besides field and default (found none)",
        ),
        (
            one_rule(key="*", condition='all = [{ field = "A", default = "x", exists = true }]'),
            "exists and default cannot be combined",
        ),
        (
            one_rule(key="*", condition='all = [{ field = "A", default = 0, equals = "0" }]'),
            "default 0 must be a string",
        ),
        (one_rule(key="*", condition='all = ["ProductName"]'), "all, test 1: must be a table"),
        # results
        (
            one_rule(result='"keep"'),
            "rule 1 ('r'): result 'keep' is not one of 'accept', 'defer', 'reject', 'fakeaccept'",
        ),
        (
            one_rule(result='"continue"'),
            '"continue" is only allowed as hit or miss of a sampling result',
        ),
        (one_rule(result="0"), "result 0 is not one of"),
        (one_rule(result='{ percent = 10, hit = "accept" }'), "sampling result needs 'miss'"),
        (
            one_rule(result='{ percent = 10, hit = "accept", miss = "drop" }'),
            "miss 'drop' is not one of 'accept', 'defer', 'reject', 'fakeaccept', 'continue'",
        ),
        (
            one_rule(result='{ percent = 10, hit = "accept", miss = "reject", seed = 1 }'),
            "unknown field 'seed'",
        ),
        # percentages
        (
            one_rule(result='{ percent = 101, hit = "accept", miss = "reject" }'),
            "rule 1 ('r'): percent must be a whole number from 0 to 100, not 101",
        ),
        (one_rule(result='{ percent = -1, hit = "accept", miss = "reject" }'), "not -1"),
        (one_rule(result='{ percent = 12.5, hit = "accept", miss = "reject" }'), "not 12.5"),
        (one_rule(result='{ percent = "10", hit = "accept", miss = "reject" }'), "not '10'"),
        # keys
        (
            one_rule(key=""),
            "rule 1 ('r'): key '' must be an annotation name, or \"*\" for the whole report",
        ),
        # file structure
        ("", "no rules; add at least one [[rule]] table"),
        (
            '[[rules]]\nname = "r"',
            "unknown top-level key 'rules'; write each rule as a [[rule]] table",
        ),
        ('[rule]\nname = "r"', "'rule' must be an array of tables: write [[rule]], not [rule]"),
        (
            one_rule(name="a") + one_rule(name="b") + one_rule(name="a"),
            "rule 3 ('a'): name already used by rule 1",
        ),
        (
            one_rule(name="a") + one_rule(name="b", condition="equals = 1"),
            "rule 2 ('b'): equals must be a string",
        ),
    ],
)
def test_invalid_rules_files(rules_file, text, expected):
    assert expected in error_of(rules_file, text)


def test_toml_syntax_error(rules_file):
    message = error_of(rules_file, '[[rule]]\nname = "unterminated\n')
    assert message.startswith("not valid TOML: ")
    assert "line 2" in message


def test_unreadable_rules_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read the rules file"):
        load_rules_file(tmp_path / "missing.toml")


def test_rules_file_that_is_not_utf8(rules_file, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"'.encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_rules_file(path)


# --- Settings -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["accept_all", "antenna.throttler.ACCEPT_ALL"])
def test_load_accept_all(name):
    assert load_throttler(name, "all", "all").rules == ACCEPT_ALL


@pytest.mark.parametrize("name", ["mozilla", "antenna.throttler.MOZILLA_RULES", " mozilla "])
def test_load_mozilla_rules(name):
    assert load_throttler(name, "all", "all").rules == MOZILLA_RULES


@pytest.mark.parametrize(
    ("value", "products"),
    [
        ("mozilla", MOZILLA_PRODUCTS),
        ("antenna.throttler.MOZILLA_PRODUCTS", MOZILLA_PRODUCTS),
        ("all", ()),
        ("antenna.throttler.ALL_PRODUCTS", ()),
        ("MyApp", ("MyApp",)),
        (" MyApp , Other App,,MyApp, ", ("MyApp", "Other App")),
    ],
)
def test_load_products(value, products):
    assert load_throttler("accept_all", value, "all").products == products


@pytest.mark.parametrize(
    ("value", "packagenames"),
    [
        ("mozilla", dict(MOZILLA_PRODUCT_PACKAGENAMES)),
        ("antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES", dict(MOZILLA_PRODUCT_PACKAGENAMES)),
        ("all", {}),
        ("antenna.throttler.ALL_PRODUCT_PACKAGENAMES", {}),
    ],
)
def test_load_packagenames(value, packagenames):
    assert load_throttler("accept_all", "all", value).packagenames == packagenames


def test_project_defaults_accept_every_product():
    throttler = load_throttler("accept_all", "all", "all")
    assert throttler.throttle({"ProductName": "AnyVendorApp"}) == Decision(
        ACCEPT, "accept_everything", 100
    )


def test_mozilla_rules_with_all_products_accept_other_vendors():
    throttler = load_throttler("mozilla", "all", "all")
    assert throttler.throttle({"ProductName": "Foo"}).rule == "accept_everything"


def test_load_rules_from_a_file(rules_file):
    path = rules_file(GOOD_FILE)
    throttler = load_throttler(str(path), "MyApp", "all")
    assert throttler.rules[0].name == "retired_product"
    assert throttler.products == ("MyApp",)


def test_load_throttler_names_the_bad_rules_file(rules_file):
    path = rules_file(one_rule(name="bad-name"))
    with pytest.raises(ValueError) as info:
        load_throttler(str(path), "all", "all")
    assert str(info.value).startswith(f"BREAKPAD_THROTTLER_RULES: {path}: rule 1 ('bad-name'): ")


@pytest.mark.parametrize(
    "value",
    ["", "accept-all", "ACCEPT_ALL", "antenna.throttler.MOZILA_RULES", "/no/such/rules.toml"],
)
def test_unknown_rules_value(value):
    with pytest.raises(ValueError) as info:
        load_throttler(value, "all", "all")
    message = str(info.value)
    assert message.startswith("BREAKPAD_THROTTLER_RULES: ")
    assert (
        "accept_all, antenna.throttler.ACCEPT_ALL, mozilla, antenna.throttler.MOZILLA_RULES"
        in message
    )


def test_a_python_dotted_path_gets_a_hint():
    with pytest.raises(ValueError, match="Python rule modules cannot be loaded"):
        load_throttler("myrules.RULES", "all", "all")


def test_a_directory_is_not_a_rules_file(tmp_path):
    with pytest.raises(ValueError, match="nor the path of an existing rules file"):
        load_throttler(str(tmp_path), "all", "all")


@pytest.mark.parametrize("value", ["", " , ,", "antenna.throttler.MOZILLA_PRODUCT"])
def test_bad_products_value(value):
    with pytest.raises(ValueError) as info:
        load_throttler("accept_all", value, "all")
    message = str(info.value)
    assert message.startswith("BREAKPAD_THROTTLER_PRODUCTS: ")
    assert (
        "all, antenna.throttler.ALL_PRODUCTS, mozilla, antenna.throttler.MOZILLA_PRODUCTS"
        in message
    )


@pytest.mark.parametrize("value", ["", "none", "Fenix=org.example", "antenna.throttler.FOO"])
def test_bad_packagenames_value(value):
    with pytest.raises(ValueError) as info:
        load_throttler("accept_all", "all", value)
    message = str(info.value)
    assert message.startswith("BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES: ")
    assert "all, antenna.throttler.ALL_PRODUCT_PACKAGENAMES, mozilla," in message
