"""Where an upload goes: the try and destination rules of uploads/records.py, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import User
from symbolon.uploads import records
from tests.environment import storage

EXCEPTIONS = '{"*@partner.org": "http://minio:9000/partner"}'


def principal(email: str, *permissions: Permission, superuser: bool = False) -> Principal:
    user = User(
        id=1,
        email=email,
        is_active=True,
        is_superuser=superuser,
        is_staff=False,
        date_joined=datetime.now(UTC),
        last_login=None,
    )
    return Principal(user=user, permissions=frozenset(permissions))


def test_regular_upload_goes_to_the_users_location():
    config = storage(UPLOAD_URL_EXCEPTIONS=EXCEPTIONS)
    place = records.placement(config, principal("a@partner.org", Permission.UPLOAD_SYMBOLS))
    assert (place.try_symbols, place.destination.bucket) == (False, "partner")
    place = records.placement(config, principal("b@else.org", Permission.UPLOAD_SYMBOLS))
    assert (place.try_symbols, place.destination.bucket) == (False, "private")


def test_try_only_callers_always_upload_try_symbols():
    config = storage(UPLOAD_URL_EXCEPTIONS=EXCEPTIONS)
    caller = principal("a@partner.org", Permission.UPLOAD_TRY_SYMBOLS)
    place = records.placement(config, caller, asked_try=False, bucket_name="partner")
    assert place.try_symbols and place.destination == config.upload_try


def test_asking_for_try_goes_to_the_try_location_whatever_bucket_is_chosen():
    config = storage(UPLOAD_URL_EXCEPTIONS=EXCEPTIONS)
    caller = principal("a@partner.org", Permission.UPLOAD_SYMBOLS)
    place = records.placement(config, caller, asked_try=True, bucket_name="nowhere")
    assert place.try_symbols and place.destination == config.upload_try


def test_a_chosen_bucket_must_be_one_the_user_may_upload_to():
    config = storage(UPLOAD_URL_EXCEPTIONS=EXCEPTIONS)
    partner = principal("a@partner.org", Permission.UPLOAD_SYMBOLS)
    assert records.placement(config, partner, bucket_name="partner").destination.bucket == (
        "partner"
    )
    with pytest.raises(records.NoValidBucket):
        records.placement(config, partner, bucket_name="private")
    boss = principal("boss@else.org", Permission.UPLOAD_SYMBOLS, superuser=True)
    assert records.placement(config, boss, bucket_name="partner").destination.bucket == "partner"


def test_bucket_choices_list_each_bucket_once_and_mark_the_default():
    config = storage()
    choices = records.bucket_choices(config, principal("a@else.org"))
    assert choices == [
        {
            "url": "http://minio:9000/private",
            "bucket_name": "private",
            "private": True,
            "default": True,
        }
    ]
