"""Text cells of CSV exports, made safe to open in a spreadsheet."""

from __future__ import annotations

# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (tab and carriage return too, per OWASP's CSV-injection guidance).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(cell: str) -> str:
    """Prefix a text cell that a spreadsheet would run as a formula with a single quote,
    which spreadsheets show as text (OWASP). Numbers are never passed here: -1.5 stays
    a number."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell
