"""Merging the answers of every deployment to a route that spans models, as one vlserve server
over all their models would answer it."""

from __future__ import annotations

import json
import re

from starlette.responses import JSONResponse, Response

from .ray_replica import REPLICA_HEADER

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{)?")


class Answer:
    """One deployment's whole (not streamed) answer."""

    def __init__(self, status: int, headers: list, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: bytes) -> str:
        return next((v.decode("latin-1") for k, v in self.headers if k.lower() == name), "")


def merge_models(order: list[str], answers: list[Answer]) -> Response:
    """/v1/models: every deployment's models, in the repository's order."""
    rank = {name: i for i, name in enumerate(order)}
    docs = [json.loads(a.body) for a in answers]
    return JSONResponse({
        "models": sorted((m for d in docs for m in d["models"]), key=lambda m: rank.get(m["name"], len(rank))),
        "object": "list",
        "data": sorted((m for d in docs for m in d["data"]), key=lambda m: rank.get(m["id"], len(rank)))})


def merge_metrics(names: list[str], answers: list[Answer]) -> Response:
    """/metrics: one exposition, each family's samples from every deployment, labelled with the
    deployment and the replica that answered (one replica per deployment per scrape)."""
    families: dict[str, list[str]] = {}
    current = None
    for name, answer in zip(names, answers):
        labels = f'deployment="{name}",replica="{answer.header(REPLICA_HEADER.encode())}"'
        for line in answer.body.decode().splitlines():
            if line.startswith("# "):  # HELP / TYPE: a family begins; kept once
                current = line.split(" ", 3)[2]
                head = families.setdefault(current, [])
                if line not in head:
                    head.append(line)
            elif line and current is not None:
                families[current].append(SAMPLE.sub(lambda m: m.group(1) + "{" + labels +
                                                    ("," if m.group(2) else "}"), line, count=1))
    text = "".join(line + "\n" for lines in families.values() for line in _heads_first(lines))
    return Response(text.encode(), 200, media_type=answers[0].header(b"content-type"))


def _heads_first(lines: list[str]) -> list[str]:
    return [x for x in lines if x.startswith("# ")] + [x for x in lines if not x.startswith("# ")]
