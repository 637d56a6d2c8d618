"""Rules files: throttle rules written as TOML data, read and checked once at start-up.

The format, with an example, is in docs/throttling.md ("Rules files"). Every problem is a
``ValueError`` naming the file, the rule and what is wrong, so start-up can refuse it plainly.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from symbolon.crashes.throttling.engine import (
    RULE_NAME_RE,
    Condition,
    Result,
    Rule,
    Sample,
    always_match,
)

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
