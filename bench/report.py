# SPDX-License-Identifier: BSD-2-Clause
"""Printing benchmark figures."""

__all__ = ["table"]


def table(rows: list[dict], columns: list[str]) -> str:
    """`rows` as a right-aligned text table of `columns`, with a header line."""
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).rjust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)
