"""CURVE + ZAP on every endpoint kind: allowed keys get through, strangers get nothing, keys stay private.

Everything binds 127.0.0.1 (free ports); the policies under test encrypt
loopback too (``plaintext_loopback=False``), which is what a network address
gets by default. Waits are bounded polls on the asserted thing.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zmq

from plstream.acquire_adapters.base import Frame
from plstream.cli import main
from plstream.dashboard.desktop import dashboard_command
from plstream.stream import (
    ConsumerTimeout,
    FramePublisher,
    FrameSubscriber,
    LiveResultClient,
    LiveResultServer,
    StartMessage,
)
from plstream.stream.live import LiveRequest, LiveState
from plstream.stream.security import (
    Security,
    SecurityError,
    allow_key,
    allowed_keys,
    init_keys,
    load_key_pair,
)

ANY_PORT = "tcp://127.0.0.1:0"
WAIT_S = 20.0  # generous: the machine may be loaded; every wait ends as soon as its condition holds
STRANGER_S = 1.5  # how long a refused client is watched for data that must never come


def _wait_for(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def machines(tmp_path):
    """Three machines' key folders: a server, an allowed client (they allow each other) and a stranger."""
    folders = SimpleNamespace(**{name: tmp_path / name for name in ("server", "client", "stranger")})
    server, client = init_keys(folders.server), init_keys(folders.client)
    init_keys(folders.stranger)
    allow_key(folders.server / "allowed", client.public_text, "client")
    allow_key(folders.client / "allowed", server.public_text, "server")
    allow_key(folders.stranger / "allowed", server.public_text, "server")  # it knows the server's key: not enough
    return folders


def _policy(folder: Path, **kwargs) -> Security:
    return Security(folder, plaintext_loopback=False, **kwargs)


@pytest.fixture
def contexts():
    """One context per machine (a ZAP handler belongs to a context)."""
    made = {name: zmq.Context() for name in ("server", "client", "stranger")}
    yield SimpleNamespace(**made)
    for context in made.values():
        context.destroy(linger=0)


def _frame(seq: int) -> Frame:
    return Frame(seq=seq, timestamp=seq * 0.01, data=np.full((8, 8), seq, np.uint16), metadata={})


def _live_state() -> LiveState:
    state = LiveState({"run_uid": "r", "result_path": "x.h5"}, lambda: {"state": "running"})
    for t in range(5):
        row = SimpleNamespace(
            index=t, seq=t, timestamp=t * 0.1, drift_xy=np.zeros(2), intensity=np.ones(3), state=np.ones(3, np.int8)
        )
        state.append(row)
    return state


# ---------------------------------------------------------------------------------------------- keys on disk
def test_keys_init_writes_a_private_secret_and_never_overwrites(tmp_path, capsys):
    folder = tmp_path / "keys"
    assert main(["keys", "init", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    pair = load_key_pair(folder)
    assert pair.public_text in out and str(folder) in out
    assert stat.S_IMODE(os.stat(folder / "plstream.key_secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "allowed").st_mode) == 0o700
    assert pair.secret.decode() not in (folder / "plstream.key").read_text()

    assert main(["keys", "init", "--dir", str(folder)]) == 1
    assert "already holds a key pair" in capsys.readouterr().err
    assert load_key_pair(folder) == pair, "an existing pair was replaced without --force"
    assert main(["keys", "init", "--dir", str(folder), "--force"]) == 0
    assert load_key_pair(folder).public != pair.public
    assert stat.S_IMODE(os.stat(folder / "plstream.key_secret").st_mode) == 0o600


def test_keys_allow_and_show(tmp_path, capsys):
    here, peer = tmp_path / "here", tmp_path / "peer"
    main(["keys", "init", "--dir", str(here)])
    main(["keys", "init", "--dir", str(peer)])
    peer_key = load_key_pair(peer).public_text
    capsys.readouterr()
    assert main(["keys", "allow", peer_key, "--name", "microscope", "--dir", str(here)]) == 0
    assert "allowed" in capsys.readouterr().out
    assert main(["keys", "allow", str(peer / "plstream.key"), "--dir", str(here)]) == 0  # the same key, from its file
    assert "allowed already, as microscope" in capsys.readouterr().out
    assert allowed_keys(here / "allowed") == {"microscope": peer_key.encode()}
    assert main(["keys", "show", "--dir", str(here)]) == 0
    out = capsys.readouterr().out
    assert load_key_pair(here).public_text in out and "microscope" in out and peer_key in out
    assert main(["keys", "allow", "not-a-key", "--dir", str(here)]) == 1
    assert "neither a public key" in capsys.readouterr().err


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
def test_a_secret_readable_by_others_is_refused(machines, contexts, capsys):
    secret = machines.server / "plstream.key_secret"
    secret.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_key_pair(machines.server)
    with _policy(machines.server).on(contexts.server) as secured, pytest.raises(SecurityError, match="chmod 600"):
        FrameSubscriber(contexts.server, ANY_PORT, bind=True, security=secured)
    assert main(["keys", "show", "--dir", str(machines.server)]) == 1
    assert "mode 0644" in capsys.readouterr().err


def test_a_server_without_allowed_keys_is_refused(machines, contexts):
    for path in (machines.server / "allowed").glob("*.key"):
        path.unlink()
    with _policy(machines.server).on(contexts.server) as secured:
        with pytest.raises(SecurityError, match="holds no keys.*plstream keys allow"):
            FramePublisher(contexts.server, ANY_PORT, bind=True, security=secured)
    missing = _policy(machines.server, allowed_dir=machines.server / "nowhere")
    with pytest.raises(SecurityError, match="does not exist"):
        missing.preflight("tcp://*:5555", bind=True, role="data")


def test_a_client_must_know_which_server(machines):
    allow_key(machines.client / "allowed", load_key_pair(machines.stranger).public_text, "other")
    with pytest.raises(SecurityError, match="--server-key NAME, one of: other, server"):
        _policy(machines.client).resolve_server_key()
    assert _policy(machines.client, server_key="server").resolve_server_key() == load_key_pair(machines.server).public


# ---------------------------------------------------------------------------------------------- who binds what
def test_non_loopback_binds_need_keys_or_insecure(tmp_path, context, caplog):
    nothing = Security(tmp_path / "no-keys")
    with nothing.on(context) as secured:
        for make in (
            lambda: FrameSubscriber(context, "tcp://*:0", bind=True, security=secured),
            lambda: FramePublisher(context, "tcp://0.0.0.0:0", bind=True, security=secured),
            lambda: LiveResultServer(context, "tcp://*:0", _live_state().update_for, security=secured).start(),
        ):
            with pytest.raises(SecurityError, match="plstream keys init.*--insecure"):
                make()
    with pytest.raises(SecurityError, match="without encryption"):  # no security at all: loopback only
        FrameSubscriber(context, "tcp://*:0", bind=True)
    with caplog.at_level(logging.WARNING), Security(tmp_path / "no-keys", insecure=True).on(context) as secured:
        with FrameSubscriber(context, "tcp://*:0", bind=True, security=secured) as subscriber:
            assert subscriber.endpoint.startswith("tcp://0.0.0.0:")
    assert any("--insecure" in r.message and "NOT encrypted" in r.message for r in caplog.records)


def test_loopback_needs_no_keys(tmp_path, context):
    with Security(tmp_path / "no-keys").on(context) as secured:  # the default policy, nothing on disk
        with FrameSubscriber(context, ANY_PORT, bind=True, security=secured) as subscriber:
            with FramePublisher(context, subscriber.endpoint, bind=False, security=secured) as publisher:
                publisher.send_start({"shape": [8, 8], "dtype": "uint16"}, timeout_s=WAIT_S)
                assert isinstance(subscriber.receive(WAIT_S), StartMessage)
        assert not secured.serving
    assert not (tmp_path / "no-keys").exists()


def test_the_cli_refuses_a_network_bind_without_keys(tmp_path, capsys):
    keys = f"security.keys_dir={tmp_path / 'no-keys'}"
    status = main(["analyze", "--bind", "tcp://*:0", "--out", str(tmp_path / "r.h5"), "--set", keys])
    err = capsys.readouterr().err
    assert status == 1 and "refusing to bind" in err and "plstream keys init" in err and "--insecure" in err
    status = main(["acquire", "simulated", "--bind", "tcp://*:0", "--frames", "1", "--set", keys])
    assert status == 1 and "plstream keys init" in capsys.readouterr().err
    status = main(["run", "--headless", "--live", "tcp://*:0", "--out", str(tmp_path / "s.h5"), "--set", keys])
    assert status == 1 and "live results" in capsys.readouterr().err
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "s.h5").exists()


# ---------------------------------------------------------------------------------------------- the data stream
def _start(publisher: FramePublisher, run_uid: str | None = None) -> str | None:
    try:
        return publisher.send_start({"shape": [8, 8], "dtype": "uint16"}, run_uid, timeout_s=0.5)
    except ConsumerTimeout:  # nobody took it: a refused connection has no peer to send to
        return None


@pytest.mark.parametrize("source_binds", [True, False], ids=["source-binds", "analyzer-binds"])
def test_data_stream_allowed_key_gets_frames_stranger_gets_nothing(machines, contexts, source_binds):
    with (
        _policy(machines.server).on(contexts.server) as server_side,
        _policy(machines.client).on(contexts.client) as client_side,
        _policy(machines.stranger).on(contexts.stranger) as stranger_side,
    ):
        if source_binds:  # plstream acquire --bind: the source serves; a stranger analyzer must not read
            publisher = FramePublisher(contexts.server, ANY_PORT, bind=True, security=server_side)
            stranger: FrameSubscriber | FramePublisher = FrameSubscriber(
                contexts.stranger, publisher.endpoint, security=stranger_side
            )
            subscriber = FrameSubscriber(contexts.client, publisher.endpoint, security=client_side)
        else:  # plstream analyze --bind: the analyzer serves; a stranger source must not get frames in
            subscriber = FrameSubscriber(contexts.server, ANY_PORT, bind=True, security=server_side)
            stranger = FramePublisher(contexts.stranger, subscriber.endpoint, bind=False, security=stranger_side)
            publisher = FramePublisher(contexts.client, subscriber.endpoint, bind=False, security=client_side)
        try:
            assert _wait_for(lambda: server_side.refused >= 1), "the stranger's handshake was not refused"
            if isinstance(stranger, FramePublisher):
                _start(stranger, "from-the-stranger")
            run = publisher.send_start({"shape": [8, 8], "dtype": "uint16"}, timeout_s=WAIT_S)
            for seq in range(3):
                publisher.send_frame(_frame(seq), timeout_s=WAIT_S)
            got = [subscriber.receive(WAIT_S) for _ in range(4)]
            assert [(m.kind, m.run_uid) for m in got] == [("start", run)] + [("frame", run)] * 3
            if isinstance(stranger, FrameSubscriber):
                assert stranger.receive(STRANGER_S) is None and stranger.counters["received"] == 0
            else:
                assert subscriber.receive(STRANGER_S) is None  # nothing of the stranger's ever arrived
        finally:
            for closable in (publisher, subscriber, stranger):
                closable.close()


def test_monitor_allowed_viewer_sees_frames_stranger_sees_nothing(machines, contexts):
    # The source's data goes to an analyzer on its own machine (its own key is admitted there).
    own_key = str(machines.server / "plstream.key")
    with (
        _policy(machines.server, server_key=own_key).on(contexts.server) as server_side,
        _policy(machines.client).on(contexts.client) as client_side,
        _policy(machines.stranger).on(contexts.stranger) as stranger_side,
        FrameSubscriber(contexts.server, ANY_PORT, bind=True, security=server_side) as analyzer,
    ):
        publisher = FramePublisher(
            contexts.server, analyzer.endpoint, bind=False, monitor_endpoint=ANY_PORT, security=server_side
        )
        assert publisher.monitor_endpoint is not None
        viewer = FrameSubscriber(contexts.client, publisher.monitor_endpoint, pattern="monitor", security=client_side)
        stranger = FrameSubscriber(
            contexts.stranger, publisher.monitor_endpoint, pattern="monitor", security=stranger_side
        )
        try:
            assert _wait_for(lambda: server_side.refused >= 1), "the stranger's handshake was not refused"
            publisher.send_start({"shape": [8, 8], "dtype": "uint16"}, timeout_s=WAIT_S)
            seen: list[str] = []
            deadline = time.monotonic() + WAIT_S
            seq = 0
            while "frame" not in seen and time.monotonic() < deadline:  # PUB drops until the viewer has joined
                publisher.send_frame(_frame(seq), timeout_s=WAIT_S)
                seq += 1
                message = viewer.receive(0.05)
                if message is not None:
                    seen.append(message.kind)
            assert "frame" in seen, "the allowed viewer saw no frame"
            assert analyzer.counters["frames"] >= 1 or analyzer.receive(WAIT_S) is not None
            assert stranger.receive(STRANGER_S) is None and stranger.counters["received"] == 0
        finally:
            for closable in (publisher, viewer, stranger):
                closable.close()


# ---------------------------------------------------------------------------------------------- live results
def test_live_results_allowed_dashboard_gets_updates_stranger_gets_nothing(machines, contexts):
    state = _live_state()
    with (
        _policy(machines.server).on(contexts.server) as server_side,
        _policy(machines.client).on(contexts.client) as client_side,
        _policy(machines.stranger).on(contexts.stranger) as stranger_side,
        LiveResultServer(contexts.server, ANY_PORT, state.update_for, security=server_side) as server,
    ):
        assert server.encrypted
        with LiveResultClient(contexts.stranger, server.endpoint, timeout_s=STRANGER_S, security=stranger_side) as c:
            assert c.fetch(LiveRequest()) is None and c.counters["replies"] == 0
        assert _wait_for(lambda: server.counters["refused_handshakes"] >= 1 and server_side.refused >= 1)
        assert server.counters["requests"] == 0
        with LiveResultClient(contexts.client, server.endpoint, timeout_s=WAIT_S, security=client_side) as client:
            update = client.fetch(LiveRequest())
        assert update is not None and update.n_frames == 5 and update.session_id == state.session_id


def test_a_replay_serving_a_network_address_encrypts_and_says_how_to_view(small_movie, tmp_path):
    path, _truth, _ = small_movie
    keys = tmp_path / "keys"
    pair = init_keys(keys)
    allow_key(keys / "allowed", init_keys(tmp_path / "colleague").public_text, "colleague")
    command = [sys.executable, "-m", "plstream", "replay", str(path), "--out", str(tmp_path / "r.h5"), "--headless"]
    command += ["--live", "tcp://0.0.0.0:0", "--set", f"security.keys_dir={keys}", "--set", "live.linger_s=0"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    hint = re.search(r"live results at (tcp://127\.0\.0\.1:\d+) \(encrypted; view with: (.*)\)", proc.stderr)
    assert hint, proc.stderr
    assert hint.group(2) == f"plstream dashboard --connect {hint.group(1)} --server-key '{pair.public_text}'"


def test_a_launched_dashboard_gets_the_key_and_the_keys_folder():
    command = dashboard_command("tcp://127.0.0.1:5560", "-KEY", ["--set", "security.keys_dir=/k"])
    assert command[-5:] == ["--connect", "tcp://127.0.0.1:5560", "--set", "security.keys_dir=/k", "--server-key=-KEY"]
    assert dashboard_command("tcp://127.0.0.1:5560")[-2:] == ["--connect", "tcp://127.0.0.1:5560"]
