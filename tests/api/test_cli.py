"""The command line: users, and the terminal chat against a real server."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

from daehwa.terminal import TerminalChat
from tests.api.conftest import ServerFactory
from tests.api.models import SlowModel


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DAEHWA_SERVER__DATA_DIR": str(tmp_path / "data"),
        "DAEHWA_CONTEXT__RECALL": "false",
    }
    env.pop("DAEHWA_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_users_add_prints_the_key_alone_on_the_last_line(tmp_path: Path) -> None:
    added = run_cli("users", "add", "minji", "--admin", tmp_path=tmp_path)
    assert added.returncode == 0, added.stderr
    last = added.stdout.strip().splitlines()[-1]
    assert last.startswith("dh-") and " " not in last
    listed = run_cli("users", "list", tmp_path=tmp_path)
    assert "minji\tadmin" in listed.stdout
    again = run_cli("users", "add", "minji", tmp_path=tmp_path)
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_a_wrong_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nprot = 1\n", encoding="utf-8")
    result = run_cli("users", "list", "--config", str(config), tmp_path=tmp_path)
    assert result.returncode == 2
    assert "server.prot: unknown setting" in result.stderr


async def test_terminal_chat_streams_and_keeps_history(make_server: ServerFactory) -> None:
    server = await make_server({"slow": SlowModel(["안녕", "하세요", "!"], gap=0.01)})
    key = (await server.user("minji"))["authorization"].split()[1]
    out = io.StringIO()
    chat = TerminalChat(server.url, key, stdin=io.StringIO("반가워\n\n두 번째\nquit\n"), stdout=out)
    assert await chat.run() == 0
    text = out.getvalue()
    assert text.count("봇: 안녕하세요!") == 2
    again = io.StringIO()
    resumed = TerminalChat(
        server.url, key, chat.conversation_id, stdin=io.StringIO("exit\n"), stdout=again
    )
    assert await resumed.run() == 0
    assert "나: 반가워" in again.getvalue() and "나: 두 번째" in again.getvalue()


async def test_terminal_chat_says_why_it_cannot_connect(make_server: ServerFactory) -> None:
    server = await make_server()
    out = io.StringIO()
    wrong = TerminalChat(server.url, "dh-wrong", stdin=io.StringIO("quit\n"), stdout=out)
    assert await wrong.run() == 1
    assert "API key was refused" in out.getvalue()
    out = io.StringIO()
    gone = TerminalChat("http://127.0.0.1:9", "dh-x", stdin=io.StringIO("quit\n"), stdout=out)
    assert await gone.run() == 1
    assert "cannot reach the server" in out.getvalue()


def test_models_lists_each_model_and_whether_it_is_ready(tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.glm]\nprovider = "openai"\nmodel = "glm-4.5"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "DAEHWA_TEST_NO_SUCH_KEY"\n'
        '[models.demo]\nprovider = "scripted"\n[chat]\ndefault_model = "demo"\n',
        encoding="utf-8",
    )
    result = run_cli("models", "--config", str(config), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("\t", 1) for line in result.stdout.rstrip().splitlines())
    assert lines["* demo"].startswith("scripted\tready")
    assert "NOT READY" in lines["  glm"] and "DAEHWA_TEST_NO_SUCH_KEY" in lines["  glm"]


async def test_terminal_chat_resumes_a_reply_after_a_dropped_connection(
    make_server: ServerFactory,
) -> None:
    from tests.web.server import ConnectionCutter

    cutters: list[ConnectionCutter] = []

    def wrap(app: object) -> ConnectionCutter:
        cutters.append(ConnectionCutter(app, plan=[3, 2]))  # type: ignore[arg-type]
        return cutters[0]

    pieces = [f"{i} " for i in range(12)]
    server = await make_server({"slow": SlowModel(pieces, gap=0.02)}, wrap=wrap)
    key = (await server.user("minji"))["authorization"].split()[1]
    out = io.StringIO()
    chat = TerminalChat(server.url, key, stdin=io.StringIO("세어 줘\nquit\n"), stdout=out)
    assert await chat.run() == 0
    assert "봇: " + "".join(pieces) in out.getvalue()
    assert cutters[0].cuts == 2
