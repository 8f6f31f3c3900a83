"""Device emulators that speak the real protocols: pty serial devices and bumble BLE peripherals.

Shipped in the package (not only under tests/) because ``wardlink demo`` and
``wardlink simulate`` run them.
"""
