"""The generated C library as a firmware project takes it: a CMake static-library target, a
Makefile fragment and an example that classifies one image, built with the host compiler
and with arm-none-eabi-gcc, the example run on the host and under QEMU."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctxconv.blockgraph.bundle import load_export
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.runtimes.factory import make_runners
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools

needs_cmake = pytest.mark.skipif(shutil.which("cmake") is None,
                                 reason="no cmake: apt-get install -y cmake")
needs_arm = pytest.mark.skipif(missing_arm_tools() is not None, reason=str(missing_arm_tools()))
LINE = re.compile(r"ctxconv: class (\d+) \((.+?)\), label (\d+) \((.+?)\)")


@pytest.fixture(scope="module")
def package(digits_export, tmp_path_factory) -> tuple[Path, int, int, list[str]]:
    """A copy of the export's c/ folder, the reference kernels' class of the example's
    image (the first calibration vector), its label, and the class names."""
    export = Path(digits_export["export_dir"])
    c_dir = tmp_path_factory.mktemp("package") / "c"
    shutil.copytree(export / "c", c_dir)
    bundle = load_export(export)
    raw, labels = bundle.train_vectors(1)
    pipe = BlockPipeline(bundle.manifest, make_runners(bundle, "reference"))
    predicted = int(pipe.predict(raw, bundle.manifest["modes"][0])[0])
    return c_dir, predicted, int(labels[0]), list(digits_export["dataset"]["class_names"])


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _says_its_class(output: str, predicted: int, label: int, names: list[str]) -> None:
    m = LINE.search(output)
    assert m, output
    assert (int(m[1]), m[2], int(m[3]), m[4]) == (predicted, names[predicted], label,
                                                   names[label])


def test_package_files_are_written_and_sealed(package, digits_export):
    c_dir = package[0]
    for name in ("CMakeLists.txt", "ctxconv.mk", "example/main.c"):
        assert (c_dir / name).is_file(), name
        assert f"c/{name}" in digits_export["files"], name  # covered by the manifest digest
    assert "add_library(ctxconv STATIC ctxconv_model.c ctxconv_kernels.c ctxconv_train.c)" in (
        c_dir / "CMakeLists.txt").read_text()


@needs_cmake
def test_cmake_project_builds_and_the_example_classifies_on_the_host(package, tmp_path):
    c_dir, predicted, label, names = package
    build = tmp_path / "build"
    _run(["cmake", "-S", str(c_dir), "-B", str(build)], tmp_path)
    _run(["cmake", "--build", str(build)], tmp_path)
    assert (build / "libctxconv.a").is_file()
    _says_its_class(_run([str(build / "ctxconv_example")], tmp_path), predicted, label, names)


def test_makefile_fragment_builds_the_example(package, tmp_path):
    c_dir, predicted, label, names = package
    (tmp_path / "Makefile").write_text(
        f"include {c_dir}/ctxconv.mk\n"
        "example: $(CTXCONV_SOURCES) $(CTXCONV_DIR)/example/main.c\n"
        "\tcc -std=c99 -O2 $(CTXCONV_CFLAGS) $^ -o $@\n")
    _run(["make", "example"], tmp_path)
    _says_its_class(_run([str(tmp_path / "example")], tmp_path), predicted, label, names)


@needs_cmake
@needs_arm
def test_cmake_static_library_for_a_cortex_m4_runs_the_example_under_qemu(package, tmp_path):
    """The CMake target cross-compiled with arm-none-eabi-gcc, linked with the example, a
    start-up file and a retargeted printf (what a firmware project supplies), run on the
    emulated nRF52840's core."""
    from ctxconv.runtimes.firmware.build import harness_dir, linker_script
    from ctxconv.runtimes.firmware.run import _execute
    from ctxconv.runtimes.firmware.targets import target_for
    from ctxconv.runtimes.firmware.toolchain import arm_tools, find
    from ctxconv.sim.profiles import load_profile

    c_dir, predicted, label, names = package
    profile = load_profile("nrf52840")
    target = target_for(profile)
    gcc = arm_tools()["arm-none-eabi-gcc"]
    build = tmp_path / "build"
    _run(["cmake", "-S", str(c_dir), "-B", str(build), "-DCMAKE_SYSTEM_NAME=Generic",
          "-DCMAKE_SYSTEM_PROCESSOR=arm", f"-DCMAKE_C_COMPILER={gcc}",
          "-DCMAKE_TRY_COMPILE_TARGET_TYPE=STATIC_LIBRARY", "-DCTXCONV_BUILD_EXAMPLE=OFF",
          f"-DCMAKE_C_FLAGS={' '.join(target.cflags)}"], tmp_path)
    _run(["cmake", "--build", str(build)], tmp_path)
    library = build / "libctxconv.a"
    assert library.is_file()
    (tmp_path / "link.ld").write_text(linker_script(profile, 8192, target))
    h = harness_dir()
    elf = tmp_path / "example.elf"
    _run([gcc, *target.cflags, "-std=c99", "-O2", f"-I{c_dir}", f"-I{h}",
          "--specs=nano.specs", "--specs=nosys.specs", "-nostartfiles", "-T", "link.ld",
          str(c_dir / "example" / "main.c"), str(h / "platform_arm.c"), str(h / "retarget.c"),
          str(library), "-o", str(elf)], tmp_path)
    cmd = [find("qemu-system-arm"), "-M", target.machine, "-nographic", "-monitor", "none",
           "-serial", "none", "-semihosting-config", "enable=on,target=native",
           "-kernel", str(elf)]
    _says_its_class(_execute(cmd, tmp_path, "the example", 60), predicted, label, names)


def test_example_without_a_sample_classifies_a_black_image(digits_export):
    from ctxconv.codegen.package import example_main

    text = example_main(digits_export, None, None)
    assert "a black image" in text and "image_label = -1;" in text
    size = digits_export["dataset"]["image_size"] ** 2 * digits_export["dataset"]["in_channels"]
    assert text.count(", ") >= size - 1
    with pytest.raises(ValueError, match="example image has 3 values"):
        example_main(digits_export, np.zeros(3, np.uint8), 0)
