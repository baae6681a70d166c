"""The ``daehwa`` command: serve, chat, users, models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from daehwa.config import Settings, load_settings
from daehwa.errors import DaehwaError

app = typer.Typer(
    help="daehwa (대화): a Korean-first, self-hosted chat server.", no_args_is_help=True
)
users_app = typer.Typer(help="Manage users and their API keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (or DAEHWA_CONFIG).")
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except DaehwaError as exc:
        typer.echo(f"daehwa: {exc.message}", err=True)
        raise typer.Exit(2) from None


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except DaehwaError as exc:
        typer.echo(f"daehwa: {exc.message}", err=True)
        raise typer.Exit(1) from None


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Serve the API and the chat page."""
    import uvicorn

    from daehwa.api.app import create_app
    from daehwa.api.server import Server, housekeeping_period

    base = _settings(config)
    server = base.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    settings = base.model_copy(update={"server": server})
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def announce(text: str) -> None:
        print(f"daehwa: {text}", flush=True)

    from daehwa import collector

    settle = collector.settle if settings.server.tune_gc else None
    application = create_app(settings, announce=announce, on_started=settle)
    print(f"daehwa: serving on http://{server.host}:{server.port}", flush=True)
    uvicorn_config = uvicorn.Config(
        application,
        host=server.host,
        port=server.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        # Frames are small JSON events; a deflate context would cost ~34 KB per socket.
        ws_per_message_deflate=False,
    )
    http = Server(uvicorn_config, period=housekeeping_period(settings.chat.delta_interval))
    # After a Ctrl-C uvicorn shuts down, then raises it again.
    with contextlib.suppress(KeyboardInterrupt):
        http.run()
    if not http.started:
        raise typer.Exit(3)  # it could not start (the address in use, say): uvicorn said why


@users_app.command("add")
def users_add(
    name: str,
    admin: Annotated[bool, typer.Option("--admin", help="Can read every conversation.")] = False,
    password: Annotated[
        str | None, typer.Option(help="Password for logging in on the chat page.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Create a user; prints its new API key alone on the last line."""
    settings = _settings(config)

    async def add() -> str:
        from daehwa.accounts import Accounts
        from daehwa.store import open_store

        store = await open_store(settings)
        try:
            created = await Accounts(store).create_user(name, admin=admin, password=password)
        finally:
            await store.aclose()
        typer.echo(f"created user {created.user.name} ({'admin' if admin else 'user'})")
        return created.api_key

    key = _run(add())
    typer.echo(key)


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List users."""
    settings = _settings(config)

    async def show() -> None:
        from daehwa.store import open_store

        store = await open_store(settings)
        try:
            for user in await store.list_users():
                role = "admin" if user.is_admin else "user"
                typer.echo(f"{user.name}\t{role}\t{user.created_at:%Y-%m-%d %H:%M}\t{user.id}")
        finally:
            await store.aclose()

    _run(show())


@app.command()
def models(
    config: ConfigOption = None,
    prepare: Annotated[
        bool, typer.Option("--prepare", help="Assemble local model files now (with progress).")
    ] = False,
) -> None:
    """List the configured models and whether each is ready."""
    from daehwa.llm.modelfiles import model_status, prepare_models

    settings = _settings(config)
    if prepare:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        try:
            prepare_models(settings)
        except DaehwaError as exc:
            typer.echo(f"daehwa: {exc.message}", err=True)
            raise typer.Exit(1) from None
    default = settings.chat.default_model
    for status in _run(model_status(settings)):
        mark = "ready" if status.ready else "NOT READY"
        star = "*" if status.name == default else " "
        typer.echo(f"{star} {status.name}\t{status.provider}\t{mark}\t{status.detail}")


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="The server's address.")] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(help="API key (or DAEHWA_API_KEY).", show_default=False)
    ] = None,
    conversation: Annotated[
        str | None, typer.Option("--conversation", help="Continue this conversation.")
    ] = None,
) -> None:
    """Chat from the terminal; answers stream as they arrive. `exit` or `quit` leaves."""
    from daehwa.terminal import TerminalChat

    api_key = key or os.environ.get("DAEHWA_API_KEY")
    if not api_key:
        typer.echo("daehwa: an API key is needed: --key KEY or DAEHWA_API_KEY", err=True)
        raise typer.Exit(2)
    code = asyncio.run(TerminalChat(url, api_key, conversation).run())
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``daehwa`` script."""
    app(prog_name="daehwa")


if __name__ == "__main__":
    main()
