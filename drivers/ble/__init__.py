"""Bluetooth LE drivers: profiles, mapping of decoded GATT values to Readings."""

from __future__ import annotations
