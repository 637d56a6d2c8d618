"""Finding a symbol file by code file and code id (docs/download.md, "Code file and code id").

Windows tooling sometimes knows only the binary (``xul.dll``) and its code id. Uploads record
the ``MODULE`` and ``INFO CODE_ID`` lines of every ``.sym`` file, so either pair leads to the
debug file and debug id under which the symbols are stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import asyncpg

from symbolon.redis_cache import Cache

CACHE_TTL_SECONDS = 600
MAX_CODE_ID_LENGTH = 32  # debug ids are 33 characters; anything shorter may be a code id


@dataclass(frozen=True)
class SymInfo:
    debug_filename: str
    debug_id: str
    code_file: str | None
    code_id: str | None
    generator: str | None
    try_symbols: bool


def eligible(debug_id: str, symbol_file: str) -> bool:
    return symbol_file.endswith(".sym") and len(debug_id) <= MAX_CODE_ID_LENGTH


async def lookup(
    db: asyncpg.Pool, cache: Cache, file: str, ident: str, refresh: bool = False
) -> SymInfo | None:
    """The most recent upload whose debug pair or code pair is (file, ident); cached 600 s."""
    key = f"lookup_by_syminfo::{file}//{ident}"
    if not refresh:
        cached = await cache.get(key)
        if cached is not None:
            data = json.loads(cached)
            return SymInfo(**data) if data else None
    row = await db.fetchrow(
        """SELECT f.debug_filename, f.debug_id, f.code_file, f.code_id, f.generator,
                  coalesce(u.try_symbols, false) AS try_symbols
           FROM file_uploads f LEFT JOIN uploads u ON u.id = f.upload_id
           WHERE ((f.debug_filename = $1 AND f.debug_id = $2)
                  OR (f.code_file = $1 AND f.code_id = $2))
             -- A native file's row names no .sym: a DLL's would redirect to <dll>/<id>/….
             AND (f.file_format IS NULL OR f.file_format = 'breakpad')
           ORDER BY f.id DESC LIMIT 1""",
        file,
        ident,
    )
    info = SymInfo(**dict(row)) if row else None
    await cache.set(key, json.dumps(asdict(info) if info else None), ttl=CACHE_TTL_SECONDS)
    return info


def symbol_filename(debug_filename: str) -> str:
    """``xul.pdb`` → ``xul.sym``, ``libxul.so`` → ``libxul.so.sym``: the name Breakpad uses.

    (Tecken kept non-PDB names unchanged, yielding URLs that can never be found.)
    """
    if debug_filename.lower().endswith(".pdb"):
        return debug_filename[:-4] + ".sym"
    return debug_filename + ".sym"
