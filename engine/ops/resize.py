"""Resize (and Upsample, mapped onto it at import)."""

from __future__ import annotations
