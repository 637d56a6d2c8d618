"""The permissions a user or token can hold (docs/accounts.md, "Users, groups and
permissions").

Each value is the codename stored in the ``permissions`` table and shown in JSON, so a member
compares and hashes equal to the string read back from the database.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    UPLOAD_SYMBOLS = "upload.upload_symbols"
    UPLOAD_TRY_SYMBOLS = "upload.upload_try_symbols"
    VIEW_ALL_UPLOADS = "upload.view_all_uploads"
    MANAGE_TOKENS = "tokens.manage_tokens"
    # Raw and processed crashes: annotations and dumps can hold personal data.
    VIEW_CRASHES = "crashes.view_crashes"

    @property
    def short_name(self) -> str:
        """The codename without its prefix, as the command line also accepts it."""
        return self.value.split(".", 1)[1]

    @classmethod
    def lookup(cls, name: str) -> Permission | None:
        """``upload_symbols`` or ``upload.upload_symbols`` → ``UPLOAD_SYMBOLS``; None if neither."""
        for permission in cls:
            if name in (permission.value, permission.short_name):
                return permission
        return None
