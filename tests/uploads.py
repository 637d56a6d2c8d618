"""What the upload tests share: sym files and archives to upload, the form that carries them,
tokens to authorise them, and the POST that sends them."""

from __future__ import annotations

import io
import uuid
import zipfile

from symbolon.accounts import tokens as token_store
from symbolon.accounts.users import get_or_create_user
from tests.conftest import unique_email

PARTNER_BUCKET = "partner-symbols"


def sym_text(debug_id: str, name: str = "xul") -> bytes:
    return (
        f"MODULE windows x86_64 {debug_id} {name}.pdb\n"
        f"INFO CODE_ID 5F2A1B0C7E000 {name}.dll\n"
        "INFO GENERATOR mozilla/dump_syms 2.3.3\n"
        "FILE 0 c:/src/main.cpp\n"
    ).encode()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def multipart(files: dict[str, bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in (fields or {}).items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode() + b"\r\n")
    for name, data in files.items():
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            "Content-Type: application/zip\r\n\r\n".encode()
        )
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


async def token_for(runtime, permissions, email=None, expires_days=30, superuser=True):
    email = email or unique_email("ci")
    async with runtime.db.acquire() as conn:
        user, _ = await get_or_create_user(conn, email)
        if superuser:
            await conn.execute("UPDATE users SET is_superuser = true WHERE id = $1", user.id)
            user = user.__class__(**{**user.__dict__, "is_superuser": True})
        else:
            await conn.execute(
                """INSERT INTO user_groups (user_id, group_id)
                   SELECT $1, id FROM groups WHERE name = 'Uploaders'""",
                user.id,
            )
        _, key = await token_store.create_token(conn, user, set(permissions), expires_days)
    return key, email


async def post(
    http_client, base_url, body, content_type, token=None, headers=None, path="/upload/"
):
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if token:
        all_headers["Auth-Token"] = token
    return await http_client.fetch(
        base_url + path,
        method="POST",
        body=body,
        headers=all_headers,
        raise_error=False,
        request_timeout=60,
    )


def debug_id() -> str:
    return uuid.uuid4().hex + "1"  # lower case on purpose: stored upper-cased


UPLOAD = ["upload.upload_symbols"]
