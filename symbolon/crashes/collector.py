"""From a parsed report to the client's answer: throttle, crash id, save, publish.

The steps and answers are those of docs/crashes.md, "What happens to a report".

A ``CrashID`` is only ever returned once ``dump_names``, the dumps and the raw crash are stored.
Saving retries ``CRASHMOVER_MAX_ATTEMPTS`` times; if it still fails the client gets ``503`` with
``Retry-After`` and keeps the crash. Publishing is tried once in the request; an id that could
not be published is marked in the crash store and published again in the background, so a
broker outage never loses a crash and never holds a client up. Each id is also marked before
its crash is saved and until it is published: a process that dies in between leaves the mark,
and the crash is published from it once the mark is older than any request lasts.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import markus

from symbolon.conf import Settings
from symbolon.crashes.body import PLACED_BUDGET, ByteBudget, SpoolBudget
from symbolon.crashes.crashid import create_crash_id, is_valid_crash_id, submitted_timestamp
from symbolon.crashes.payload import Malformed, Payload
from symbolon.crashes.publish import Publisher
from symbolon.crashes.store import CrashStorage, Dump, RawCrash, StorageError, raw_crash_json
from symbolon.crashes.throttling.engine import Result, Throttler, log_decision
from symbolon.crashes.throttling.presets import load_throttler

logger = logging.getLogger("symbolon.crashes")
# The reference's names (docs/crashes.md#metrics): with no statsd namespace they are emitted
# exactly.
metrics = markus.get_metrics("socorro.collector")

RAW_CRASH_VERSION = 2
REMOVED_FIELDS = ("Email", "TelemetryClientId", "TelemetryServerURL", "TelemetrySessionId")
RETRY_AFTER_SECONDS = 60
# A "being published" mark older than this belongs to a request that stopped (its process died):
# longer than a save and a publish take, retries included.
PUBLISH_GRACE_SECONDS = 600


@dataclass
class Answer:
    status: int
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Submission:
    """What the request itself says about a report."""

    user_agent: str | None
    payload_size: int
    compressed: bool
    authorization: str | None


def being_cancelled() -> bool:
    """Whether the running task was asked to stop (a shutdown, a client gone)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def discarded(reason: str, status: int = 400) -> Answer:
    return Answer(status, f"Discarded={reason}")


class Collector:
    def __init__(
        self,
        settings: Settings,
        storage: CrashStorage,
        publisher: Publisher,
        throttler: Throttler | None = None,
    ):
        self.settings = settings
        self.storage = storage
        self.publisher = publisher
        self.throttler = throttler or load_throttler(
            settings.breakpad_throttler_rules,
            settings.breakpad_throttler_products,
            settings.breakpad_throttler_product_packagenames,
        )
        self._slots = asyncio.Semaphore(settings.crashmover_concurrent_crashmovers)
        # The temporary disk the bodies being received share (docs/crashes.md).
        self.spool_budget = SpoolBudget(settings.collector_spool_budget)
        # The memory set aside for bodies before they come (docs/crashes.md).
        self.placed_budget = ByteBudget(PLACED_BUDGET)
        self.publish_grace_seconds: float = PUBLISH_GRACE_SECONDS
        self.save_queue_size = 0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def idle(self) -> None:
        """Wait until no report is being saved or published (for a clean shutdown)."""
        await self._idle.wait()

    def _authorized(self, authorization: str | None) -> bool:
        token = self.settings.breakpad_stage_submitter_bearer_token
        if not token or not authorization or not authorization.startswith("Bearer "):
            return False
        return hmac.compare_digest(authorization[len("Bearer ") :].encode(), token.encode())

    async def submit(self, payload: Payload, request: Submission) -> Answer:
        """Throttle, give an id, save, publish and answer a well-formed body."""
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._submit(payload, request)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _submit(self, payload: Payload, request: Submission) -> Answer:
        if not payload.annotations:
            raise Malformed("no_annotations")
        metrics.incr("breakpad_resource.incoming_crash")
        now = datetime.now(UTC)
        raw_crash: dict[str, Any] = dict(payload.annotations)
        metadata: dict[str, Any] = {
            "payload": "json" if payload.has_json else "multipart",
            "payload_compressed": "1" if request.compressed else "0",
            "payload_size": request.payload_size,
            "collector_notes": list(payload.notes),
            "user_agent": request.user_agent if request.user_agent is not None else "None",
        }
        raw_crash.update(
            submitted_timestamp=submitted_timestamp(now),
            version=RAW_CRASH_VERSION,
            metadata=metadata,
        )
        decision = self.throttler.throttle(raw_crash)
        if "uuid" in raw_crash:
            if not self._authorized(request.authorization):
                metrics.incr("breakpad_resource.unauthorized_uuid")
                return discarded("unauthorized_uuid", 401)
            crash_id = raw_crash["uuid"]
            if not isinstance(crash_id, str) or not is_valid_crash_id(crash_id, strict=True):
                raise Malformed("invalid_uuid")
            logger.info("%s has existing crash_id", crash_id)
        else:
            crash_id = create_crash_id(now, int(decision.result))
        log_decision(crash_id, decision)
        metrics.incr("breakpad_resource.throttle_rule", tags=[f"rule:{decision.rule}"])
        metrics.incr("breakpad_resource.throttle", tags=[f"result:{decision.result.name.lower()}"])
        if decision.result is Result.REJECT:
            return discarded(f"rule_{decision.rule}", 200)
        accepted = Answer(200, f"CrashID=bp-{crash_id}\n")
        if decision.result is Result.FAKEACCEPT:
            return accepted
        for name in REMOVED_FIELDS:
            if name in raw_crash:
                del raw_crash[name]
                metadata["collector_notes"].append(f"Removed {name} from raw crash.")
        raw_crash["uuid"] = crash_id
        metadata["throttle_rule"] = decision.rule
        rendered: list[bytes] = []

        def render() -> bytes:
            # Called by the store in its worker thread: hashing a large dump must not hold the
            # event loop. Once is enough, whatever the number of attempts.
            if not rendered:
                metadata["dump_checksums"] = payload.checksums()
                rendered.append(raw_crash_json(raw_crash))
            return rendered[0]

        # A crash id the client chose may already be stored (a resend): never remove it.
        generated = "uuid" not in payload.annotations
        with metrics.timer("crashmover.crash_handling.time"):
            if not await self.save(crash_id, render, payload.dumps, discard_on_failure=generated):
                return Answer(503, "", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            await self.publish(crash_id)
        return accepted

    async def save(
        self,
        crash_id: str,
        raw_crash: RawCrash,
        dumps: Mapping[str, Dump],
        discard_on_failure: bool = True,
    ) -> bool:
        """Store the crash, retrying; False once every attempt failed (what the failed attempts
        wrote is then removed, if ``discard_on_failure``). The id is marked as being published
        before anything is written; publish() removes the mark."""
        s = self.settings
        # Requests waiting for a slot: the save_queue_size gauge of docs/crashes.md#metrics.
        self.save_queue_size += 1
        metrics.gauge("crashmover.save_queue_size", self.save_queue_size)
        waiting = True
        try:
            async with self._slots:
                self.save_queue_size -= 1
                waiting = False
                metrics.gauge("crashmover.save_queue_size", self.save_queue_size)
                for attempt in range(s.crashmover_max_attempts):
                    started = time.perf_counter()
                    try:
                        try:
                            # Before the crash exists (see publish()), and again at each attempt:
                            # the mark's age tells the re-publish loop this request is at work.
                            await self.storage.mark_publishing(crash_id)
                            await self.storage.save(crash_id, raw_crash, dumps)
                        except asyncio.CancelledError as exc:
                            if being_cancelled():
                                raise
                            # Nobody cancelled this request: a library's own cancellation
                            # escaped a write, which is a failed attempt like any other.
                            raise StorageError(f"a write was cancelled: {exc!r}") from exc
                    except (StorageError, OSError) as exc:
                        logger.warning(
                            "CrashMover.crashmover_save: exception %s, retry attempt %d",
                            exc,
                            attempt,
                        )
                        if attempt + 1 < s.crashmover_max_attempts:
                            metrics.incr(
                                "crashmover.retry_count",
                                tags=["count:save_crash_exception.count"],
                            )
                            await asyncio.sleep(s.crashmover_retry_sleep_seconds)
                        continue
                    metrics.timing(
                        "crashmover.crash_save.time", 1000 * (time.perf_counter() - started)
                    )
                    logger.info("%s saved", crash_id)
                    return True
        finally:
            if waiting:  # cancelled while queued
                self.save_queue_size -= 1
        logger.error("%s: too many errors trying to save; dropped", crash_id)
        metrics.incr("crashmover.save_crash_dropped.count")
        if discard_on_failure:
            await self._discard_partial(crash_id, dumps)
            await self._clear_publishing(crash_id)
        # Else the mark stays: a copy stored before may still wait to be published.
        return False

    async def _clear_publishing(self, crash_id: str) -> None:
        try:
            await self.storage.clear_publishing(crash_id)
        except (StorageError, OSError) as exc:
            # Left, the mark only has the crash published once more, if it is stored.
            logger.warning("%s: could not clear its publishing mark: %s", crash_id, exc)

    async def _discard_partial(self, crash_id: str, dumps: Mapping[str, Dump]) -> None:
        """The client will send the crash again under a new id: remove what this one left."""
        try:
            await self.storage.discard(crash_id, dumps)
        except (StorageError, OSError) as exc:
            logger.warning("%s: could not remove a partly saved crash: %s", crash_id, exc)

    async def publish(self, crash_id: str) -> None:
        """Publish a saved crash's id; one the broker does not take is marked for later. The
        "being published" mark that save() wrote is cleared once the id is published or marked
        unpublished: until then, the re-publishing loop would publish it if this stopped."""
        started = time.perf_counter()
        try:
            await self.publisher.publish(crash_id)
        except Exception as exc:
            logger.warning("CrashMover.crashmover_publish: exception %r, retry attempt 0", exc)
            metrics.incr("crashmover.publish_crash_dropped.count")
            try:
                await self.storage.mark_unpublished(crash_id)
                logger.warning("%s: not published yet; marked to publish again", crash_id)
            except (StorageError, OSError) as mark_exc:
                logger.error(
                    "%s: not published yet (%s); published again once its publishing mark is "
                    "%d s old, or by `symbolon crashes republish --date %s`",
                    crash_id,
                    mark_exc,
                    self.publish_grace_seconds,
                    "20" + crash_id[-6:],
                )
                return  # the publishing mark stays
            await self._clear_publishing(crash_id)
            return
        metrics.timing("crashmover.crash_publish.time", 1000 * (time.perf_counter() - started))
        metrics.incr("crashmover.save_crash.count")
        logger.info("%s published", crash_id)
        await self._clear_publishing(crash_id)

    async def republish_pending(self) -> int:
        """Publish the ids marked unpublished, and those whose request stopped between saving
        and publishing; returns how many were published."""
        published = 0
        for crash_id in await self.storage.unpublished():
            if not await self._republish(crash_id):
                return published  # the broker is still away: try again next round
            await self.storage.clear_unpublished(crash_id)
            published += 1
        for crash_id in await self.storage.publishing(self.publish_grace_seconds):
            unsaved_before = None
            if await self.storage.load_raw_crash(crash_id) is None:
                # Stopped before the raw crash was written: its client got no crash id.
                logger.warning("%s: its request stopped before the crash was stored", crash_id)
                unsaved_before = time.time() - self.publish_grace_seconds
            elif await self._republish(crash_id):
                published += 1
            else:
                return published
            await self.storage.clear_publishing(crash_id, unsaved_before)
        return published

    async def _republish(self, crash_id: str) -> bool:
        try:
            await self.publisher.publish(crash_id)
        except Exception as exc:
            logger.warning("re-publishing %s failed, will try again: %r", crash_id, exc)
            return False
        logger.info("%s published", crash_id)
        return True
