"""The export's generated C, built and run: on this machine (``cc``) and on an emulated
Cortex-M (``arm-none-eabi-gcc`` + ``qemu-system-arm``), checked against the simulator's
kernels and TFLM, and measured on the binary (flash, RAM, stack, instructions).

``targets`` maps MCU cores to GCC flags and QEMU boards, ``toolchain`` finds the tools,
``build`` compiles and links (the profile's memory in the linker script), ``run`` runs a
harness and reads its output, ``check`` compares and measures, ``train_check`` does the same
for the on-device training step.
"""
