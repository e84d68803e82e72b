"""Talas microphone modules: control protocol (specs/mic-module.md), driver and simulator.

- :mod:`hardware.framing`, :mod:`hardware.messages`, :mod:`hardware.connection`:
  the sans-IO protocol (bytes in, events out; no I/O, no clocks).
- :mod:`hardware.driver`: ``open_mic`` (serial or TCP) yielding a ``MicModule``.
- :mod:`hardware.hotplug`: serial ports appearing and disappearing.
- :mod:`hardware.simulator`: ``talas-mic-sim``, a simulated module.
- :mod:`hardware.errors`: ``MicError`` and its subclasses.
"""
