"""The sandbox's frames: what one side of a pipe gets when the other writes, stalls, or dies mid-frame."""

from __future__ import annotations

import os
import threading
import time

import pytest

from adapters.sandbox.protocol import parse_frames, read_frame, write_frame


@pytest.fixture
def pipe():
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def frame_bytes(obj) -> bytes:
    """``obj`` as write_frame puts it on the wire."""
    r, w = os.pipe()
    try:
        write_frame(w, obj)
        os.close(w)
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(r)


def test_frames_arrive_whole_and_in_order_even_larger_than_the_pipe_buffer(pipe):
    r, w = pipe
    big = {"output": "x" * (1 << 20)}  # 1 MiB: many times a pipe's buffer, so written in many pieces
    sent = [{"ready": True}, big, {"outcome": "ok", "value": [1, 2.5, None, "ü"]}]

    def writer():
        for obj in sent:
            write_frame(w, obj)
        os.close(w)

    t = threading.Thread(target=writer)
    t.start()
    got = [read_frame(r, time.monotonic() + 10) for _ in sent]
    t.join()
    assert got == sent
    assert read_frame(r, time.monotonic() + 10) is None, "a clean end of stream between frames is None"


@pytest.mark.parametrize("cut", [2, 10], ids=["inside-the-header", "inside-the-body"])
def test_a_peer_that_dies_mid_frame_is_an_error_not_an_end_of_stream(pipe, cut):
    r, w = pipe
    os.write(w, frame_bytes({"outcome": "ok", "value": "abcdef"})[:cut])
    os.close(w)
    with pytest.raises(EOFError, match="closed the pipe mid-frame"):
        read_frame(r, time.monotonic() + 10)


def read_with_deadline(fd: int, seconds: float) -> BaseException | None:
    """read_frame's exception for a ``seconds`` deadline; fails (instead of hanging the suite) if it does not return."""
    caught: list[BaseException | None] = []

    def read():
        try:
            read_frame(fd, time.monotonic() + seconds)
            caught.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            caught.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(seconds + 5)
    assert not t.is_alive(), "read_frame ignored its deadline and is still waiting"
    return caught[0]


def test_a_silent_peer_times_out_at_the_deadline(pipe):
    r, w = pipe
    started = time.monotonic()
    error = read_with_deadline(r, 0.3)
    assert isinstance(error, TimeoutError) and "no answer from the sandbox worker" in str(error)
    assert 0.25 < time.monotonic() - started < 3
    os.write(w, frame_bytes({"ready": True})[:3])  # half a header, then silence: still a timeout, not a hang
    assert isinstance(read_with_deadline(r, 0.3), TimeoutError)


def test_a_dying_childs_report_keeps_its_complete_frames_and_skips_garbage():
    not_json = b"\x00\x00\x00\x05{oops"
    buf = (frame_bytes({"outcome": "ok", "step": 1}) + not_json + frame_bytes(["not", "a", "dict"])
           + frame_bytes({"outcome": "denied", "event": "os.fork"}) + frame_bytes({"outcome": "ok", "step": 3})[:-4])
    assert parse_frames(buf) == [{"outcome": "ok", "step": 1}, {"outcome": "denied", "event": "os.fork"}]
    assert parse_frames(b"") == [] and parse_frames(b"\x00\x00") == []
