"""The throttler: which crash reports are kept, sampled or thrown away (spec/crashes.md §5).

A rule set is an ordered list of :class:`Rule`. The first rule that matches a report and yields a
final result decides; a sampling rule may instead let the report go on to the next rule. Rule sets
come from built-in presets (``accept_all``, ``mozilla``) or from a TOML file that describes the
conditions as data, so operators can write their own without shipping Python code.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from random import random as _uniform
from types import MappingProxyType
from typing import Any

logger = logging.getLogger(__name__)


class Result(enum.IntEnum):
    """What happens to a report; the value is the throttle digit of its crash id."""

    ACCEPT = 0  # save and process
    DEFER = 1  # save; whether to process is decided downstream from the digit
    REJECT = 2  # throw away; the client gets "Discarded=rule_<name>"
    FAKEACCEPT = 3  # answer with a crash id but throw away: for clients that retry forever
    CONTINUE = 4  # only as a sampling outcome: go on with the next rule


FINAL_RESULTS = frozenset({Result.ACCEPT, Result.DEFER, Result.REJECT, Result.FAKEACCEPT})
# ASCII: with IGNORECASE alone, U+017F and the Kelvin sign would pass as "s" and "k".
RULE_NAME_RE = re.compile(r"[a-z0-9_]+", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class Sample:
    """A sampling result: ``hit`` when ``random() * 100 <= percent``, else ``miss``."""

    percent: int
    hit: Result
    miss: Result


@dataclass(frozen=True)
class Decision:
    """The throttler's verdict: the result, the deciding rule and its percentage."""

    result: Result
    rule: str
    percent: int


NO_MATCH = Decision(Result.REJECT, "NO_MATCH", 0)

# A condition gets the throttler (for the product lists and the clock) and either the whole
# annotation map (key "*") or str() of the value under the rule's key.
Condition = Callable[["Throttler", Any], bool]


@dataclass(frozen=True)
class Rule:
    """One throttle rule; every rule set, built-in or loaded from a file, is made of these."""

    name: str
    key: str
    condition: Condition
    result: Result | Sample

    def __post_init__(self) -> None:
        # fullmatch: the name ends up in a response body, so "name\n" must not pass.
        if not isinstance(self.name, str) or RULE_NAME_RE.fullmatch(self.name) is None:
            raise ValueError(
                f"rule name {self.name!r} may only contain letters, digits and underscores"
            )
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"rule {self.name}: key must be an annotation name or '*'")
        if not callable(self.condition):
            raise ValueError(f"rule {self.name}: condition {self.condition!r} is not callable")
        _check_result(self.result, self.name)

    def matches(self, throttler: Throttler, annotations: Mapping[str, Any]) -> bool:
        """Whether this rule applies to the report (§5.2)."""
        if self.key == "*":
            return bool(self.condition(throttler, annotations))
        if self.key in annotations:
            # JSON annotations may hold numbers, booleans or null: conditions always see text.
            return bool(self.condition(throttler, str(annotations[self.key])))
        return False


def _check_result(result: Any, name: str) -> None:
    if isinstance(result, Sample):
        percent = result.percent
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"rule {name}: percent {percent!r} is not a whole number 0-100")
        for outcome in (result.hit, result.miss):
            if not isinstance(outcome, Result):
                raise ValueError(f"rule {name}: sampling outcome {outcome!r} is not a Result")
    elif not isinstance(result, Result) or result not in FINAL_RESULTS:
        # A fixed CONTINUE would make the rule do nothing at all.
        raise ValueError(
            f"rule {name}: result {result!r} is not ACCEPT, DEFER, REJECT or FAKEACCEPT"
        )


class Throttler:
    """Evaluates a rule set against a report's annotations.

    ``products`` is the supported-product list (empty: no product check) and ``packagenames``
    maps a product to its accepted ``Android_PackageName`` values (empty: no check); the
    ``mozilla`` rules read both. ``random`` and ``now`` are injectable for tests; ``now`` is
    the local clock by default, as in the reference.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        products: Iterable[str] = (),
        packagenames: Mapping[str, Iterable[str]] | None = None,
        *,
        random: Callable[[], float] = _uniform,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.rules = tuple(rules)
        seen: set[str] = set()
        for rule in self.rules:
            if not isinstance(rule, Rule):
                raise ValueError(f"{rule!r} is not a Rule")
            if rule.name in seen:
                # The name is what the client and the logs see; two rules must not share it.
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        self.products = _names(products, "products")
        self.packagenames = {
            str(product): _names(names, f"package names of {product!r}")
            for product, names in (packagenames or {}).items()
        }
        self.random = random
        self.now = now

    def throttle(
        self, annotations: Mapping[str, Any], crash_id_for_log: str | None = None
    ) -> Decision:
        """Run the rules in order and return the first decision (§5.2).

        The crash id usually depends on the decision (its throttle digit), so the caller logs
        the decision with :func:`log_decision` once the id exists. A caller that already has
        the id may pass it as ``crash_id_for_log`` to have the line logged here.
        """
        decision = NO_MATCH
        for rule in self.rules:
            if not rule.matches(self, annotations):
                continue
            if isinstance(rule.result, Sample):
                sample = rule.result
                outcome = sample.hit if self.random() * 100.0 <= sample.percent else sample.miss
                if outcome is Result.CONTINUE:
                    continue
                decision = Decision(outcome, rule.name, sample.percent)
            else:
                decision = Decision(rule.result, rule.name, 100)
            break
        if crash_id_for_log is not None:
            log_decision(crash_id_for_log, decision)
        return decision


def log_decision(crash_id: str, decision: Decision) -> None:
    """Log ``<crash_id>: matched by <rule>; returned <RESULT>`` at INFO (§5.6)."""
    logger.info(
        "%s: matched by %s; returned %s", crash_id, decision.rule, Result(decision.result).name
    )


def _names(values: Iterable[str], what: str) -> tuple[str, ...]:
    # A bare string would otherwise become a tuple of its characters.
    if isinstance(values, str):
        raise ValueError(f"{what} must be a list of names, not the string {values!r}")
    names = tuple(values)
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"{what}: {name!r} is not a string")
    return names


# --- Conditions of the Mozilla rule set ----------------------------------------------------------


def _text(data: Mapping[str, Any], key: str, default: Any = "") -> str:
    # Conditions compare text: str() turns a JSON 0 into "0" and null into "None".
    return str(data.get(key, default))


def always_match(throttler: Throttler, data: Any) -> bool:
    """Matches every report."""
    return True


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


# --- Presets ----------------------------------------------------------------------------------

ALL_PRODUCTS: tuple[str, ...] = ()
MOZILLA_PRODUCTS: tuple[str, ...] = (
    "Fenix",
    "Firefox",
    "Firefox Enterprise",
    "Focus",
    "MozillaVPN",
    "ReferenceBrowser",
    "Thunderbird",
)

ALL_PRODUCT_PACKAGENAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({})
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

ACCEPT_ALL: tuple[Rule, ...] = (Rule("accept_everything", "*", always_match, Result.ACCEPT),)

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


# --- Rules files ------------------------------------------------------------------------------

RESULT_WORDS = {
    "accept": Result.ACCEPT,
    "defer": Result.DEFER,
    "reject": Result.REJECT,
    "fakeaccept": Result.FAKEACCEPT,
}
SAMPLE_WORDS = {**RESULT_WORDS, "continue": Result.CONTINUE}
VALUE_OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "startswith",
    "regex",
    "less_than",
    "greater_than",
)
RULE_FIELDS = ("name", "key", "result")
KEYED_CONDITIONS = (*VALUE_OPERATORS, "exists", "always")
WHOLE_CONDITIONS = ("always", "all", "any")

ValueTest = Callable[[str], bool]
MapTest = Callable[[Mapping[str, Any]], bool]


def load_rules_file(path: str | Path) -> tuple[Rule, ...]:
    """Read and validate a TOML rules file (format: docs/throttling.md).

    Every problem raises ``ValueError`` naming the file, the rule and what is wrong.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the rules file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    return rules_from_data(data, str(path))


def rules_from_data(data: Mapping[str, Any], source: str = "<rules>") -> tuple[Rule, ...]:
    """Build rules from the parsed contents of a rules file; ``source`` names it in errors."""
    unknown = [key for key in data if key != "rule"]
    if unknown:
        raise ValueError(
            f"{source}: unknown top-level key {unknown[0]!r}; write each rule as a [[rule]] table"
        )
    tables = data.get("rule")
    if isinstance(tables, Mapping):
        raise ValueError(f"{source}: 'rule' must be an array of tables: write [[rule]], not [rule]")
    if not tables:
        raise ValueError(
            f"{source}: no rules; add at least one [[rule]] table "
            "(with none, every report would be rejected as NO_MATCH)"
        )
    if not isinstance(tables, list):
        raise ValueError(f"{source}: 'rule' must be an array of tables: write [[rule]]")
    rules: list[Rule] = []
    first_use: dict[str, int] = {}
    for number, table in enumerate(tables, start=1):
        where = f"{source}: rule {number}"
        if isinstance(table, Mapping) and isinstance(table.get("name"), str):
            where += f" ({table['name']!r})"
        try:
            rule = _compile_rule(table)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if rule.name in first_use:
            raise ValueError(f"{where}: name already used by rule {first_use[rule.name]}")
        first_use[rule.name] = number
        rules.append(rule)
    return tuple(rules)


def _compile_rule(table: Any) -> Rule:
    if not isinstance(table, Mapping):
        raise ValueError("must be a table: write it as [[rule]] followed by key = value lines")
    for field in RULE_FIELDS:
        if field not in table:
            raise ValueError(f"missing {field!r}; {_FIELD_HELP[field]}")
    name, key = table["name"], table["key"]
    if not isinstance(name, str) or RULE_NAME_RE.fullmatch(name) is None:
        raise ValueError(f"name {name!r} may only contain letters, digits and underscores")
    if not isinstance(key, str) or not key:
        raise ValueError(f'key {key!r} must be an annotation name, or "*" for the whole report')
    result = _compile_result(table["result"])

    conditions = [field for field in table if field not in RULE_FIELDS]
    allowed = WHOLE_CONDITIONS if key == "*" else KEYED_CONDITIONS
    for field in conditions:
        if field not in allowed:
            if key == "*" and field in KEYED_CONDITIONS:
                raise ValueError(
                    f'{field!r} needs a key naming an annotation; with key = "*" use '
                    "always, all or any"
                )
            if key != "*" and field in WHOLE_CONDITIONS:
                raise ValueError(f'{field!r} needs key = "*"')
            raise ValueError(f"unknown condition {field!r}; use one of {', '.join(allowed)}")
    if not conditions:
        raise ValueError(f"no condition; add one of {', '.join(allowed)}")
    if len(conditions) > 1:
        raise ValueError(
            f"more than one condition ({', '.join(conditions)}); combine several tests with "
            'key = "*" and all = [...]'
        )
    operator, operand = conditions[0], table[conditions[0]]

    condition: Condition
    if operator == "always":
        _require_true(operator, operand)
        condition = always_match
    elif operator == "exists":
        if operand is not True:
            raise ValueError(
                "a rule with a key only applies when the annotation is present, so exists "
                'must be true; to match a missing annotation use key = "*" and '
                'all = [{ field = "...", exists = false }]'
            )
        condition = always_match
    elif operator in ("all", "any"):
        group = _compile_group(operator, operand)
        condition = _whole_condition(group)
    else:
        condition = _keyed_condition(_compile_value_test(operator, operand))
    return Rule(name, key, condition, result)


_FIELD_HELP = {
    "name": "every rule needs a name of letters, digits and underscores",
    "key": 'the annotation the rule looks at, or "*" for the whole report',
    "result": 'one of "accept", "defer", "reject", "fakeaccept", or a table '
    '{ percent = 10, hit = "accept", miss = "reject" }',
}


def _whole_condition(test: MapTest) -> Condition:
    return lambda throttler, annotations: test(annotations)


def _keyed_condition(test: ValueTest) -> Condition:
    return lambda throttler, value: test(value)


def _require_true(operator: str, operand: Any) -> None:
    if operand is not True:
        raise ValueError(f"{operator} must be true (a rule that never matches does nothing)")


def _compile_result(value: Any) -> Result | Sample:
    if isinstance(value, str):
        word = value.lower()
        if word in RESULT_WORDS:
            return RESULT_WORDS[word]
        if word == "continue":
            raise ValueError(
                '"continue" is only allowed as hit or miss of a sampling result '
                "{ percent = ..., hit = ..., miss = ... }"
            )
    elif isinstance(value, Mapping):
        for field in ("percent", "hit", "miss"):
            if field not in value:
                raise ValueError(
                    f"sampling result needs {field!r}: "
                    '{ percent = 10, hit = "accept", miss = "reject" }'
                )
        extra = [field for field in value if field not in ("percent", "hit", "miss")]
        if extra:
            raise ValueError(f"sampling result: unknown field {extra[0]!r}")
        percent = value["percent"]
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ValueError(f"percent must be a whole number from 0 to 100, not {percent!r}")
        outcomes = []
        for field in ("hit", "miss"):
            word = value[field]
            if not isinstance(word, str) or word.lower() not in SAMPLE_WORDS:
                raise ValueError(
                    f"{field} {word!r} is not one of {', '.join(map(repr, SAMPLE_WORDS))}"
                )
            outcomes.append(SAMPLE_WORDS[word.lower()])
        return Sample(percent, outcomes[0], outcomes[1])
    raise ValueError(
        f"result {value!r} is not one of {', '.join(map(repr, RESULT_WORDS))}, "
        'or a table { percent = 10, hit = "accept", miss = "reject" }'
    )


def _compile_group(operator: str, tests: Any) -> MapTest:
    if not isinstance(tests, list) or not tests:
        raise ValueError(
            f"{operator} must be a non-empty array of tests such as "
            '[{ field = "ProductName", equals = "Firefox" }]'
        )
    compiled = []
    for number, test in enumerate(tests, start=1):
        try:
            compiled.append(_compile_field_test(test))
        except ValueError as exc:
            raise ValueError(f"{operator}, test {number}: {exc}") from None
    if operator == "all":
        return lambda annotations: all(test(annotations) for test in compiled)
    return lambda annotations: any(test(annotations) for test in compiled)


def _compile_field_test(test: Any) -> MapTest:
    if not isinstance(test, Mapping):
        raise ValueError('must be a table such as { field = "ProductName", equals = "Firefox" }')
    if "all" in test or "any" in test:
        if len(test) != 1:
            raise ValueError("a nested all or any must be the only thing in its table")
        operator = next(iter(test))
        return _compile_group(operator, test[operator])
    if "field" not in test:
        raise ValueError("missing 'field' (the annotation to test)")
    field = test["field"]
    if not isinstance(field, str) or not field:
        raise ValueError(f"field {field!r} must be an annotation name")
    has_default = "default" in test
    default = test.get("default")
    if has_default and not isinstance(default, str):
        raise ValueError(f"default {default!r} must be a string")
    operators = [key for key in test if key not in ("field", "default")]
    for operator in operators:
        if operator not in (*VALUE_OPERATORS, "exists"):
            raise ValueError(
                f"unknown operator {operator!r}; use one of {', '.join(VALUE_OPERATORS)}, "
                "exists, or a nested all/any"
            )
    if len(operators) != 1:
        found = ", ".join(operators) or "none"
        raise ValueError(f"needs exactly one operator besides field and default (found {found})")
    operator, operand = operators[0], test[operators[0]]

    if operator == "exists":
        if not isinstance(operand, bool):
            raise ValueError(f"exists must be true or false, not {operand!r}")
        if has_default:
            raise ValueError("exists and default cannot be combined")
        return lambda annotations: (field in annotations) is operand
    check = _compile_value_test(operator, operand)
    if has_default:
        return lambda annotations: check(str(annotations.get(field, default)))
    # Without a default, a missing annotation makes the test false, whatever the operator.
    return lambda annotations: field in annotations and check(str(annotations[field]))


def _compile_value_test(operator: str, operand: Any) -> ValueTest:
    if operator in ("in", "not_in"):
        values = frozenset(_texts(operator, operand))
        if operator == "in":
            return lambda value: value in values
        return lambda value: value not in values
    if operator == "startswith":
        # One prefix or several: Version startswith ["52.", "53."].
        if isinstance(operand, str):
            prefixes: tuple[str, ...] = (operand,)
        elif isinstance(operand, list):
            prefixes = tuple(_texts(operator, operand))
        else:
            raise ValueError(f"startswith must be a string or an array of strings, not {operand!r}")
        return lambda value: value.startswith(prefixes)
    text = _text_operand(operator, operand)
    if operator == "equals":
        return lambda value: value == text
    if operator == "not_equals":
        return lambda value: value != text
    if operator == "less_than":
        return lambda value: value < text
    if operator == "greater_than":
        return lambda value: value > text
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ValueError(f"regex {text!r} does not compile: {exc}") from None
    return lambda value: pattern.search(value) is not None


def _text_operand(operator: str, operand: Any) -> str:
    if isinstance(operand, str):
        return operand
    if isinstance(operand, bool | int | float):
        # Annotations are compared as text; str(true) is "True", as a JSON true becomes.
        raise ValueError(
            f"{operator} must be a string: annotation values are compared as text, "
            f"so write {operator} = {json.dumps(str(operand))}"
        )
    raise ValueError(f"{operator} must be a string, not {operand!r}")


def _texts(operator: str, operand: Any) -> list[str]:
    if not isinstance(operand, list) or not operand:
        raise ValueError(f'{operator} must be a non-empty array of strings, such as ["a", "b"]')
    for item in operand:
        if not isinstance(item, str):
            hint = (
                f", so write {json.dumps(str(item))}"
                if isinstance(item, bool | int | float)
                else ""
            )
            raise ValueError(
                f"items of {operator} must be strings (annotation values are compared as text)"
                f"{hint}, not {item!r}"
            )
    return list(operand)


# --- Settings -----------------------------------------------------------------------------------

RULE_SETS: Mapping[str, tuple[Rule, ...]] = MappingProxyType(
    {
        "accept_all": ACCEPT_ALL,
        "antenna.throttler.ACCEPT_ALL": ACCEPT_ALL,
        "mozilla": MOZILLA_RULES,
        "antenna.throttler.MOZILLA_RULES": MOZILLA_RULES,
    }
)
PRODUCT_LISTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "all": ALL_PRODUCTS,
        "antenna.throttler.ALL_PRODUCTS": ALL_PRODUCTS,
        "mozilla": MOZILLA_PRODUCTS,
        "antenna.throttler.MOZILLA_PRODUCTS": MOZILLA_PRODUCTS,
    }
)
PACKAGENAME_MAPS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "all": ALL_PRODUCT_PACKAGENAMES,
        "antenna.throttler.ALL_PRODUCT_PACKAGENAMES": ALL_PRODUCT_PACKAGENAMES,
        "mozilla": MOZILLA_PRODUCT_PACKAGENAMES,
        "antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES": MOZILLA_PRODUCT_PACKAGENAMES,
    }
)


def _choices(names: Iterable[str]) -> str:
    return ", ".join(names)


def rules_from_setting(value: str) -> tuple[Rule, ...]:
    """``BREAKPAD_THROTTLER_RULES``: a built-in rule set name, or the path of a rules file."""
    value = value.strip()
    if value in RULE_SETS:
        return RULE_SETS[value]
    path = Path(value)
    if value and path.is_file():
        return load_rules_file(path)
    message = (
        f"{value!r} is neither a built-in rule set ({_choices(RULE_SETS)}) "
        "nor the path of an existing rules file"
    )
    if value and "/" not in value and not value.endswith(".toml") and "." in value:
        message += (
            "; Python rule modules cannot be loaded, write the rules as a TOML file "
            "(docs/throttling.md)"
        )
    raise ValueError(message)


def products_from_setting(value: str) -> tuple[str, ...]:
    """``BREAKPAD_THROTTLER_PRODUCTS``: ``all``, ``mozilla`` or comma-separated product names."""
    value = value.strip()
    if value in PRODUCT_LISTS:
        return PRODUCT_LISTS[value]
    if value.startswith("antenna."):
        # Most likely a misspelt reference name; as a product name it would reject everything.
        raise ValueError(
            f"{value!r} is not a product list of the reference; use one of "
            f"{_choices(PRODUCT_LISTS)}, or comma-separated product names"
        )
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise ValueError(
            f"{value!r} names no product; use 'all' to accept every product, or one of "
            f"{_choices(PRODUCT_LISTS)}, or comma-separated product names"
        )
    return names


def packagenames_from_setting(value: str) -> Mapping[str, tuple[str, ...]]:
    """``BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES``: ``all`` (no check) or ``mozilla``."""
    value = value.strip()
    if value in PACKAGENAME_MAPS:
        return PACKAGENAME_MAPS[value]
    raise ValueError(
        f"{value!r} is not one of {_choices(PACKAGENAME_MAPS)}; other package checks can be "
        "written as rules in a rules file"
    )


def load_throttler(rules: str, products: str, packagenames: str) -> Throttler:
    """A throttler from the three settings' values; errors name the setting at fault."""
    parsed: list[Any] = []
    for setting, parse, value in (
        ("BREAKPAD_THROTTLER_RULES", rules_from_setting, rules),
        ("BREAKPAD_THROTTLER_PRODUCTS", products_from_setting, products),
        ("BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES", packagenames_from_setting, packagenames),
    ):
        try:
            parsed.append(parse(value))
        except ValueError as exc:
            raise ValueError(f"{setting}: {exc}") from None
    return Throttler(parsed[0], parsed[1], parsed[2])
