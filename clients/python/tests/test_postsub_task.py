"""Tests of postsub_task: run with `python -m unittest discover -s tests -v`."""

import base64
import datetime as dt
import email.message
import json
import os
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

try:
    import postsub_task as pt
except ImportError:  # not installed: use the source tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "src"))
    import postsub_task as pt

SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(b"a test secret of some length").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"another secret").decode()

RUN_ID = "0191d3a8-0000-7000-8000-000000000001"


def request_body(**overrides):
    body = {
        "type": "task.run",
        "run_id": RUN_ID,
        "attempt": 1,
        "binding": {
            "id": "0191d3a8-0000-7000-8000-0000000000b1",
            "name": "city-normalizer",
            "form_id": "0191d3a8-0000-7000-8000-0000000000f1",
        },
        "settings": {"field": "city"},
        "submission": {
            "form_id": "0191d3a8-0000-7000-8000-0000000000f1",
            "submission_id": "0191d3a8-0000-7000-8000-0000000000s1",
            "answers": {"city": "Bombay", "age": 30},
            "submitted_at": "2026-12-03T10:00:00Z",
            "metadata": {"request_id": "r-1"},
        },
    }
    body.update(overrides)
    return json.dumps(body).encode()


def signed_headers(body, secret=SECRET, msg_id=RUN_ID, timestamp=None):
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": pt.sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


class SignTest(unittest.TestCase):
    def test_standard_webhooks_vector(self):
        self.assertEqual(pt.sign(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE)

    def test_spec_vector_verifies_at_its_time(self):
        headers = {
            "webhook-id": SPEC_ID,
            "webhook-timestamp": str(SPEC_TIMESTAMP),
            "webhook-signature": SPEC_SIGNATURE,
        }
        pt.Verifier(SPEC_SECRET).verify(headers, SPEC_BODY, now=SPEC_TIMESTAMP + 10)

    def test_verifier_sign_matches_module_sign(self):
        self.assertEqual(
            pt.Verifier(SPEC_SECRET).sign(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY), SPEC_SIGNATURE
        )


class SecretTest(unittest.TestCase):
    def test_refuses_a_secret_without_prefix(self):
        with self.assertRaisesRegex(ValueError, "whsec_"):
            pt.Verifier("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    def test_refuses_bad_base64(self):
        for secret in ("whsec_!!!!", "whsec_abc", "whsec_MfKQ 9r8G"):
            with self.subTest(secret=secret), self.assertRaisesRegex(ValueError, "not base64"):
                pt.Verifier(secret)

    def test_refuses_an_empty_secret(self):
        with self.assertRaisesRegex(ValueError, "empty"):
            pt.Verifier("whsec_")

    def test_sign_refuses_a_bad_secret(self):
        with self.assertRaises(ValueError):
            pt.sign("secret", "id", 1, b"")

    def test_repr_hides_the_secret(self):
        self.assertNotIn("MfKQ", repr(pt.Verifier(SPEC_SECRET)))


class VerifyTest(unittest.TestCase):
    def setUp(self):
        self.verifier = pt.Verifier(SECRET)
        self.body = request_body()
        self.now = 1_800_000_000
        self.headers = signed_headers(self.body, timestamp=self.now)

    def refused(self, headers, body=None, now=None, reason=""):
        with self.assertRaisesRegex(pt.SignatureError, reason):
            self.verifier.verify(headers, self.body if body is None else body,
                                 now=self.now if now is None else now)

    def test_good_signature(self):
        self.verifier.verify(self.headers, self.body, now=self.now)

    def test_good_signature_now_from_the_clock(self):
        self.verifier.verify(signed_headers(self.body), self.body)

    def test_header_names_in_any_case(self):
        upper = {k.upper(): v for k, v in self.headers.items()}
        self.verifier.verify(upper, self.body, now=self.now)
        message = email.message.Message()
        for name, value in self.headers.items():
            message[name.title()] = value  # Webhook-Id, ...
        self.verifier.verify(message, self.body, now=self.now)

    def test_tampered_body(self):
        self.refused(self.headers, body=self.body.replace(b"Bombay", b"Bomba_"),
                     reason="no signature matches")

    def test_tampered_id(self):
        self.refused(dict(self.headers, **{"webhook-id": "other"}), reason="no signature matches")

    def test_wrong_secret(self):
        self.refused(signed_headers(self.body, secret=OTHER_SECRET, timestamp=self.now),
                     reason="no signature matches")

    def test_old_timestamp(self):
        self.refused(signed_headers(self.body, timestamp=self.now - 301), reason="too old")

    def test_future_timestamp(self):
        self.refused(signed_headers(self.body, timestamp=self.now + 301), reason="future")

    def test_within_tolerance_either_way(self):
        for delta in (-300, 300):
            headers = signed_headers(self.body, timestamp=self.now + delta)
            self.verifier.verify(headers, self.body, now=self.now)

    def test_custom_tolerance(self):
        headers = signed_headers(self.body, timestamp=self.now - 20)
        with self.assertRaisesRegex(pt.SignatureError, "too old"):
            pt.Verifier(SECRET, tolerance=10).verify(headers, self.body, now=self.now)

    def test_timestamp_not_an_integer(self):
        for stamp in ("soon", "1.5", "1e9", "", " "):
            with self.subTest(stamp=stamp):
                headers = dict(self.headers, **{"webhook-timestamp": stamp})
                self.refused(headers, reason="not an integer|missing webhook-timestamp")
        self.refused(dict(self.headers, **{"webhook-timestamp": "12abc"}),
                     reason="not an integer")

    def test_missing_headers(self):
        for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
            with self.subTest(name=name):
                headers = {k: v for k, v in self.headers.items() if k != name}
                self.refused(headers, reason=f"missing {name} header")

    def test_one_good_v1_among_several(self):
        good = self.headers["webhook-signature"]
        bad = pt.sign(OTHER_SECRET, RUN_ID, self.now, self.body)
        for value in (f"{bad} {good}", f"{good} {bad}", f"v1,bm90IGl0 {good} v1a,xyz"):
            with self.subTest(value=value):
                headers = dict(self.headers, **{"webhook-signature": value})
                self.verifier.verify(headers, self.body, now=self.now)

    def test_other_versions_are_ignored(self):
        good_digest = self.headers["webhook-signature"][len("v1,"):]
        headers = dict(self.headers, **{"webhook-signature": f"v2,{good_digest}"})
        self.refused(headers, reason="no v1 signature")
        headers = dict(self.headers, **{"webhook-signature": f"v2,{good_digest} v1,bm9wZQ=="})
        self.refused(headers, reason="no signature matches")

    def test_garbage_signature(self):
        for value in ("nonsense", "v1,", "v1,ü"):
            with self.subTest(value=value):
                self.refused(dict(self.headers, **{"webhook-signature": value}))


class ParseTest(unittest.TestCase):
    def test_full_request(self):
        run = pt.TaskRun.parse(request_body())
        self.assertEqual(run.run_id, RUN_ID)
        self.assertEqual(run.attempt, 1)
        self.assertEqual(run.binding, pt.Binding(
            id="0191d3a8-0000-7000-8000-0000000000b1",
            name="city-normalizer",
            form_id="0191d3a8-0000-7000-8000-0000000000f1",
        ))
        self.assertEqual(run.settings, {"field": "city"})
        sub = run.submission
        self.assertEqual(sub.form_id, "0191d3a8-0000-7000-8000-0000000000f1")
        self.assertEqual(sub.submission_id, "0191d3a8-0000-7000-8000-0000000000s1")
        self.assertEqual(sub.answers, {"city": "Bombay", "age": 30})
        self.assertEqual(sub.submitted_at, dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc))
        self.assertEqual(sub.metadata, {"request_id": "r-1"})

    def test_an_edit_says_its_event_and_revision(self):
        run = pt.TaskRun.parse(request_body())
        self.assertEqual((run.submission.event, run.submission.revision), ("created", 0))
        data = json.loads(request_body())
        data["submission"].update({"event": "updated", "revision": 7})
        sub = pt.TaskRun.parse(json.dumps(data).encode()).submission
        self.assertEqual((sub.event, sub.revision), ("updated", 7))
        for bad in ({"event": "edited"}, {"revision": -1}, {"revision": "7"}):
            with self.subTest(bad=bad):
                data = json.loads(request_body())
                data["submission"].update(bad)
                with self.assertRaises(ValueError):
                    pt.TaskRun.parse(json.dumps(data).encode())

    def test_str_body(self):
        self.assertEqual(pt.TaskRun.parse(request_body().decode()).run_id, RUN_ID)

    def test_settings_and_metadata_default_to_empty(self):
        data = json.loads(request_body())
        del data["settings"]
        del data["submission"]["metadata"]
        run = pt.TaskRun.parse(json.dumps(data).encode())
        self.assertEqual(run.settings, {})
        self.assertEqual(run.submission.metadata, {})
        data["settings"] = None
        self.assertEqual(pt.TaskRun.parse(json.dumps(data).encode()).settings, {})

    def test_submitted_at_forms(self):
        cases = {
            "2026-12-03T10:00:00.123456789Z":
                dt.datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=dt.timezone.utc),
            "2026-12-03T10:00:00.5Z":
                dt.datetime(2026, 12, 3, 10, 0, 0, 500000, tzinfo=dt.timezone.utc),
            "2026-12-03T11:30:00+01:30":
                dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc),
            "2026-12-03t10:00:00z": dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc),
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                data = json.loads(request_body())
                data["submission"]["submitted_at"] = text
                parsed = pt.TaskRun.parse(json.dumps(data).encode()).submission.submitted_at
                self.assertEqual(parsed, expected)
                self.assertIsNotNone(parsed.tzinfo)

    def bad(self, body, reason):
        with self.assertRaisesRegex(ValueError, reason) as ctx:
            pt.TaskRun.parse(body)
        self.assertNotIn("\n", str(ctx.exception))

    def test_not_json(self):
        self.bad(b"{not json", "not JSON")
        self.bad(b"\xff\xfe", "not JSON")
        self.bad(b"", "not JSON")

    def test_not_an_object(self):
        self.bad(b"[1, 2]", "body must be a JSON object")

    def test_wrong_type(self):
        self.bad(request_body(type="submission.created"), 'type is "submission.created"')
        data = json.loads(request_body())
        del data["type"]
        self.bad(json.dumps(data).encode(), "type is null")

    def test_missing_fields(self):
        for path in ("run_id", "attempt", "binding", "submission", "binding.name",
                     "submission.answers", "submission.submitted_at", "submission.form_id"):
            with self.subTest(path=path):
                data = json.loads(request_body())
                parts = path.split(".")
                target = data
                for part in parts[:-1]:
                    target = target[part]
                del target[parts[-1]]
                self.bad(json.dumps(data).encode(), f"missing field {path}")

    def test_wrong_field_types(self):
        self.bad(request_body(attempt="1"), "attempt must be a positive integer")
        self.bad(request_body(attempt=0), "attempt must be a positive integer")
        self.bad(request_body(attempt=True), "attempt must be a positive integer")
        self.bad(request_body(run_id=5), "run_id must be a string")
        self.bad(request_body(settings=[1]), "settings must be a JSON object")
        data = json.loads(request_body())
        data["submission"]["answers"] = "Bombay"
        self.bad(json.dumps(data).encode(), "submission.answers must be a JSON object")
        data = json.loads(request_body())
        data["submission"]["submitted_at"] = "yesterday"
        self.bad(json.dumps(data).encode(), "not an RFC 3339 date-time")
        data["submission"]["submitted_at"] = "2026-02-30T10:00:00Z"
        self.bad(json.dumps(data).encode(), "not a valid date-time")


class AnswerTest(unittest.TestCase):
    def test_ok(self):
        answer = pt.Answer.ok({"city": "Mumbai"})
        self.assertEqual(answer.status_code, 200)
        self.assertEqual(json.loads(answer.body()),
                         {"status": "ok", "flags": [], "output": {"city": "Mumbai"}})
        self.assertEqual(answer.status, "ok")
        self.assertEqual(answer.headers(), {"content-type": "application/json"})

    def test_ok_without_output(self):
        self.assertEqual(json.loads(pt.Answer.ok().body()),
                         {"status": "ok", "flags": [], "output": {}})

    def test_flagged(self):
        answer = pt.Answer.flagged(
            [pt.Flag("city", "known_city", "we do not know the city “X”"),
             {"field": "age", "rule": "range", "message": "too young"}],
            {"city": None},
        )
        self.assertEqual(answer.status_code, 200)
        self.assertEqual(json.loads(answer.body()), {
            "status": "flagged",
            "flags": [
                {"field": "city", "rule": "known_city", "message": "we do not know the city “X”"},
                {"field": "age", "rule": "range", "message": "too young"},
            ],
            "output": {"city": None},
        })
        self.assertIn("“X”".encode(), answer.body())  # UTF-8, not \u escapes
        self.assertEqual(answer.flags[0], pt.Flag("city", "known_city", "we do not know the city “X”"))

    def test_flagged_without_flags_is_ok(self):
        self.assertEqual(pt.Answer.flagged([]), pt.Answer.ok())
        self.assertEqual(pt.Answer.flagged([]).status, "ok")

    def test_bad_flags(self):
        with self.assertRaises(ValueError):
            pt.Answer.flagged([{"field": "city"}])
        with self.assertRaises(TypeError):
            pt.Answer.flagged(["city"])

    def test_fatal_error(self):
        answer = pt.Answer.error("no such list")
        self.assertEqual(answer.status_code, 422)
        self.assertEqual(json.loads(answer.body()), {"error": "no such list", "retryable": False})
        self.assertFalse(answer.retryable)
        self.assertEqual(answer.message, "no such list")

    def test_retryable_error(self):
        answer = pt.Answer.error("upstream down", retryable=True, retry_after=30)
        self.assertEqual(answer.status_code, 503)
        self.assertEqual(json.loads(answer.body()), {"error": "upstream down", "retryable": True})
        self.assertEqual(answer.headers()["retry-after"], "30")
        with self.assertRaises(ValueError):
            pt.Answer.error("x", retry_after=30)

    def test_output_that_is_not_json(self):
        with self.assertRaises((TypeError, ValueError)):
            pt.Answer.ok({"when": dt.datetime.now()}).body()
        with self.assertRaises(ValueError):
            pt.Answer.ok({"x": float("nan")}).body()


def city_task(run):
    city = run.submission.answers.get("city")
    if city == "boom":
        raise RuntimeError("the city database is down")
    if city == "silent":
        raise KeyError
    if city == "wrong":
        return {"status": "ok"}
    if city == "unserializable":
        return pt.Answer.ok({"x": object()})
    if city == "later":
        return pt.Answer.error("busy", retryable=True, retry_after=7)
    if city == "Bombay":
        return pt.Answer.ok({"city": "Mumbai", "input": city, "attempt": run.attempt})
    return pt.Answer.flagged([pt.Flag("city", "known_city", f"we do not know the city “{city}”")])


def with_city(city):
    data = json.loads(request_body())
    data["submission"]["answers"]["city"] = city
    return json.dumps(data).encode()


class HandleTest(unittest.TestCase):
    def setUp(self):
        self.verifier = pt.Verifier(SECRET)

    def call(self, body, headers=None):
        headers = signed_headers(body) if headers is None else headers
        status, out = pt.handle(self.verifier, headers, body, city_task)
        self.assertIsInstance(out, bytes)
        return status, json.loads(out)

    def test_ok(self):
        self.assertEqual(self.call(request_body()), (200, {
            "status": "ok", "flags": [], "output": {"city": "Mumbai", "input": "Bombay", "attempt": 1},
        }))

    def test_flagged(self):
        status, out = self.call(with_city("Atlantis"))
        self.assertEqual(status, 200)
        self.assertEqual(out["status"], "flagged")
        self.assertEqual(out["flags"][0]["rule"], "known_city")

    def test_bad_signature_is_401(self):
        body = request_body()
        with self.assertLogs("postsub_task", "WARNING"):
            status, out = self.call(body, signed_headers(body, secret=OTHER_SECRET))
        self.assertEqual(status, 401)
        self.assertEqual(out, {"error": "bad signature: no signature matches", "retryable": False})
        with self.assertLogs("postsub_task", "WARNING"):
            status, out = self.call(body, {})
        self.assertEqual(status, 401)
        self.assertIn("missing webhook-id header", out["error"])

    def test_bad_request_is_400(self):
        with self.assertLogs("postsub_task", "WARNING"):
            status, out = self.call(b'{"type": "task.run"}')
        self.assertEqual(status, 400)
        self.assertEqual(out["retryable"], False)
        self.assertTrue(out["error"].startswith("bad request: "), out)

    def test_task_exception_is_500_retryable(self):
        with self.assertLogs("postsub_task", "ERROR"):
            self.assertEqual(self.call(with_city("boom")),
                             (500, {"error": "the city database is down", "retryable": True}))
        with self.assertLogs("postsub_task", "ERROR"):
            self.assertEqual(self.call(with_city("silent")),
                             (500, {"error": "KeyError", "retryable": True}))

    def test_task_returning_something_else_is_500(self):
        with self.assertLogs("postsub_task", "ERROR"):
            status, out = self.call(with_city("wrong"))
        self.assertEqual(status, 500)
        self.assertIn("not an Answer", out["error"])
        with self.assertLogs("postsub_task", "ERROR"):
            status, out = self.call(with_city("unserializable"))
        self.assertEqual(status, 500)

    def test_task_error_answers(self):
        self.assertEqual(self.call(with_city("later")), (503, {"error": "busy", "retryable": True}))
        answer = pt.respond(self.verifier, signed_headers(with_city("later")), with_city("later"),
                            city_task)
        self.assertEqual(answer.retry_after, 7)


class ServeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = pt.serve(city_task, SECRET, port=0)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join(5)

    def post(self, body, headers, path=""):
        request = urllib.request.Request(self.server.url + path, data=body, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, dict(err.headers), json.loads(err.read())

    def test_url(self):
        self.assertRegex(self.server.url, r"^http://127\.0\.0\.1:[1-9][0-9]*/$")

    def test_round_trip(self):
        body = request_body()
        status, headers, out = self.post(body, signed_headers(body))
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(out["output"]["city"], "Mumbai")

    def test_any_path(self):
        body = request_body()
        self.assertEqual(self.post(body, signed_headers(body), path="hooks/city")[0], 200)

    def test_bad_signature(self):
        body = request_body()
        with self.assertLogs("postsub_task", "WARNING"):
            status, _, out = self.post(body, signed_headers(body, secret=OTHER_SECRET))
        self.assertEqual((status, out["retryable"]), (401, False))

    def test_retry_after_header(self):
        body = with_city("later")
        status, headers, out = self.post(body, signed_headers(body))
        self.assertEqual((status, headers.get("retry-after"), out["retryable"]), (503, "7", True))

    def test_get_is_refused(self):
        with self.assertRaises(urllib.error.HTTPError) as ctx:
            urllib.request.urlopen(self.server.url, timeout=5)
        with ctx.exception as err:
            self.assertEqual(err.code, 405)
            self.assertEqual(err.headers["allow"], "POST")


class RunTest(unittest.TestCase):
    def test_run_calls_ready_and_stops(self):
        servers = []

        def ready(server):
            servers.append(server)
            threading.Thread(target=server.shutdown, daemon=True).start()

        pt.run(city_task, SECRET, port=0, ready=ready)
        self.assertEqual(len(servers), 1)
        self.assertTrue(servers[0].url.startswith("http://127.0.0.1:"))

    def test_bad_secret(self):
        with self.assertRaises(ValueError):
            pt.serve(city_task, "not-a-secret")


if __name__ == "__main__":
    unittest.main()
