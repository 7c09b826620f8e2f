"""Firmware simulator: run and size int8 block models on a microcontroller profile.

Torch-free by design (a firmware engineer installs only this side). It reads an export
directory (``ctxconv.blockgraph.bundle.load_export``) and sets it against an MCU:

* ``profiles``: MCU profiles (packaged ``mcu/*.yaml`` + ``CTXCONV_MCU_DIR``)
* ``fit``: plans for a profile and the fit verdict with what to change
* ``cost``: MACs, cycles, latency and energy per op
* ``simulate``: one report per export, profile and mode; ``firmware_check``: the
  generated C built and run on the host and the emulated MCU
* ``cli`` / ``bench_cli``: ``ctxconv-sim`` and ``ctxconv-bench``
"""
