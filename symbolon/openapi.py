"""The OpenAPI 3 description of the JSON API, served at ``/api/openapi.json`` (docs/api.md).

Every route of the application is either described here or named in ``EXCLUDED`` with the reason;
``tests/test_openapi.py`` checks both ways, and ``tests/test_fuzz_api.py`` fuzzes the description
against a running server, so the schemas below must match what the handlers really answer.
"""

from __future__ import annotations

from typing import Any

from symbolon import __version__
from symbolon.web.routes import PAGE_PATTERNS

JSON = "application/json"

# Routes deliberately left out, by their pattern in the route table, with the reason.
EXCLUDED: dict[str, str] = {
    r"/__lbheartbeat__": "Dockerflow probe: an empty body (docs/operations.md)",
    r"/__heartbeat__": "Dockerflow probe: answers 500 by design when a dependency is down",
    r"/__version__": "Dockerflow probe: the deployment's version.json, whatever it holds",
    r"/__broken__": "Dockerflow: raises on purpose, to test error reporting",
    r"/__auth_debug__": "plain text for people checking their cookies",
    r"/missingsymbols\.csv": "a CSV download",
    r"/oidc/authenticate/": "browser sign-in: redirects to the identity provider",
    r"/oidc/callback/": "browser sign-in: redirects back to the site",
    r"/oidc/logout/": "browser sign-out: a redirect",
    r"/submit": "crash reports: the Breakpad protocol, answered in plain text (docs/crashes.md)",
    r"/try/([^/]+)/([0-9A-Fa-f]+)/([^/]+)": "symbol download: redirects and plain text",
    r"/(?:firefox|seamonkey|sunbird|thunderbird|xulrunner|fennec|b2g)/([^/]+)/([0-9A-Fa-f]+)"
    r"/([^/]+)": "symbol download: redirects and plain text",
    r"/([^/]+)/([0-9A-Fa-f]+)/([^/]+)": "symbol download: redirects and plain text",
    r"/storage/([0-9a-f]{16})/(.+)": "a directory location's files: bytes, by signed URL",
    r"/buildid/([^/]+)/(debuginfo|executable)": "debuginfod: redirects and plain text",
    r"/buildid/([^/]+)/section/([^/]+)": "debuginfod: an ELF section's bytes",
    r"/buildid/([^/]+)/source/.*": "debuginfod: sources are not kept, a plain 404",
}
EXCLUDED.update(dict.fromkeys(PAGE_PATTERNS, "a web page: HTML for people (docs/web.md)"))
# And every path listed with a trailing slash answers 301 to it when asked without one.
SLASH_REDIRECTS = "a path without its trailing slash: 301 to the described path"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object with exactly these fields: a field the handlers add must be described."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
STRINGS = {"type": "array", "items": STRING}
ORDER_BY = _object({"sort": STRING, "reverse": BOOLEAN})

ERROR = _ref("Error")
FORM_ERRORS = _ref("FormErrors")


def _errors(*statuses: int, form: bool = False, not_found: str | None = None) -> dict[str, Any]:
    """The error answers of an endpoint that authenticates its caller."""
    answers: dict[str, Any] = {
        "403": _json(ERROR, "no or a bad Auth-Token, a missing permission, or a CSRF failure"),
        "503": _json(ERROR, "the blocked-user check could not reach the identity provider"),
    }
    if form:
        answers["400"] = _json(FORM_ERRORS, "a bad filter or form field, by field")
    if not_found:
        answers["404"] = _json(ERROR, f"No {not_found} matches the given query.")
    for status in statuses:
        answers[str(status)] = _json(ERROR, "see the endpoint's description")
    return answers


def _id(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "description": "a decimal id; one too large for any row is simply not found",
    }


def _query(name: str, description: str, schema: dict[str, Any] = STRING) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _terms(term: str) -> dict[str, Any]:
    """Comma-separated filter terms, each an optional operator and ``term`` (docs/accounts.md)."""
    one = rf"(<=|>=|<|>|=)? *({term})"
    return {"type": "string", "pattern": rf"^{one}(,{one})*$"}


DAY = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
CLOCK = r"T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
MOMENT = rf"{DAY}({CLOCK})?"
PAGE = _query(
    "page",
    "page number from 1; smaller values count as 1",
    {"type": "string", "pattern": "^-?[0-9]+$"},
)
REVERSE = _query("reverse", "`true` for descending order with `sort`", {"enum": ["true", "false"]})


def _sort(*fields: str) -> dict[str, Any]:
    return _query("sort", "the field to sort by", {"enum": list(fields)})


def _date(name: str) -> dict[str, Any]:
    return _query(
        name,
        "date terms: `>=2026-01-01`, `today`, `yesterday`, `null`, …",
        _terms(rf"{MOMENT}|today|yesterday|null|incomplete"),
    )


SIZE = _query(
    "size",
    "size terms such as `>= 10kb,<1g`",
    _terms(r"[0-9]+(\.[0-9]+)? *([kKmMgG]?[bB]?)"),
)
COUNT = _query("count", "count terms such as `>5`", _terms("[0-9]+"))


def _form(fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A urlencoded form; each field a description, or (description, schema)."""
    properties = {}
    for name, field in fields.items():
        description, value = field if isinstance(field, tuple) else (field, STRING)
        properties[name] = {**value, "description": description}
    form: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        form["required"] = list(required)
    return {
        "required": bool(required),
        "content": {"application/x-www-form-urlencoded": {"schema": form}},
    }


DAYS = {"type": "string", "pattern": "^[0-9]{1,6}$"}
IDS = {"type": "string", "pattern": "^ *([0-9]{1,6} *(, *[0-9]{1,6} *)*)?$"}
TRUE_FALSE = {"enum": ["true", "false"]}


UPLOAD_FIELDS = {
    "id": INTEGER,
    "user": _object({"email": STRING}, {"id": INTEGER}),
    "filename": NULLABLE_STRING,
    "size": INTEGER,
    "bucket_name": NULLABLE_STRING,
    "bucket_region": NULLABLE_STRING,
    "bucket_endpoint_url": NULLABLE_STRING,
    "skipped_keys": STRINGS,
    "ignored_keys": STRINGS,
    "try_symbols": BOOLEAN,
    "download_url": NULLABLE_STRING,
    "redirect_urls": STRINGS,
    "completed_at": NULLABLE_TIME,
    "created_at": TIME,
}
UPLOAD_DETAIL_FIELDS = {
    **UPLOAD_FIELDS,
    "status": {"type": "string", "enum": ["processing", "completed", "failed"]},
    "error": NULLABLE_STRING,
}
FILE_ROW = {
    "id": INTEGER,
    "bucket_name": STRING,
    "key": STRING,
    "update": BOOLEAN,
    "compressed": BOOLEAN,
    "size": INTEGER,
    "completed_at": NULLABLE_TIME,
    "created_at": TIME,
    # What the file is (upload.md, "Native debug files").
    "debug_filename": NULLABLE_STRING,
    "debug_id": NULLABLE_STRING,
    "code_file": NULLABLE_STRING,
    "code_id": NULLABLE_STRING,
    "file_format": NULLABLE_STRING,
    "kind": NULLABLE_STRING,
    "arch": NULLABLE_STRING,
    "features": STRINGS,
    "aliases": STRINGS,
}
PERMISSION = _object({"id": INTEGER, "name": STRING}, {"codename": STRING})
GROUP = _object(
    {"id": INTEGER, "name": STRING, "permissions": {"type": "array", "items": PERMISSION}}
)
TOKEN = _object(
    {
        "id": INTEGER,
        "expires_at": TIME,
        "is_expired": BOOLEAN,
        "key": NULLABLE_STRING,
        "key_prefix": STRING,
        "permissions": {"type": "array", "items": PERMISSION},
        "notes": STRING,
        "created_at": TIME,
    }
)
USER = _object(
    {
        "id": INTEGER,
        "email": STRING,
        "last_login": NULLABLE_TIME,
        "date_joined": TIME,
        "is_superuser": BOOLEAN,
        "is_staff": BOOLEAN,
        "is_active": BOOLEAN,
        "inactive_reason": NULLABLE_STRING,
        "no_uploads": INTEGER,
        "last_upload": NULLABLE_TIME,
        "no_tokens": INTEGER,
        "groups": {"type": "array", "items": GROUP},
        "permissions": {"type": "array", "items": PERMISSION},
    }
)
USER_DETAIL = _object(
    {
        "user": USER,
        "groups": {"type": "array", "items": GROUP},
        "audit": {
            "type": "array",
            "items": _object(
                {
                    "id": INTEGER,
                    "actor": NULLABLE_STRING,
                    "action": STRING,
                    "message": STRING,
                    "created_at": TIME,
                }
            ),
        },
    },
    {"ok": {"const": True}},
)
MISSING = _object(
    {
        "id": INTEGER,
        "symbol": STRING,
        "debugid": STRING,
        "filename": STRING,
        "code_file": NULLABLE_STRING,
        "code_id": NULLABLE_STRING,
        "count": INTEGER,
        "modified_at": TIME,
        "created_at": TIME,
    }
)
COUNTED = _object({"count": INTEGER})
PERIODS = ("today", "yesterday", "last_30_days")
UPLOAD_OUTCOME = {
    "201": _json(_object({"upload": _ref("UploadDetail")}), "processed"),
    "202": _json(
        _object({"upload": _object({"id": INTEGER}), "status_url": STRING}),
        "still processing (or `Prefer: respond-async`); poll `status_url`",
    ),
}
# A memory-map entry is [debug_filename, debug_id]; a frame [module index from -1 (no module) to
# the last module, offset from -1] (docs/symbolication.md, "Requests and errors").
MODULE = {
    "type": "array",
    "prefixItems": [
        {"type": "string", "pattern": "^[a-zA-Z0-9_.+{}@<> -]*$", "maxLength": 1024},
        {"type": "string", "pattern": "^[a-fA-F0-9]*$", "maxLength": 128},
    ],
    "minItems": 2,
    "maxItems": 2,
}
FRAME = {
    "type": "array",
    "items": {"type": "integer", "minimum": -1},
    "minItems": 2,
    "maxItems": 2,
}
JOB = {
    "type": "object",
    "required": ["memoryMap", "stacks"],
    "properties": {
        "memoryMap": {"type": "array", "items": MODULE, "maxItems": 10_000},
        "stacks": {"type": "array", "items": {"type": "array", "items": FRAME}, "minItems": 1},
    },
}
BACKFILL = {
    "uploads_created_count": INTEGER,
    "days_till_today": NULLABLE_INTEGER,
    "backfilled": {"const": True},
}
CRASH_ID = {
    "type": "string",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
CRASH_STATE = {"enum": ["pending", "processed", "failed"]}
CRASH_SUMMARY = _object(
    {
        "crash_id": STRING,
        "product": STRING,
        "version": STRING,
        "release_channel": STRING,
        "date": TIME,
        "signature": NULLABLE_STRING,
        "state": CRASH_STATE,
        "reason": NULLABLE_STRING,
        "processed_at": NULLABLE_TIME,
    }
)
CRASH_FILTERS = [
    _query("product", "the product, exactly"),
    _query("version", "the version, exactly"),
    _query("release_channel", "the release channel, exactly"),
    _query("signature", "the signature, exactly"),
    _date("date"),
]
# A processed crash (docs/processing.md, "The processed crash"): Socorro's field names, with
# json_dump shaped like minidump_stackwalk's JSON.
PROCESSED_CRASH = {
    "type": "object",
    "required": [
        "uuid",
        "signature",
        "product",
        "version",
        "release_channel",
        "date_processed",
        "os_name",
        "cpu_arch",
        "processor_notes",
        "json_dump",
    ],
    "properties": {
        "uuid": NULLABLE_STRING,
        "signature": NULLABLE_STRING,
        "product": STRING,
        "version": STRING,
        "release_channel": STRING,
        "date_processed": NULLABLE_STRING,
        "os_name": NULLABLE_STRING,
        "cpu_arch": NULLABLE_STRING,
        "processor_notes": STRING,
        "json_dump": {"type": "object"},
    },
}
SYMBOLICATE_ERRORS = {
    "400": _json(_ref("Title"), "the first problem found in the request (docs/symbolication.md)"),
    "403": _json(_ref("Title"), "a bad Auth-Token (none is needed)"),
    "413": _json(_ref("Title"), "the body is larger than the route accepts"),
    "503": _json(_ref("Title"), "the blocked-user check could not reach the identity provider"),
}


def _read(
    summary: str, response: dict[str, Any], params: list[Any] | None = None, **errors: Any
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": _json(response, "OK"), **_errors(**errors)},
    }
    if params:
        operation["parameters"] = params
    return {"get": operation}


def description() -> dict[str, Any]:
    """The OpenAPI document, as a JSON-ready dict."""
    paths: dict[str, Any] = {
        "/api/openapi.json": {
            "get": {
                "summary": "This description",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "an OpenAPI 3.1 document")},
            }
        },
        "/api/_auth/": {
            "get": {
                "summary": "Who is calling: the account and its permissions, or where to sign in",
                "security": [],
                "responses": {
                    "200": _json(
                        {
                            "oneOf": [
                                _object({"sign_in_url": STRING, "user": {"type": "null"}}),
                                _object(
                                    {
                                        "user": _object(
                                            {
                                                "email": STRING,
                                                "is_active": BOOLEAN,
                                                "is_superuser": BOOLEAN,
                                                "permissions": {
                                                    "type": "array",
                                                    "items": PERMISSION,
                                                },
                                            }
                                        ),
                                        "sign_out_url": STRING,
                                    },
                                    {"csrf_token": STRING},
                                ),
                            ]
                        },
                        "the signed-in user (`csrf_token` only for a browser session)",
                    ),
                    **_errors(),
                },
            }
        },
        "/api/stats/": _read(
            "The home page's figures",
            _object(
                {
                    "stats": _object(
                        {
                            "uploads": _object(
                                {
                                    "all_uploads": BOOLEAN,
                                    **{
                                        p: _object({"count": INTEGER, "total_size": INTEGER})
                                        for p in PERIODS
                                    },
                                }
                            ),
                            "files": _object({p: COUNTED for p in PERIODS}),
                            "downloads": _object(
                                {"missing": _object({p: COUNTED for p in PERIODS})}
                            ),
                            "tokens": _object({"total": INTEGER, "expired": INTEGER}),
                        },
                        {
                            "users": _object(
                                {
                                    "total": INTEGER,
                                    "superusers": INTEGER,
                                    "active": INTEGER,
                                    "not_active": INTEGER,
                                }
                            )
                        },
                    )
                }
            ),
        ),
        "/api/stats/uploads": _read(
            "Uploads today, yesterday and this month",
            _object(
                {
                    "uploads": _object(
                        {
                            p: _object(
                                {
                                    "count": INTEGER,
                                    "total_size": INTEGER,
                                    "total_size_human": STRING,
                                    "files": INTEGER,
                                }
                            )
                            for p in ("today", "yesterday", "this_month")
                        }
                    )
                }
            ),
        ),
        "/api/tokens/": {
            "get": {
                "summary": "Your tokens and the permissions you may put on one",
                "parameters": [
                    _query(
                        "state",
                        "`expired` or `all`; active ones by default",
                        {"enum": ["expired", "all"]},
                    )
                ],
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "tokens": {"type": "array", "items": TOKEN},
                                "permissions": {"type": "array", "items": PERMISSION},
                                "totals": _object(
                                    {"all": INTEGER, "active": INTEGER, "expired": INTEGER}
                                ),
                            }
                        ),
                        "OK",
                    ),
                    **_errors(form=True),
                },
            },
            "post": {
                "summary": "Create a token; its full key is in this answer only",
                "requestBody": _form(
                    {
                        "permissions": ("comma-separated permission ids", IDS),
                        "expires": ("days, 1 to 36500", DAYS),
                        "notes": "free text",
                    },
                    required=("permissions", "expires"),
                ),
                "responses": {
                    "201": _json(_object({"ok": {"const": True}, "token": TOKEN}), "created"),
                    **_errors(form=True),
                },
            },
        },
        "/api/tokens/token/{id}": {
            "delete": {
                "summary": "Delete a token: yours, or anyone's for a superuser",
                "parameters": [_id("id")],
                "responses": {
                    "200": _json(_object({"ok": {"const": True}}), "deleted"),
                    **_errors(not_found="Token"),
                },
            }
        },
        "/api/tokens/token/{id}/extend": {
            "post": {
                "summary": "Push a token's expiry back",
                "parameters": [_id("id")],
                "requestBody": _form({"days": ("days to add, 1 to 36500; empty or 0: 365", DAYS)}),
                "responses": {
                    "200": _json(_object({"ok": {"const": True}, "days": INTEGER}), "extended"),
                    **_errors(form=True, not_found="Token"),
                },
            }
        },
        "/api/uploads/": _read(
            "Uploads: yours, or everyone's with `view_all_uploads`",
            _object(
                {
                    "can_view_all": BOOLEAN,
                    "uploads": {
                        "type": "array",
                        "items": _object(
                            {
                                **UPLOAD_FIELDS,
                                "files_count": INTEGER,
                                "files_incomplete_count": INTEGER,
                            }
                        ),
                    },
                    "batch_size": INTEGER,
                    "order_by": ORDER_BY,
                    "has_next": BOOLEAN,
                    "total": INTEGER,
                }
            ),
            [
                _query("user", "uploader e-mail substring (`!` to exclude); with view-all only"),
                SIZE,
                _date("created_at"),
                _date("completed_at"),
                _sort("size", "created_at"),
                REVERSE,
                PAGE,
            ],
            form=True,
        ),
        "/api/uploads/_possible_upload_urls/": _read(
            "Where your uploads may go, one entry per bucket",
            _object(
                {
                    "urls": {
                        "type": "array",
                        "items": _object(
                            {
                                "url": STRING,
                                "bucket_name": STRING,
                                "private": BOOLEAN,
                                "default": BOOLEAN,
                            }
                        ),
                    }
                }
            ),
        ),
        "/api/uploads/upload/{id}": _read(
            "An upload, its file rows and related uploads",
            _object({"upload": _ref("UploadFull")}),
            [_id("id")],
            not_found="Upload",
        ),
        "/api/uploads/created/": _read(
            "Uploads per UTC day",
            _object(
                {
                    "uploads_created": {
                        "type": "array",
                        "items": _object(
                            {
                                "id": INTEGER,
                                "date": {"type": "string", "format": "date"},
                                "count": INTEGER,
                                "files": INTEGER,
                                "skipped": INTEGER,
                                "ignored": INTEGER,
                                "size": INTEGER,
                                "size_avg": INTEGER,
                                "created_at": TIME,
                            }
                        ),
                    },
                    "aggregates": _object(
                        {
                            "uploads_created": _object(
                                {
                                    "count": NULLABLE_INTEGER,
                                    "files": NULLABLE_INTEGER,
                                    "size": NULLABLE_INTEGER,
                                    "size_avg": {"type": ["number", "null"]},
                                    "skipped": NULLABLE_INTEGER,
                                    "ignored": NULLABLE_INTEGER,
                                }
                            )
                        }
                    ),
                    "total": INTEGER,
                    "batch_size": INTEGER,
                    "order_by": ORDER_BY,
                }
            ),
            [_date("date"), SIZE, COUNT, _sort("date", "size"), REVERSE, PAGE],
            form=True,
        ),
        "/api/uploads/files/": _read(
            "Every stored file; `view_all_uploads` only",
            _object(
                {
                    "files": {
                        "type": "array",
                        "items": _object(
                            {
                                **FILE_ROW,
                                "upload": {
                                    "oneOf": [
                                        {"type": "null"},
                                        _object(
                                            {
                                                "id": INTEGER,
                                                "try_symbols": BOOLEAN,
                                                "upload_type": {"enum": ["try", "regular"]},
                                                "user": _object({"id": INTEGER, "email": STRING}),
                                                "created_at": TIME,
                                            }
                                        ),
                                    ]
                                },
                            }
                        ),
                    },
                    "has_next": BOOLEAN,
                    "batch_size": INTEGER,
                    "total": INTEGER,
                }
            ),
            [
                _query("key", "comma-separated key substrings"),
                _query("bucket_name", "comma-separated bucket names, `!` to exclude"),
                _query("upload_type", "`try` or `regular`", {"enum": ["try", "regular"]}),
                SIZE,
                _date("created_at"),
                _date("completed_at"),
                PAGE,
            ],
            form=True,
        ),
        "/api/uploads/files/file/{id}": _read(
            "A stored file, its `.sym` header fields and its upload",
            _object(
                {
                    "file": _object(
                        {
                            **FILE_ROW,
                            "bucket_name": NULLABLE_STRING,
                            "url": STRING,
                            "debug_filename": NULLABLE_STRING,
                            "debug_id": NULLABLE_STRING,
                            "code_file": NULLABLE_STRING,
                            "code_id": NULLABLE_STRING,
                            "generator": NULLABLE_STRING,
                            "upload": {"oneOf": [{"type": "null"}, _object(UPLOAD_FIELDS)]},
                        }
                    )
                }
            ),
            [_id("id")],
            not_found="FileUpload",
        ),
        "/api/downloads/missing/": _read(
            "Symbols asked for and not found, as the web UI lists them",
            _object(
                {
                    "batch_size": INTEGER,
                    "aggregates": _object(
                        {
                            "missing": _object(
                                {"total": INTEGER, "last_1_days": INTEGER, "last_30_days": INTEGER}
                            )
                        }
                    ),
                    "total": INTEGER,
                    "missing": {"type": "array", "items": MISSING},
                    "order_by": ORDER_BY,
                }
            ),
            [
                _query("symbol", "substring"),
                _query("debugid", "substring"),
                _query("filename", "substring"),
                _date("modified_at"),
                _date("created_at"),
                COUNT,
                _sort("modified_at", "count", "created_at"),
                REVERSE,
                PAGE,
            ],
            form=True,
        ),
        "/missingsymbols/": _read(
            "Symbols asked for and not found, 100 a page",
            _object(
                {
                    "order_by": ORDER_BY,
                    "batch_size": INTEGER,
                    "page": INTEGER,
                    "total_count": INTEGER,
                    "records": {"type": "array", "items": MISSING},
                }
            ),
            [
                _query("symbol", "substring"),
                _query("debugid", "substring"),
                _query("filename", "substring"),
                _date("modified_at"),
                _sort("modified_at", "created_at"),
                REVERSE,
                PAGE,
            ],
            form=True,
        ),
        "/api/syminfo/{debug_filename}/{debug_id}": {
            "get": {
                "summary": "What an uploaded `.sym` header said about a module",
                "security": [],
                "parameters": [
                    {"name": "debug_filename", "in": "path", "required": True, "schema": STRING},
                    {
                        "name": "debug_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9A-Fa-f]+$"},
                    },
                    _query("_refresh", "present: look past the cache"),
                ],
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "debug_filename": STRING,
                                "debug_id": STRING,
                                "code_file": NULLABLE_STRING,
                                "code_id": NULLABLE_STRING,
                                "generator": NULLABLE_STRING,
                                "url": STRING,
                            }
                        ),
                        "found",
                    ),
                    "403": _json(ERROR, "a bad Auth-Token"),
                    "404": {
                        "description": "Code file / id Not Found (a path that is no id: JSON)",
                        "content": {"text/plain": {"schema": STRING}, JSON: {"schema": ERROR}},
                    },
                    "503": _json(
                        ERROR, "the blocked-user check could not reach the identity provider"
                    ),
                },
            }
        },
        "/api/uploads/created/backfilled/": {
            "get": {
                "summary": "The backfill report; a superuser only",
                "responses": {"200": _json(_ref("Backfill"), "OK"), **_errors()},
            },
            "post": {
                "summary": "Backfill: there is never anything to do (docs/decisions.md)",
                "requestBody": _form({"days": "accepted, unused", "force": "accepted, unused"}),
                "responses": {
                    "200": _json(
                        _object({**BACKFILL, "updated": {"type": "array", "maxItems": 0}}),
                        "OK, nothing updated",
                    ),
                    **_errors(),
                },
            },
        },
        "/api/_users/": _read(
            "Users and groups; a superuser signed in with a browser",
            _object(
                {
                    "users": {"type": "array", "items": USER},
                    "groups": {"type": "array", "items": GROUP},
                }
            ),
        ),
        "/api/_users/user/{id}": {
            "get": {
                "summary": "A user with its audit trail",
                "parameters": [_id("id")],
                "responses": {"200": _json(USER_DETAIL, "OK"), **_errors(not_found="User")},
            },
            "post": {
                "summary": "Change a user's flags or groups, in one transaction",
                "parameters": [_id("id")],
                "requestBody": _form(
                    {
                        "is_active": ("true or false", TRUE_FALSE),
                        "is_superuser": ("true or false", TRUE_FALSE),
                        "groups": ("comma-separated group ids; empty for none", IDS),
                    }
                ),
                "responses": {
                    "200": _json(USER_DETAIL, "changed"),
                    **_errors(form=True, not_found="User"),
                },
            },
        },
        "/api/crashes/": _read(
            "The crash index (docs/processing.md), newest first, 100 a page",
            _object(
                {
                    "crashes": {"type": "array", "items": CRASH_SUMMARY},
                    "batch_size": INTEGER,
                    "page": INTEGER,
                    "has_next": BOOLEAN,
                    "total": INTEGER,
                }
            ),
            [*CRASH_FILTERS, _query("state", "pending, processed or failed", CRASH_STATE), PAGE],
            form=True,
        ),
        "/api/crashes/signatures/": _read(
            "The processed crashes' signatures over a window, most frequent first (100 at most)",
            _object(
                {
                    "signatures": {
                        "type": "array",
                        "items": _object(
                            {"signature": STRING, "count": INTEGER, "last_date": TIME}
                        ),
                    },
                    "total": INTEGER,
                },
                {"days": INTEGER, "since": TIME},
            ),
            [
                _query(
                    "days",
                    "the window: this many days back from now (1 to 3650, default 7); "
                    "not with `date`",
                    {"type": "string", "pattern": "^[0-9]{1,6}$"},
                ),
                *CRASH_FILTERS,
            ],
            form=True,
        ),
        "/api/crashes/{crash_id}": {
            "get": {
                "summary": "A crash's state; its raw and processed crash need "
                "crashes.view_crashes (null without it)",
                "parameters": [
                    {"name": "crash_id", "in": "path", "required": True, "schema": CRASH_ID}
                ],
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "crash_id": STRING,
                                "state": CRASH_STATE,
                                "reason": NULLABLE_STRING,
                                "signature": NULLABLE_STRING,
                                "raw_crash": {"type": ["object", "null"]},
                                "processed_crash": {"oneOf": [PROCESSED_CRASH, {"type": "null"}]},
                            }
                        ),
                        "OK",
                    ),
                    **_errors(not_found="crash"),
                    "503": _json(
                        ERROR,
                        "the crash store cannot be read, or the blocked-user check could not "
                        "reach the identity provider",
                    ),
                },
            }
        },
        "/minidump": {
            "post": {
                "summary": "Walk and symbolicate a minidump now; answers the processed crash and "
                "stores nothing",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["upload_file_minidump"],
                                "properties": {
                                    "upload_file_minidump": {"type": "string", "format": "binary"}
                                },
                                "additionalProperties": {
                                    "type": "string",
                                    "description": "annotations (ProductName, Version, …)",
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(PROCESSED_CRASH, "the processed crash"),
                    **_errors(400),
                },
            }
        },
        "/upload/": {
            "post": {
                "summary": "Upload a symbol archive, or have one fetched from a URL",
                "parameters": [
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": False,
                        "schema": STRING,
                        "description": "`respond-async`: answer 202 at once",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "try": STRING,
                                    "bucket_name": STRING,
                                },
                            }
                        },
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "properties": {"url": STRING, "try": STRING, "bucket_name": STRING},
                            }
                        },
                    },
                },
                "responses": {
                    **UPLOAD_OUTCOME,
                    **_errors(400, 413),
                    "500": _json(ERROR, "upload by URL: the remote server answered an error"),
                },
            }
        },
        "/upload/auth_info/": {
            "post": {
                "summary": "Who the calling token is and which upload protocol it prefers",
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "email": STRING,
                                "user_id": INTEGER,
                                "try_symbols": BOOLEAN,
                                "token_expires_at": INTEGER,
                                "upload_api_version": INTEGER,
                            }
                        ),
                        "OK",
                    ),
                    **_errors(),
                },
            }
        },
        "/upload/v2/": {
            "post": {
                "summary": "Start an upload straight to storage: one action per file",
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": _object(
                                {
                                    "files": {
                                        "type": "array",
                                        "maxItems": 1024,
                                        "items": _object(
                                            {
                                                "key": STRING,
                                                "size": {"type": "integer", "minimum": 0},
                                                "md5_hash": STRING,
                                            }
                                        ),
                                    }
                                }
                            )
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        _object(
                            {
                                "id": INTEGER,
                                "created_at": INTEGER,
                                "user": STRING,
                                "try_symbols": BOOLEAN,
                                "upload_protocol": {"const": "s3-presigned-put"},
                                "complete_url": STRING,
                                "files": {
                                    "type": "array",
                                    "items": _object(
                                        {
                                            "key": STRING,
                                            "action": _object(
                                                {"type": {"enum": ["skip", "error", "upload"]}},
                                                {
                                                    "msg": STRING,
                                                    "url": STRING,
                                                    "content_encoding": NULLABLE_STRING,
                                                    "headers": {
                                                        "type": "object",
                                                        "additionalProperties": STRING,
                                                    },
                                                },
                                            ),
                                        }
                                    ),
                                },
                            }
                        ),
                        "created",
                    ),
                    **_errors(400),
                },
            }
        },
        "/upload/v2/{id}/complete": {
            "post": {
                "summary": "Finish an upload v2: verify and record what was stored",
                "parameters": [_id("id")],
                "responses": {**UPLOAD_OUTCOME, **_errors(400, not_found="Upload")},
            }
        },
        "/symbolicate/v5": {
            "post": {
                "summary": "Symbolicate stacks (docs/symbolication.md)",
                "security": [],
                "parameters": [
                    {
                        "name": "Debug",
                        "in": "header",
                        "required": False,
                        "schema": STRING,
                        "description": "any value: add a `debug` block",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "oneOf": [
                                    _object(
                                        {"jobs": {"type": "array", "items": JOB, "maxItems": 10}}
                                    ),
                                    JOB,
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "results": {
                                    "type": "array",
                                    "items": _object(
                                        {
                                            "stacks": {
                                                "type": "array",
                                                "items": {
                                                    "type": "array",
                                                    "items": {"type": "object"},
                                                },
                                            },
                                            "found_modules": {
                                                "type": "object",
                                                "additionalProperties": {
                                                    "type": ["boolean", "null"]
                                                },
                                            },
                                        }
                                    ),
                                }
                            },
                            {"debug": {"type": "object"}},
                        ),
                        "one result per job",
                    ),
                    **SYMBOLICATE_ERRORS,
                },
            }
        },
        "/symbolicate/v4": {
            "post": {
                "summary": "Symbolicate one job (deprecated; frames as strings)",
                "security": [],
                "requestBody": {"required": True, "content": {JSON: {"schema": JOB}}},
                "responses": {
                    "200": _json(
                        _object(
                            {
                                "symbolicatedStacks": {
                                    "type": "array",
                                    "items": {"type": "array", "items": STRING},
                                },
                                "knownModules": {
                                    "type": "array",
                                    "items": {"type": ["boolean", "null"]},
                                },
                            }
                        ),
                        "OK",
                    ),
                    **SYMBOLICATE_ERRORS,
                },
            }
        },
    }
    for item in paths.values():
        for operation in item.values():
            # Every route that reads its body whole bounds it (docs/operations.md, "Limits").
            operation["responses"].setdefault(
                "413", _json(ERROR, "the body is larger than this route accepts")
            )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Symbolon",
            "version": __version__,
            "description": (
                "The JSON API (docs/api.md). Read-only endpoints answer any method as they "
                'answer GET; only GET is described. Errors are `{"error": message}`, bad '
                'filters and forms `{"errors": {field: [message]}}`, symbolication errors '
                '`{"title": message}`.'
            ),
        },
        "paths": paths,
        "security": [{"token": []}, {"session": []}, {}],
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "header", "name": "Auth-Token"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "symbolon_session",
                    "description": "a browser session; changes also need the X-CSRFToken header",
                },
            },
            "schemas": {
                "Error": _object({"error": STRING}, {"path": STRING}),
                "FormErrors": _object(
                    {
                        "errors": {
                            "type": "object",
                            "additionalProperties": STRINGS,
                            "minProperties": 1,
                        }
                    }
                ),
                "Title": _object({"title": STRING}),
                "UploadDetail": _object(UPLOAD_DETAIL_FIELDS),
                "UploadFull": _object(
                    {
                        **UPLOAD_DETAIL_FIELDS,
                        "file_uploads": {"type": "array", "items": _object(FILE_ROW)},
                        "related": {"type": "array", "items": _ref("UploadDetail")},
                    }
                ),
                "Backfill": _object(BACKFILL),
            },
        },
    }
