"""Test-only helpers: an MQTT subscriber that records what the backend would receive."""
