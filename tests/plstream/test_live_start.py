"""A live camera starts only when the analysis is ready, and a run that lost frames says so."""

from __future__ import annotations

import threading
import time

import numpy as np
import zmq

from plstream.analysis import load_results
from plstream.config import load_settings
from plstream.errors import EXIT_INCOMPLETE
from plstream.orchestration import analyze_stream, publish_source
from plstream.source_spec import SourceSpec
from plstream.stream import FrameSubscriber

JOIN_S = 60.0


def _settings(**simulation):
    overrides = [f"simulation.{k}={v}" for k, v in simulation.items()]
    return load_settings(overrides=[*overrides, "stream.live_queue_frames=4", "live.endpoint="])


def _publish_in_background(spec, endpoint, settings, stop):
    result: dict = {}

    def run():
        try:
            result["counters"] = publish_source(spec, endpoint, settings, bind=False, stop_event=stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_live_camera_starts_only_when_the_analysis_is_ready(tmp_path):
    """The analysis holds its preparation; the camera takes its first frame only after the analysis is ready.

    The paced simulated camera (200 frames/s) stamps each frame with the wall
    clock from when its iteration started, so the first row's timestamp tells
    when acquisition began, whatever the machine's load.
    """
    settings = _settings(shape_px="[64, 64]", n_frames=120, n_emitters=6, frame_rate_hz=200.0)
    preparing, release = threading.Event(), threading.Event()

    def on_event(sentence: str) -> None:
        if sentence.startswith("preparing"):
            preparing.set()
            assert release.wait(JOIN_S), "the test never released the preparation"

    context = zmq.Context()
    try:
        with FrameSubscriber(context, "tcp://127.0.0.1:0", bind=True) as subscriber:
            stop = threading.Event()
            thread, published = _publish_in_background(
                SourceSpec.simulated(settings), subscriber.endpoint, settings, stop
            )
            outcome: dict = {}
            analysis = threading.Thread(
                target=lambda: outcome.update(
                    result=analyze_stream(
                        subscriber, settings, tmp_path / "r.h5", stop_event=threading.Event(), on_event=on_event
                    )
                ),
                daemon=True,
            )
            analysis.start()
            assert preparing.wait(JOIN_S), "the analysis never started preparing"
            release.wait(0.5)  # the slow preparation this test is about: 100 frames' time at 200 frames/s
            released_at = time.time()
            release.set()
            analysis.join(JOIN_S)
            thread.join(JOIN_S)
            assert not analysis.is_alive() and not thread.is_alive()
    finally:
        context.destroy(linger=0)
    assert "error" not in published, published.get("error")
    counters = published["counters"]
    assert counters["frames_produced"] == 120, counters
    result = outcome["result"]
    assert result.status == "complete"
    status = result.session_status
    assert (
        status.frames_analyzed + status.frames_missing == 120
        and status.frames_missing == counters["dropped_queue_full"]
    )
    first_frame_taken = load_results(tmp_path / "r.h5").timestamp[0]
    assert first_frame_taken >= released_at, "the camera acquired before the analysis said it was ready"


def test_a_run_that_lost_frames_is_not_plainly_complete(tmp_path):
    """Frames dropped by a live camera are counted, recorded as gaps, and said in every end state."""
    settings = _settings(shape_px="[512, 512]", n_frames=120, n_emitters=6, frame_rate_hz=100.0)  # 512 kB frames
    context = zmq.Context()
    try:
        with FrameSubscriber(context, "tcp://127.0.0.1:0", bind=True) as subscriber:
            stop = threading.Event()
            thread, published = _publish_in_background(
                SourceSpec.simulated(settings), subscriber.endpoint, settings, stop
            )
            dropped = threading.Event()

            class SlowAfterStart:
                """The real subscriber, but the analysis stops reading for a while after frame 10."""

                counters = subscriber.counters

                def receive(self, timeout_s):
                    message = subscriber.receive(timeout_s)
                    if getattr(message, "seq", None) == 10:
                        dropped.wait(2.0)  # the analysis falls behind the camera for two seconds
                    return message

                def send_ready(self, run_uid):
                    return subscriber.send_ready(run_uid)

                def send_heartbeat(self, run_uid, n):
                    return subscriber.send_heartbeat(run_uid, n)

                def send_done(self, run_uid, n):
                    return subscriber.send_done(run_uid, n)

            outcome = analyze_stream(SlowAfterStart(), settings, tmp_path / "r.h5", stop_event=threading.Event())
            thread.join(JOIN_S)
    finally:
        context.destroy(linger=0)
    counters = published["counters"]
    lost = counters["dropped_queue_full"]
    assert lost > 0, "the camera should have outrun the paused analysis"
    assert outcome.session_status.frames_analyzed + outcome.session_status.frames_missing == 120
    assert outcome.session_status.frames_missing == lost
    results = load_results(tmp_path / "r.h5")
    assert results.status == "complete"
    assert results.status_text.startswith(f"complete, {lost} frames lost in ")
    assert int(np.sum(results.gaps[:, 1] - results.gaps[:, 0] + 1)) == lost
    assert results.summary["losses"] in results.status_text


def test_the_command_line_exit_status_says_frames_were_lost():
    from plstream.analysis.session import SessionStatus
    from plstream.commands._common import outcome_exit
    from plstream.orchestration import AnalysisOutcome

    lossy = AnalysisOutcome("complete", {"losses": "3 frames lost in 1 gap (frames 4-6)"}, None, SessionStatus())
    assert outcome_exit(lossy) == EXIT_INCOMPLETE
    whole = AnalysisOutcome("complete", {"losses": ""}, None, SessionStatus())
    assert outcome_exit(whole) == 0
