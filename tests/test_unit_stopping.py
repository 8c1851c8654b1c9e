"""The stop rules without Ray: raise where the driver is, or only record inside the render loop; a second signal
ends the process at once; the handlers in force before come back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from svdbatch.run import stopping


def test_outside_the_render_loop_a_signal_raises_stopped_where_the_driver_is():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(stopping.Stopped) as caught, stopping.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between two bytecodes of this thread
            pass
    assert caught.value.signum == signal.SIGTERM and caught.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_inside_the_render_loop_a_signal_is_recorded_and_raised_on_leaving():
    with stopping.handled():
        with pytest.raises(stopping.Stopped) as caught, stopping.polled():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
            assert stopping.requested() == signal.SIGINT  # recorded, nothing raised: the loop commits first
        with pytest.raises(stopping.Stopped), stopping.polled():  # a request made before the loop ends it at once
            pass
    assert caught.value.exit_code == 130
    assert not isinstance(caught.value, Exception)  # no `except Exception` turns a stop into a job failure


def test_the_stop_line_says_what_was_committed_and_how_to_resume():
    line = stopping.Stopped(signal.SIGTERM, 37).line()
    assert line == ("svdbatch: stopped by SIGTERM: 37 videos committed this run; run the same command again to resume")


def test_a_stop_before_any_commit_says_nothing_was_committed_not_none():
    line = stopping.Stopped(signal.SIGTERM).line()
    assert line == "svdbatch: stopped by SIGTERM: nothing committed yet; run the same command again to resume"


def test_a_second_signal_exits_at_once_with_one_line():
    code = (
        "import os, signal, time\n"
        "from svdbatch.run import stopping\n"
        "with stopping.handled(), stopping.polled():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.1)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "print('not reached')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 130
    assert result.stdout == ""
    assert result.stderr == "svdbatch: SIGINT again: exiting now\n"


def test_rays_own_sigterm_exit_while_it_starts_is_a_stop_and_our_handlers_come_back():
    with stopping.handled():
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # as ray.init does before it starts the node
        with stopping.ray_starting():
            pass
        assert signal.getsignal(signal.SIGTERM) is stopping._handle
        with pytest.raises(stopping.Stopped) as caught, stopping.ray_starting():
            raise SystemExit(signal.SIGTERM)  # what Ray's handler does with a SIGTERM meanwhile
    assert caught.value.exit_code == 143
    with pytest.raises(SystemExit), stopping.ray_starting():  # not the CLI: Ray's behaviour is left alone
        raise SystemExit(signal.SIGTERM)
