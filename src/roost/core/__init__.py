"""Core value types and validation; no ML framework is imported here."""
