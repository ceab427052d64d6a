"""Checks per chapter: ``check_<exercise>(fn)`` compares ``fn`` with known outputs."""
