"""What reaches Sentry: secrets and client addresses are scrubbed first."""

from symbolon.sentry import scrub_event


def test_tokens_cookies_addresses_and_bodies_are_scrubbed():
    event = {
        "request": {
            "headers": {
                "Auth-Token": "e468c3d4bbda43debc0b856983895835",
                "Cookie": "sessionid=abc",
                "X-Forwarded-For": "203.0.113.9",
                "X-Real-Ip": "203.0.113.9",
                "User-Agent": "curl/8",
            },
            "cookies": {"sessionid": "abc"},
            "data": "the uploaded archive",
            "query_string": "code=secret&state=xyz",
        }
    }
    request = scrub_event(event)["request"]
    assert request["headers"] == {
        "Auth-Token": "[Scrubbed]",
        "Cookie": "[Scrubbed]",
        "X-Forwarded-For": "[Scrubbed]",
        "X-Real-Ip": "[Scrubbed]",
        "User-Agent": "curl/8",
    }
    assert request["cookies"] == "[Scrubbed]"
    assert request["data"] == "[Scrubbed]"
    assert request["query_string"] == "[Scrubbed]"


def test_harmless_query_strings_are_kept():
    event = {"request": {"query_string": "try=1&_refresh"}}
    assert scrub_event(event)["request"]["query_string"] == "try=1&_refresh"
