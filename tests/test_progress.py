"""The training progress bar redraws a few times a second and shows the batch count."""

import io

from ctxconv.progress import ThrottledBar


def test_bar_redraws_at_most_twice_a_second_and_counts_batches():
    now = [0.0]
    out = io.StringIO()
    bar = ThrottledBar(1000, "block 1/2 epoch 1/3", True, interval=0.5, clock=lambda: now[0],
                       file=out)
    for i in range(1000):  # 10 s of training, a batch every 10 ms
        now[0] += 0.01
        bar.step(f"loss={1 / (i + 1):.4f}")
        if i == 149:
            shown = out.getvalue().split("\r")[-1]
            assert "150/1000" in shown and "loss=0.0067" in shown, shown
    bar.close()
    redraws = out.getvalue().count("\r")
    assert 15 <= redraws <= 25, redraws  # ~ 10 s / 0.5 s, not 1000
    assert "1000/1000" in out.getvalue()


def test_disabled_bar_writes_nothing():
    out = io.StringIO()
    bar = ThrottledBar(10, "x", False, file=out)
    for _ in range(10):
        bar.step("loss=1")
    bar.close()
    assert out.getvalue() == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_default_shows_a_bar_on_a_terminal_only():
    for out, shown in ((io.StringIO(), False), (Terminal(), True)):
        with ThrottledBar(5, "test images", file=out, unit="image") as bar:
            bar.step(n=5)
        assert ("5/5" in out.getvalue()) is shown


def test_long_steps_drive_their_bars_to_the_end(digits_export, digits_run, monkeypatch):
    """The simulator's one reference pass (accuracy, with TFLM on the first vectors of the
    same block calls) moves its bar to the number of images it goes through."""
    import ctxconv.progress as progress
    from ctxconv.sim.simulate import SimOptions, simulate

    seen: dict[str, int] = {}

    class Recording(progress.ThrottledBar):
        def step(self, postfix="", n=1):
            seen[self.desc] = seen.get(self.desc, 0) + n
            super().step(postfix, n)

    for module in ("ctxconv.sim.simulate", "ctxconv.sim.firmware_check"):
        monkeypatch.setattr(f"{module}.ThrottledBar", Recording)
    simulate(digits_run / "export", SimOptions(mcu="nrf52840", images=50, bit_exact_images=30,
                                                measure_tflm=False, backend="tflm"))
    assert seen == {"test images (tflm)": 50}, seen
