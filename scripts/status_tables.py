"""Print the scene statuses, failure reasons and worker retirements of
whisperjav_enhance/status.py as markdown tables: the source of the tables in docs/cli.md.

    python scripts/status_tables.py            # all three tables
    python scripts/status_tables.py reasons    # only the failure reasons

Paste the output into docs/cli.md after a change to status.py (a test compares them)."""

from __future__ import annotations

import sys

from whisperjav_enhance.status import REASON_MEANINGS, RETIREMENT_MEANINGS, STATUS_MEANINGS

TABLES = {
    "statuses": ("status", STATUS_MEANINGS),
    "reasons": ("reason", REASON_MEANINGS),
    "retirements": ("retirement reason", RETIREMENT_MEANINGS),
}


def table(title: str, meanings: dict) -> str:
    """One markdown table: the code in backticks, then its meaning, in declaration order."""
    rows = [f"| {title} | meaning |", "|---|---|"]
    rows += [f"| `{code}` | {meaning} |" for code, meaning in meanings.items()]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    names = argv or list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        print(f"unknown table {', '.join(unknown)}; choose from {', '.join(TABLES)}", file=sys.stderr)
        return 2
    print("\n\n".join(table(*TABLES[n]) for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
