"""Headless Chromium (Debian's package) driven by Playwright, for end-to-end tests of the web client."""
from __future__ import annotations

import shutil
from contextlib import asynccontextmanager

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream=fps=30",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Chromium is not installed: `make test` installs Debian's `chromium` "
                           "(apt-get install -y chromium); the browser tests need it")
    return path


@asynccontextmanager
async def chromium_page(fake_camera_y4m=None, extra_args=()):
    from playwright.async_api import async_playwright

    args = [*CHROMIUM_FLAGS, *extra_args]
    if fake_camera_y4m is not None:
        args.append(f"--use-file-for-fake-video-capture={fake_camera_y4m}")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path(), args=args, headless=True)
        try:
            page = await browser.new_page()
            page.console_lines = []
            page.on("console", lambda m: page.console_lines.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: page.console_lines.append(f"pageerror: {e}"))
            yield page
        finally:
            await browser.close()


def green_camera_file(folder):
    """A fake camera for Chromium: 30 flat green 320x240 frames in a .y4m file; returns its path."""
    import numpy as np

    from gramcast.server.synthetic import write_y4m

    path = folder / "camera.y4m"
    write_y4m([np.full((240, 320, 3), (40, 220, 40), np.uint8)] * 30, path)
    return path


async def publish_red(client) -> None:
    """The page's other participant: a flat red camera and a tone, from a ``GramcastClient``."""
    import numpy as np

    from gramcast.server.synthetic import ArrayVideoTrack, SineAudioTrack

    await client.publish(ArrayVideoTrack([np.full((64, 64, 3), (220, 40, 40), np.uint8)] * 4), SineAudioTrack())


@asynccontextmanager
async def server_with_publisher(secret: bytes, ssl_context=None, **config):
    """A running server (``tests/servers.running_server``: ``config`` as ``ServerConfig`` fields) with a
    ``GramcastClient`` publishing red in room "web": yields ``(server, client)``, the page's other participant."""
    from gramcast.server.client import GramcastClient
    from gramcast.server.tokens import mint_token
    from servers import running_server

    async with running_server(secret, **config) as (server, ws):
        async with GramcastClient(ws, mint_token(secret, "web", "py"), "web", ssl_context=ssl_context) as client:
            await publish_red(client)
            yield server, client


def join_link(server, secret: bytes, name: str = "browser", **grant) -> str:
    """The page's address with a token for ``name`` in room "web" and autojoin."""
    from gramcast.server.tokens import mint_token

    return f"{server.url}?room=web&token={mint_token(secret, 'web', name, **grant)}&autojoin=1"


async def join_page(page, link: str) -> str:
    """Open ``link`` (a ``join_link``) in ``page`` and wait until it has joined; returns its participant id."""
    await page.goto(link)
    await page.wait_for_function("window.gramcast.me", timeout=15000)
    return await page.evaluate("window.gramcast.me")
