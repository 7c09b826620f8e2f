"""Forked worker shards: order, coverage, and errors that keep their type."""

from __future__ import annotations

import os

import pytest

from ctxconv.sim.shards import map_forked, shard_bounds


def test_bounds_cover_every_item_once():
    for n, workers, least in [(10, 3, 1), (7, 8, 1), (100, 4, 30), (5, 2, 10)]:
        bounds = shard_bounds(n, workers, least)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
        assert len(bounds) <= workers


def test_results_come_back_in_job_order():
    assert map_forked(lambda job, progress: job * job, [3, 1, 2], "squares") == [9, 1, 4]


class Planted(Exception):
    """An exception type only this test raises."""


def test_a_worker_error_keeps_its_type_and_message():
    def fail_on_two(job, progress):
        if job == 2:
            raise Planted(f"job {job} failed")
        return job

    with pytest.raises(Planted, match="job 2 failed"):
        map_forked(fail_on_two, [1, 2, 3], "planted jobs")


def test_an_unpicklable_error_arrives_as_text():
    class Local(Exception):  # defined in a function: pickle cannot find it
        pass

    def fail(job, progress):
        raise Local("cannot travel")

    with pytest.raises(RuntimeError, match="Local: cannot travel"):
        map_forked(fail, [1, 2], "local errors")


def test_a_worker_that_dies_is_named():
    def die(job, progress):
        if job == 1:
            os._exit(7)
        return job

    with pytest.raises(RuntimeError, match="dying jobs: worker 1 ended without a result"):
        map_forked(die, [0, 1], "dying jobs")
