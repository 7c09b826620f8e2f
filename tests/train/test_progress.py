"""The training progress bar redraws a few times a second and shows the batch count."""

import io

from ctxconv.train.progress import ThrottledBar


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
