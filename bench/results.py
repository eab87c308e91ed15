"""What every benchmark writes: a JSON record under bench/results/ and a Markdown value table."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Settings that say where results go, not what was measured.
_NOT_SETTINGS = ("results_dir", "keep")


def settings_of(settings: Any) -> dict[str, Any]:
    return {k: v for k, v in asdict(settings).items() if k not in _NOT_SETTINGS}


def save(name: str, results_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``doc`` as bench/results/<name>-<UTC stamp>.json, with the benchmark and date."""
    results_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    path = results_dir / f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    record = {"benchmark": name, "date": now.strftime("%Y-%m-%d %H:%M UTC"), **doc}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def value_table(rows: list[tuple[str, Any]]) -> list[str]:
    """A two-column Markdown table; floats with two decimals."""
    lines = ["| metric | value |", "| --- | ---: |"]
    for label, value in rows:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"| {label} | {text} |")
    return lines
