"""Tests of the city task: run with `python -m unittest -v` in this directory."""

import base64
import json
import os
import subprocess
import sys
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHONPATH = []
try:
    import postsub_task as pt
except ImportError:  # not installed: use the source tree
    PYTHONPATH = [os.path.join(HERE, os.pardir, os.pardir, "clients", "python", "src")]
    sys.path[:0] = PYTHONPATH
    import postsub_task as pt

sys.path.insert(0, HERE)
import city_task  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"city task test secret").decode()
RUN_ID = "0191d3a8-0000-7000-8000-000000000001"


def child_env(**extra):
    """The environment of the example run as a program (without the caller's secret)."""
    env = {k: v for k, v in os.environ.items() if k != "POSTSUB_TASK_SECRET"}
    if PYTHONPATH:
        rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(PYTHONPATH + rest)
    env.update(extra)
    return env


def body(answers, settings=None):
    request = {
        "type": "task.run",
        "run_id": RUN_ID,
        "attempt": 1,
        "binding": {"id": "0191d3a8-0000-7000-8000-0000000000b1", "name": "city",
                    "form_id": "0191d3a8-0000-7000-8000-0000000000f1"},
        "settings": settings if settings is not None else {},
        "submission": {"form_id": "0191d3a8-0000-7000-8000-0000000000f1",
                       "submission_id": "0191d3a8-0000-7000-8000-0000000000a1",
                       "answers": answers, "submitted_at": "2026-12-03T10:00:00Z",
                       "metadata": {}},
    }
    return json.dumps(request).encode()


def answer(answers, settings=None):
    result = city_task.task(pt.TaskRun.parse(body(answers, settings)))
    return result.status_code, json.loads(result.body())


class NormalizeTest(unittest.TestCase):
    def test_normalizations(self):
        cases = {
            "Mumbai": ["Bombay", "Mumbai", "bombay ", "  BOMBAY", "mumbai"],
            "Bengaluru": ["Bengaluru", "Bangalore", "Blr", "BLR", "bangalore"],
            "Chennai": ["Madras", "Chennai"],
            "Kolkata": ["Calcutta", "Kolkata"],
            "New York": ["NYC", "New York", "New York City", "the big apple", "new  york\tcity"],
            "Beijing": ["Peking", "Beijing"],
            "Ho Chi Minh City": ["Saigon", "Ho Chi Minh City", "ho chi minh city"],
            "Saint Petersburg": ["Leningrad", "St. Petersburg"],
            "Munich": ["München", "MÜNCHEN"],
        }
        for canonical, inputs in cases.items():
            for given in inputs:
                with self.subTest(given=given):
                    self.assertEqual(answer({"city": given}), (200, {
                        "status": "ok", "flags": [],
                        "output": {"city": canonical, "input": given},
                    }))

    def test_every_alias_maps_to_its_city(self):
        for canonical, aliases in city_task.CITIES.items():
            for alias in [canonical, *aliases]:
                self.assertEqual(city_task.normalize(alias), canonical)
                self.assertEqual(city_task.normalize(f" {alias.upper()} "), canonical)

    def test_unknown_city(self):
        self.assertEqual(answer({"city": "Atlantis"}), (200, {
            "status": "flagged",
            "flags": [{"field": "city", "rule": "known_city",
                       "message": "we do not know the city “Atlantis”"}],
            "output": {"city": None, "input": "Atlantis"},
        }))

    def test_missing_or_not_text(self):
        for answers in ({}, {"city": None}, {"city": ""}, {"city": "   "}, {"city": 42},
                        {"city": ["Mumbai"]}):
            with self.subTest(answers=answers):
                status, out = answer(answers)
                self.assertEqual(status, 200)
                self.assertEqual(out["status"], "flagged")
                self.assertEqual([(f["field"], f["rule"]) for f in out["flags"]],
                                 [("city", "required")])
                self.assertEqual(out["output"], {"city": None, "input": answers.get("city")})

    def test_settings_field(self):
        settings = {"field": "town"}
        self.assertEqual(answer({"town": "Madras", "city": "Atlantis"}, settings), (200, {
            "status": "ok", "flags": [], "output": {"city": "Chennai", "input": "Madras"},
        }))
        status, out = answer({"town": "Gotham"}, settings)
        self.assertEqual(out["flags"][0]["field"], "town")
        self.assertEqual(out["flags"][0]["rule"], "known_city")
        status, out = answer({"city": "Mumbai"}, settings)
        self.assertEqual((out["flags"][0]["field"], out["flags"][0]["rule"]), ("town", "required"))

    def test_bad_settings_field_is_fatal(self):
        for settings in ({"field": ""}, {"field": 3}):
            with self.subTest(settings=settings):
                self.assertEqual(answer({"city": "Mumbai"}, settings), (422, {
                    "error": "settings.field must be a non-empty string", "retryable": False,
                }))


class ServerTest(unittest.TestCase):
    """The example run as a program, on a free port, answering signed requests."""

    @classmethod
    def setUpClass(cls):
        env = child_env(POSTSUB_TASK_SECRET=SECRET, PYTHONUNBUFFERED="1")
        cls.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "city_task.py"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        line = cls.process.stdout.readline()
        if not line.startswith("listening on http://127.0.0.1:"):
            cls.process.kill()
            cls.process.wait()
            raise RuntimeError(f"the example did not start: {line!r}")
        cls.url = line.split()[-1]

    @classmethod
    def tearDownClass(cls):
        cls.process.terminate()
        cls.process.wait(10)
        cls.process.stdout.close()

    def post(self, data, secret=SECRET):
        timestamp = int(time.time())
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "content-type": "application/json",
            "webhook-id": RUN_ID,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": pt.sign(secret, RUN_ID, timestamp, data),
        })
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def test_url_line(self):
        self.assertRegex(self.url, r"^http://127\.0\.0\.1:[1-9][0-9]*/$")

    def test_signed_round_trip(self):
        self.assertEqual(self.post(body({"city": "bombay "})), (200, {
            "status": "ok", "flags": [], "output": {"city": "Mumbai", "input": "bombay "},
        }))

    def test_unknown_city_round_trip(self):
        status, out = self.post(body({"town": "Saigon"}, {"field": "town"}))
        self.assertEqual((status, out["output"]["city"]), (200, "Ho Chi Minh City"))
        status, out = self.post(body({"city": "Ys"}))
        self.assertEqual((status, out["status"], out["flags"][0]["message"]),
                         (200, "flagged", "we do not know the city “Ys”"))

    def test_wrong_secret_is_401(self):
        other = "whsec_" + base64.b64encode(b"not the secret").decode()
        self.assertEqual(self.post(body({"city": "Bombay"}), secret=other),
                         (401, {"error": "bad signature: no signature matches",
                                "retryable": False}))


class MainTest(unittest.TestCase):
    def run_main(self, env):
        return subprocess.run(
            [sys.executable, os.path.join(HERE, "city_task.py"), "--port", "0"],
            capture_output=True, text=True, timeout=30,
            env=child_env(**env),
        )

    def test_secret_is_required(self):
        result = self.run_main({})
        self.assertEqual(result.returncode, 2)
        self.assertIn("POSTSUB_TASK_SECRET", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_bad_secret(self):
        result = self.run_main({"POSTSUB_TASK_SECRET": "hunter2"})
        self.assertEqual(result.returncode, 2)
        self.assertIn("whsec_", result.stderr)


if __name__ == "__main__":
    unittest.main()
