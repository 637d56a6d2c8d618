import asyncio

import asyncpg

from symbolon.db import migrate


def run(coro):
    return asyncio.run(coro)


async def _migrate_once(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        return [m.version for m in await migrate.migrate(conn)]
    finally:
        await conn.close()


async def _fetch(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


def test_migrations_are_numbered_and_ordered():
    found = migrate.available()
    assert found, "no migrations found"
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].version == 1


def test_fresh_database_gets_every_migration_then_none(fresh_database):
    assert run(_migrate_once(fresh_database)) == [m.version for m in migrate.available()]
    assert run(_migrate_once(fresh_database)) == []
    rows = run(_fetch(fresh_database, "SELECT version FROM schema_migrations"))
    assert len(rows) == len(migrate.available())


def test_concurrent_migrations_apply_each_migration_exactly_once(fresh_database):
    async def together() -> list[list[int]]:
        return await asyncio.gather(*(_migrate_once(fresh_database) for _ in range(4)))

    results = run(together())
    applied = [v for result in results for v in result]
    assert sorted(applied) == [m.version for m in migrate.available()]
    assert sum(1 for r in results if r) == 1  # one process did it all, the others waited


def test_pending_lists_unapplied_migrations(fresh_database):
    async def check() -> tuple[list, list]:
        conn = await asyncpg.connect(fresh_database)
        try:
            before = await migrate.pending(conn)
            await migrate.migrate(conn)
            return before, await migrate.pending(conn)
        finally:
            await conn.close()

    before, after = run(check())
    assert [m.version for m in before] == [m.version for m in migrate.available()]
    assert after == []


def test_schema_seeds_groups_and_permissions(fresh_database):
    run(_migrate_once(fresh_database))
    rows = run(
        _fetch(
            fresh_database,
            """SELECT g.name, array_agg(p.codename ORDER BY p.codename) AS perms
               FROM groups g JOIN group_permissions gp ON gp.group_id = g.id
               JOIN permissions p ON p.id = gp.permission_id GROUP BY g.name""",
        )
    )
    groups = {r["name"]: r["perms"] for r in rows}
    assert groups == {
        "Uploaders": [
            "tokens.manage_tokens",
            "upload.upload_symbols",
            "upload.upload_try_symbols",
        ],
        "Upload Auditors": ["upload.view_all_uploads"],
    }


def test_token_table_has_no_place_for_a_plain_secret(fresh_database):
    run(_migrate_once(fresh_database))
    rows = run(
        _fetch(
            fresh_database,
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tokens'",
        )
    )
    columns = {r["column_name"] for r in rows}
    assert "key_hash" in columns and "key" not in columns
