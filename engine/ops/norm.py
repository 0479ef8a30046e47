"""Normalisations: Batch/Layer/Instance/Group/RMS, LRN, MVN, LpNormalization."""

from __future__ import annotations
