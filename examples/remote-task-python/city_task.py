"""A postsub `remote` task (sync) that normalizes the city a form was given.

"Bombay", "mumbai " and "MUMBAI" all become "Mumbai"; a city it does not know is flagged.
The binding's settings may name the answer to read: {"field": "town"} (default "city").

    POSTSUB_TASK_SECRET=whsec_... python city_task.py --port 8700

prints `listening on http://127.0.0.1:8700/` once it is ready.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import unicodedata
from typing import Dict, List

import postsub_task as pt

# Canonical name -> the other names people write: old names, spellings, slang.
CITIES: Dict[str, List[str]] = {
    "Mumbai": ["Bombay"],
    "Bengaluru": ["Bangalore", "Blr"],
    "Chennai": ["Madras"],
    "Kolkata": ["Calcutta"],
    "Pune": ["Poona"],
    "Gurugram": ["Gurgaon"],
    "New York": ["NYC", "New York City", "NY City", "The Big Apple", "Big Apple"],
    "Los Angeles": ["LA", "L.A."],
    "San Francisco": ["SF", "San Fran", "Frisco"],
    "Beijing": ["Peking", "Peiping"],
    "Ho Chi Minh City": ["Saigon", "HCMC"],
    "Yangon": ["Rangoon"],
    "Istanbul": ["Constantinople"],
    "Saint Petersburg": ["St Petersburg", "St. Petersburg", "Leningrad", "Petrograd"],
    "Kyiv": ["Kiev"],
    "Mexico City": ["CDMX", "Ciudad de México", "Ciudad de Mexico"],
    "Munich": ["München", "Muenchen"],
}


def key(name: str) -> str:
    """A name as compared: Unicode-normalized, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


LOOKUP: Dict[str, str] = {
    key(alias): canonical
    for canonical, aliases in CITIES.items()
    for alias in [canonical, *aliases]
}


def normalize(name: str) -> str | None:
    """The canonical name of a city, or None if it is not one we know."""
    return LOOKUP.get(key(name))


def task(run: pt.TaskRun) -> pt.Answer:
    """Answer one run: ok with the canonical city, or flagged."""
    field = run.settings.get("field", "city")
    if not isinstance(field, str) or not field:
        # A binding config problem: retrying will not fix it.
        return pt.Answer.error("settings.field must be a non-empty string")
    given = run.submission.answers.get(field)
    if not isinstance(given, str) or not given.strip():
        return pt.Answer.flagged(
            [pt.Flag(field, "required", "please tell us your city")],
            {"city": None, "input": given},
        )
    city = normalize(given)
    if city is None:
        return pt.Answer.flagged(
            [pt.Flag(field, "known_city", f"we do not know the city “{given}”")],
            {"city": None, "input": given},
        )
    return pt.Answer.ok({"city": city, "input": given})


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="postsub remote task: normalize a city")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8700, help="port; 0 picks a free one (8700)")
    args = parser.parse_args(argv)
    secret = os.environ.get("POSTSUB_TASK_SECRET")
    if not secret:
        parser.error("set POSTSUB_TASK_SECRET to the binding's secret (whsec_...)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def ready(server: pt.TaskServer) -> None:
        print(f"listening on {server.url}", flush=True)

    try:
        pt.Verifier(secret)
    except ValueError as err:
        parser.error(f"POSTSUB_TASK_SECRET: {err}")
    try:
        pt.run(task, secret, args.host, args.port, ready=ready)
    except OSError as err:
        print(f"cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
