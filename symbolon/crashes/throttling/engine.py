"""The throttle engine: rules, their results, and the :class:`Throttler` that runs them.

A rule set is an ordered list of :class:`Rule`. The first rule that matches a report and yields a
final result decides; a sampling rule may instead let the report go on to the next rule (see
docs/throttling.md, "How rules are evaluated"). Where rule sets come from is not this module's
business: see :mod:`.presets`, :mod:`.mozilla` and :mod:`.rule_files`.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from random import random as _uniform
from typing import Any

# One logger for the whole package, under the name docs/throttling.md gives operators.
LOGGER_NAME = "symbolon.crashes.throttler"
logger = logging.getLogger(LOGGER_NAME)


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
        """Whether this rule applies to the report; a keyed rule needs its annotation present."""
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
        """Run the rules in order and return the first decision.

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
    """Log ``<crash_id>: matched by <rule>; returned <RESULT>`` at INFO.

    The line's format and the logger's name are documented: docs/throttling.md#logging.
    """
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


def always_match(throttler: Throttler, data: Any) -> bool:
    """Matches every report."""
    return True
