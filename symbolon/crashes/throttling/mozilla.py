"""The ``mozilla`` rule set: the rules of Mozilla's collector, with its product lists.

Some of these conditions need the clock or parse JSON inside an annotation, which a rules file
cannot express; the table in docs/throttling.md says what each rule matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from symbolon.crashes.throttling.engine import Result, Rule, Sample, Throttler, always_match, logger


def _text(data: Mapping[str, Any], key: str, default: Any = "") -> str:
    # Conditions compare text: str() turns a JSON 0 into "0" and null into "None".
    return str(data.get(key, default))


BUILDID_RE = re.compile(r"^20\d{12}$")
OLD_BUILDID_DAYS = 730


def match_old_buildid(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """``BuildID`` is a ``20YYMMDDhhmmss`` build more than 730 days old."""
    buildid = _text(data, "BuildID")
    if BUILDID_RE.match(buildid) is None:
        return False
    try:
        built = datetime(int(buildid[:4]), int(buildid[4:6]), int(buildid[6:8]))
    except ValueError:
        return False  # not a real date: not a build id this rule knows how to judge
    now = throttler.now()
    # The reference compares naive local times; an injected aware clock uses its own wall time.
    now = now.replace(tzinfo=None)
    return built < now - timedelta(days=OLD_BUILDID_DAYS)


def match_hangid_and_browser(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """The browser side of a hang report (the child side is the useful one)."""
    return "HangID" in data and _text(data, "ProcessType", "browser") == "browser"


INFOBAR_VERSIONS = ("52.", "53.", "54.", "55.", "56.", "57.", "58.", "59.")


def match_infobar_true(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """Firefox 52-59 reports sent from the infobar by builds before 2017-12-26 (bug 1426949)."""
    product = _text(data, "ProductName")
    infobar = _text(data, "SubmittedFromInfobar")
    version = _text(data, "Version")
    buildid = _text(data, "BuildID")
    if not (product and infobar and version and buildid):
        return False
    return (
        product == "Firefox"
        and infobar == "true"
        and version.startswith(INFOBAR_VERSIONS)
        and buildid < "20171226"  # text comparison, as in the reference
    )


def match_b2g(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """B2G reports, unless B2G is a supported product: B2G retries rejected reports forever."""
    if "B2G" not in throttler.products and _text(data, "ProductName").lower() == "b2g":
        logger.info("ProductName B2G: fake accept")
        return True
    return False


def match_unsupported_product(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """``ProductName`` (missing: ``""``) is not in a non-empty supported-product list."""
    product = _text(data, "ProductName")
    if throttler.products and product not in throttler.products:
        logger.info("ProductName rejected: %r", product)
        return True
    return False


def match_unsupported_packagename(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """The product has a package-name list and ``Android_PackageName`` is not in it."""
    product = _text(data, "ProductName")
    packagenames = throttler.packagenames.get(product, ())
    packagename = _text(data, "Android_PackageName", None)  # missing: "None"
    if packagenames and packagename not in packagenames:
        if packagename == "None":
            logger.info("Android_PackageName rejected: %s no Android_PackageName", product)
        else:
            logger.info("Android_PackageName rejected: %s %r", product, packagename)
        return True
    return False


WINDOWS_8_1_BUILD_NUMBER = 9600


def match_unsupported_windows(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """``TelemetryEnvironment`` says Windows 8.1 or older (build number <= 9600)."""
    environment = _text(data, "TelemetryEnvironment")
    if not environment:
        return False
    try:
        parsed = json.loads(environment)
    except (ValueError, RecursionError):
        return False
    # The reference assumes an object at each level and fails on anything else; we just miss.
    system = parsed.get("system") if isinstance(parsed, dict) else None
    os_data = system.get("os") if isinstance(system, dict) else None
    if not isinstance(os_data, dict) or os_data.get("name") != "Windows_NT":
        return False
    build = os_data.get("windowsBuildNumber")
    if not build or not isinstance(build, int):
        return False
    return build <= WINDOWS_8_1_BUILD_NUMBER


def match_firefox_esr_unsupported_windows(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """Firefox ESR on Windows 8.1 or older."""
    return (
        _text(data, "ProductName") == "Firefox"
        and _text(data, "ReleaseChannel") == "esr"
        and match_unsupported_windows(throttler, data)
    )


def match_firefox_desktop(throttler: Throttler, data: Mapping[str, Any]) -> bool:
    """Firefox on the release channel."""
    return _text(data, "ProductName") == "Firefox" and _text(data, "ReleaseChannel") == "release"


MOZILLA_PRODUCTS: tuple[str, ...] = (
    "Fenix",
    "Firefox",
    "Firefox Enterprise",
    "Focus",
    "MozillaVPN",
    "ReferenceBrowser",
    "Thunderbird",
)

MOZILLA_PRODUCT_PACKAGENAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Fenix": ("org.mozilla.firefox", "org.mozilla.firefox_beta", "org.mozilla.fenix"),
        "Focus": (
            "org.mozilla.focus",
            "org.mozilla.focus.beta",
            "org.mozilla.focus.nightly",
            "org.mozilla.klar",
        ),
        "ReferenceBrowser": ("org.mozilla.reference.browser",),
    }
)

MOZILLA_RULES: tuple[Rule, ...] = (
    Rule("has_old_buildid", "*", match_old_buildid, Result.REJECT),
    Rule("has_hangid_and_browser", "*", match_hangid_and_browser, Result.REJECT),
    Rule("infobar_is_true", "*", match_infobar_true, Result.REJECT),
    Rule("b2g", "*", match_b2g, Result.FAKEACCEPT),
    Rule("unsupported_product", "*", match_unsupported_product, Result.REJECT),
    Rule("unsupported_packagename", "*", match_unsupported_packagename, Result.REJECT),
    # Submitted by hand from about:crashes.
    Rule("throttleable_0", "Throttleable", lambda t, value: value == "0", Result.ACCEPT),
    Rule("has_comments", "Comments", always_match, Result.ACCEPT),
    Rule("has_phc", "PHCKind", always_match, Result.ACCEPT),
    # Few enough that sampling would leave too little to work with.
    Rule(
        "is_background",
        "ProcessType",
        lambda t, value: value in {"gpu", "plugin", "rdd", "socket", "utility"},
        Result.ACCEPT,
    ),
    # Not really crashes, and very many of them: 10% go on to the other rules.
    Rule(
        "is_shutdownkill",
        "ipc_channel_error",
        lambda t, value: value == "ShutDownKill",
        Sample(10, Result.CONTINUE, Result.REJECT),
    ),
    Rule(
        "is_firefox_esr_unsupported_windows",
        "*",
        match_firefox_esr_unsupported_windows,
        Sample(25, Result.CONTINUE, Result.REJECT),
    ),
    Rule(
        "is_alpha_beta_esr",
        "ReleaseChannel",
        lambda t, value: value in ("aurora", "beta", "esr"),
        Result.ACCEPT,
    ),
    Rule(
        "is_nightly", "ReleaseChannel", lambda t, value: value.startswith("nightly"), Result.ACCEPT
    ),
    Rule(
        "is_firefox_desktop", "*", match_firefox_desktop, Sample(10, Result.ACCEPT, Result.REJECT)
    ),
    Rule("accept_everything", "*", always_match, Result.ACCEPT),
)
