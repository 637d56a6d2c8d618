"""Processing crashes: a stored crash becomes an unwound, symbolicated stack with a signature
(docs/processing.md, "The pipeline").

For a crash id: the raw crash and its minidump are read from the crash store, its index row is
set ``pending``, the dump is walked in a walking process (sandbox.py) that asks for each module's
CFI index (cfi_cache.py), the frames are symbolicated by the symbolication service, the signature
is made from the crashing thread, and the processed crash is written beside the raw crash; the
row ends ``processed``, or ``failed`` with the reason when the dump could not be walked.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg

from symbolon.conf import Settings
from symbolon.crashes.body import ByteBudget
from symbolon.crashes.publish import TEST_MESSAGE, Publisher
from symbolon.crashes.store import CrashStorage
from symbolon.metrics import metrics
from symbolon.processing.pipeline import records, shape
from symbolon.processing.pipeline.cfi_cache import CfiCache
from symbolon.processing.pipeline.records import CrashMeta
from symbolon.processing.pipeline.sandbox import WalkFailed, WalkPool
from symbolon.processing.pipeline.signature import SignatureRules
from symbolon.symbolication.request import ModuleKey
from symbolon.symbolication.service import Symbolication
from symbolon.symbolication.sym_fetch import native_debug_filename
from symbolon.symbolication.symbolicate import symbolicate

logger = logging.getLogger("symbolon.processing")
MINIDUMP = "upload_file_minidump"
NO_MINIDUMP = "EMPTY: no minidump"
# Crashes left pending that one run of requeue_stale queues again, at most.
REQUEUE_PER_RUN = 1000
# Modules without symbols the processor notes name; the rest are counted.
MISSING_NOTED = 50


class CrashProcessor:
    """The long-lived part of processing: walking processes, CFI indexes, signature rules, and
    where crashes are read from and written to."""

    def __init__(
        self,
        settings: Settings,
        db: asyncpg.Pool,
        symbolication: Symbolication,
        storage: CrashStorage,
        publisher: Publisher | None = None,
    ):
        self.settings = settings
        self.db = db
        self.symbolication = symbolication
        self.storage = storage
        self._publisher = publisher
        self._own_publisher = publisher is None
        self.cfi = CfiCache(symbolication)
        processes = settings.processor_walk_processes or (os.cpu_count() or 1)
        self.walks = WalkPool(
            processes,
            settings.processor_walk_memory,
            settings.processor_walk_timeout_seconds,
            settings.processor_walk_deadline_seconds,
        )
        self.rules = SignatureRules.make(
            settings.processor_signature_prefix,
            settings.processor_signature_irrelevant,
            settings.processor_signature_frames,
        )
        # POST /minidump bodies being received, together.
        self.minidump_bodies = ByteBudget(settings.processor_minidump_budget)
        symbolication.upload_listeners.append(self.symbols_uploaded)

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.settings)
        return self._publisher

    async def close(self) -> None:
        await asyncio.to_thread(self.walks.close)
        if self._own_publisher and self._publisher is not None:
            await self._publisher.close()

    # -- one dump ---------------------------------------------------------------------------------

    async def process_dump(
        self,
        dump: bytes | None,
        crash_id: str | None = None,
        meta: CrashMeta | None = None,
        notes: Iterable[str] = (),
    ) -> shape.Processed:
        """Walk, symbolicate and sign one dump; nothing is stored. WalkUnavailable when no walk
        could be had through no fault of the dump."""
        started = datetime.now(UTC)
        notes = list(notes)
        if dump is None:
            notes.append(f"no {MINIDUMP} in the crash")
            document = shape.document(
                crash_id, meta, None, NO_MINIDUMP, notes, started, datetime.now(UTC)
            )
            return shape.Processed(document, NO_MINIDUMP)
        await self.cfi.prepare()
        budget = _SymbolBudget(self.settings.processor_walk_symbol_modules)

        async def cfi_path(key: ModuleKey) -> str | None:
            if budget.allows(key):
                path = await self.cfi.path(key)
            else:
                path = await self.cfi.cached(key)
                if path is None:
                    budget.skipped.add(key)
            return str(path) if path is not None else None

        try:
            walked = await self.walks.walk(dump, cfi_path)
        except WalkFailed as exc:
            reason = str(exc)
            notes.append(f"the dump was not walked: {reason}")
            failed = {"status": "ERROR", "error": reason}
            document = shape.document(
                crash_id, meta, failed, None, notes, started, datetime.now(UTC)
            )
            return shape.Processed(document, None, failure=reason)
        result = walked.result
        notes.extend(result.get("warnings", []))
        job = shape.symbolication_job(result)
        # Modules past the budget are not looked up: an id of "" is never fetched.
        for index, key in enumerate(job.modules):
            if key[0] and key[1] and not budget.allows(key):
                budget.skipped.add(key)
                job.modules[index] = (key[0], "")
        done = await symbolicate(self.symbolication, [job], unwind=True)
        looked_up = set(done.found) | (set(walked.cfi_requests) & budget.granted)
        missing: set[ModuleKey] = set()
        for key in looked_up:
            found = done.found.get(key)
            if found is None:  # asked for by the walk only: the lookup is remembered
                found = (await self.symbolication.module(key, unwind=True)).table is not None
            if not found:
                missing.add(key)
        dump_json = shape.json_dump(result, done, missing)
        signature = shape.signature_for(dump_json, self.rules)
        if missing:
            shown = sorted(missing)
            names = ", ".join(f"{name}/{ident}" for name, ident in shown[:MISSING_NOTED])
            more = f" and {len(shown) - MISSING_NOTED} more" if len(shown) > MISSING_NOTED else ""
            notes.append(f"no symbols for {names}{more}")
        skipped = budget.skipped - budget.granted
        if skipped:
            notes.append(
                f"symbols were fetched for {len(budget.granted)} modules at most "
                f"(PROCESSOR_WALK_SYMBOL_MODULES); {len(skipped)} more used only cached symbols"
            )
        document = shape.document(
            crash_id, meta, dump_json, signature, notes, started, datetime.now(UTC)
        )
        return shape.Processed(document, signature, sorted(missing))

    # -- one stored crash -------------------------------------------------------------------------

    async def process(self, crash_id: str) -> shape.Processed | None:
        """Process a stored crash and record the outcome. None when there is no such crash.
        StorageError, database errors and WalkUnavailable propagate: the task is tried again
        later."""
        if crash_id == TEST_MESSAGE:
            return None
        started = time.perf_counter()
        raw = await self.storage.load_raw_crash(crash_id)
        if raw is None:
            logger.warning(
                "%s: no raw crash in %s; not processed", crash_id, self.storage.description
            )
            metrics.incr("processor.no_raw_crash")
            return None
        notes: list[str] = []
        try:
            raw_crash = json.loads(raw)
            if not isinstance(raw_crash, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            notes.append(f"the raw crash is not a JSON object: {exc}")
            raw_crash = {}
        meta = records.meta_of(raw_crash, crash_id)
        await records.start(self.db, crash_id, meta)
        dump = await self.storage.load_dump(crash_id, MINIDUMP)
        processed = await self.process_dump(dump, crash_id, meta, notes)
        data = json.dumps(processed.document, sort_keys=True).encode()
        await self.storage.save_processed(crash_id, data)
        await records.finish(
            self.db,
            crash_id,
            meta,
            processed.signature,
            processed.missing,
            reason=processed.failure,
        )
        elapsed = time.perf_counter() - started
        metrics.timing("processor.process_crash", 1000.0 * elapsed)
        if processed.failure is not None:
            metrics.incr("processor.failed")
            logger.warning("%s: failed: %s", crash_id, processed.failure)
        else:
            metrics.incr("processor.processed")
            logger.info("%s: processed in %.2f s: %s", crash_id, elapsed, processed.signature)
        return processed

    async def load(self, crash_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The stored raw and processed crash, each None when absent."""
        raw, processed = await asyncio.gather(
            self.storage.load_raw_crash(crash_id), self.storage.load_processed(crash_id)
        )
        return _json_or_none(raw), _json_or_none(processed)

    # -- processing again -------------------------------------------------------------------------

    async def reprocess(self, crash_ids: Iterable[str]) -> int:
        """Queue crashes for processing, as the collector publishes them; how many were."""
        count = 0
        for crash_id in crash_ids:
            await self.publisher.publish(crash_id)
            count += 1
        return count

    async def requeue_stale(self) -> int:
        """Queue again crashes left ``pending`` longer than PROCESSOR_REQUEUE_PENDING_AFTER, at
        most REQUEUE_PER_RUN of them; how many were."""
        crash_ids = await records.claim_stale_pending(
            self.db, self.settings.processor_requeue_pending_seconds, REQUEUE_PER_RUN
        )
        if not crash_ids:
            return 0
        queued = await self.reprocess(crash_ids)
        logger.warning("queued %d crash(es) left pending for processing again", queued)
        metrics.incr("processor.requeued", value=queued)
        return queued

    async def symbols_uploaded(self, symbol_keys: list[str]) -> None:
        """An upload stored these symbol keys: queue the crashes that lacked them (at most
        PROCESSOR_REPROCESS_PER_UPLOAD per upload call)."""
        limit = self.settings.processor_reprocess_per_upload
        if limit <= 0:
            return
        wanted: list[str] = []
        for key in symbol_keys:
            parts = key.split("/")
            if len(parts) != 3 or not is_symbol_file(parts[0], parts[2]):
                continue
            left = limit - len(wanted)
            if left <= 0:
                break
            for crash_id in await records.missing_module_crashes(self.db, parts[0], parts[1], left):
                if crash_id not in wanted:
                    wanted.append(crash_id)
        if not wanted:
            return
        # The index files of the module, if any were made before: none, since it was missing.
        queued = await self.reprocess(wanted)
        logger.info("queued %d crash(es) lacking %s for processing again", queued, symbol_keys)


def is_symbol_file(debug_file: str, name: str) -> bool:
    """Whether ``<debug_file>/<id>/<name>`` holds a module's symbols: its ``.sym``, or a native
    file symbolication reads (docs/symbolication.md, "Where symbols come from")."""
    return name.endswith(".sym") or name in (debug_file, native_debug_filename(debug_file))


class _SymbolBudget:
    """The modules whose symbols one crash's processing may fetch: the first ``limit`` asked."""

    def __init__(self, limit: int):
        self.limit = limit
        self.granted: set[ModuleKey] = set()
        self.skipped: set[ModuleKey] = set()

    def allows(self, key: ModuleKey) -> bool:
        if key in self.granted:
            return True
        if len(self.granted) >= self.limit:
            return False
        self.granted.add(key)
        return True


def _json_or_none(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
