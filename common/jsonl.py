"""JSON-lines records: the one format the controllers, agents and runner log in.

Writers append and flush every record, so a reader (or a crash) never loses a finished one;
readers skip a partly written last line.
"""

from __future__ import annotations

import json
from pathlib import Path


class JsonLinesWriter:
    def __init__(self, path: Path | str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonLinesWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a missing file has none, a partly written line is skipped."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return records
