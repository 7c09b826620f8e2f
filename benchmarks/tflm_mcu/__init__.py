"""TFLite Micro + CMSIS-NN on the emulated Cortex-M4: its build and harness (see build.py)."""
