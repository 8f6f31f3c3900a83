"""Real counterparts for tests and the demo.

A Mosquitto per session, pty serial devices, bumble BLE peripherals.
"""
