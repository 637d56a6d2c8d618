"""The crash stores behind :class:`symbolon.crashes.store.CrashStorage`: an S3 bucket
(:mod:`.s3`) or a local directory (:mod:`.directory`), as ``CRASHMOVER_CRASHSTORAGE_CLASS``
chooses."""

from __future__ import annotations

from symbolon.conf import Settings
from symbolon.crashes.store import CrashStorage
from symbolon.crashes.stores.directory import FSCrashStorage
from symbolon.crashes.stores.s3 import S3CrashStorage
from symbolon.storage.s3 import S3Clients


def make_crash_storage(settings: Settings, s3: S3Clients) -> CrashStorage:
    if settings.crash_storage == "fs":
        return FSCrashStorage(settings.crash_dir, settings.crash_fs_fsync)
    return S3CrashStorage(settings, s3)
