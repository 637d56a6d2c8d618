"""What the upload tests share: sym files and archives to upload, the form that carries them,
tokens to authorise them, and the POST that sends them."""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
import zlib

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


# Zip records (APPNOTE.TXT 4.3): local header, central directory header, end of central directory.
LOCAL = struct.Struct("<4s2B4HL2L2H")
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
END = struct.Struct("<4s4H2LH")


def overlapping_zip(names: list[str], kernel: bytes) -> bytes:
    """An overlapping zip bomb: ``kernel`` is deflated once, at the end, and every member's data
    runs into it, quoting the following members' local headers in stored deflate blocks on the
    way. Each member inflates, with a valid CRC, to those headers and ``kernel``."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    data, output = deflater.compress(kernel) + deflater.flush(), kernel
    records = []  # (central directory fields, name, local header size), built back to front
    quote = b""
    for name in reversed(names):
        encoded = name.encode()
        sizes = (zlib.crc32(output), len(data), len(output), len(encoded), 0)
        header = LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 8, 0, 0x21, *sizes) + encoded
        records.append(((20, 0, 20, 0, 0, 8, 0, 0x21, *sizes, 0, 0, 0, 0), encoded, len(header)))
        quote = struct.pack("<B2H", 0, len(header), len(header) ^ 0xFFFF)  # a stored block
        data, output = quote + header + data, header + output
    body = data[len(quote) :]  # the first member's header, then everything it runs through
    central, offset = b"", 0
    for fields, encoded, header_size in reversed(records):
        central += CENTRAL.pack(b"PK\x01\x02", *fields, offset) + encoded
        offset += header_size + len(quote)
    count = len(records)
    return body + central + END.pack(b"PK\x05\x06", 0, 0, count, count, len(central), len(body), 0)
