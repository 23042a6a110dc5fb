"""Fixtures shared by every test directory."""

from __future__ import annotations

from wirepair import make_pair

__all__ = ["make_pair"]
