"""Serial (USB-serial, RS-232, Bluetooth SPP) pulse oximeters: Nonin, Contec, Masimo.

``protocols/`` holds the pure decoders, ``aggregate`` the pure interval thinning,
``transport`` the pyserial port driven by the event loop, ``driver`` the session.
See docs/serial.md.
"""
