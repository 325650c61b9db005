"""The web client in a real headless Chromium: it joins, publishes its fake camera, and decodes the
other participant's video; without a camera it still watches, without a microphone it still publishes; a
watch-only link asks for no camera; it keeps its selfie avatar for the next call. The avatar pipeline is the
pass-through test double here; tests/test_stream_e2e.py checks the browser with the real avatar pipeline."""
import asyncio

from browser import chromium_page, green_camera_file, join_link, join_page, server_with_publisher
from servers import running_server
from test_server_rooms import SECRET


async def test_web_client_joins_publishes_and_decodes(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        async with chromium_page(cam) as page:
            await page.goto(join_link(server, SECRET))
            try:
                await page.wait_for_function("window.gramcast && window.gramcast.me", timeout=15000)
            except Exception:
                raise AssertionError(f"page did not join: {page.console_lines} "
                                     f"{await page.evaluate('window.gramcast && window.gramcast.events')}")
            browser_pid = await page.evaluate("window.gramcast.me")
            # The browser decodes the Python participant's stream...
            await page.wait_for_function(
                f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10", timeout=20000)
            # ...and the Python participant receives the browser's camera (green) through the server.
            video, _ = await py.subscribe(browser_pid)
            frame = await asyncio.wait_for(video.recv(), 15)
            for _ in range(5):
                frame = await asyncio.wait_for(video.recv(), 15)
            mean = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(0)
            assert mean[1] > 150 and mean[0] < 100, mean
            # Preview (own stream back) is decoded as well.
            await page.wait_for_function("(window.gramcast.framesDecoded['preview'] || 0) > 5", timeout=20000)


NO_DEVICES_JS = """navigator.mediaDevices.getUserMedia = (constraints) => Promise.reject(
  new DOMException("Requested device not found", "NotFoundError"));"""
NO_MICROPHONE_JS = """{
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => constraints.audio
    ? Promise.reject(new DOMException("Requested device not found", "NotFoundError")) : original(constraints);
}"""


async def test_without_a_camera_the_page_watches_and_without_a_microphone_it_publishes(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        for devices, publishes in ((NO_DEVICES_JS, False), (NO_MICROPHONE_JS, True)):
            async with chromium_page(cam) as page:
                await page.add_init_script(devices)
                await page.goto(join_link(server, SECRET))
                # it sees the other participant either way
                await page.wait_for_function(
                    f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10", timeout=20000)
                text = await page.text_content("#status")
                if publishes:
                    await page.wait_for_function("(window.gramcast.framesDecoded['preview'] || 0) > 5", timeout=20000)
                    assert await page.evaluate("window.gramcast.cameraProblem") is None
                else:
                    assert "not publishing your camera (NotFoundError" in text, text
                    assert await page.evaluate("document.getElementById('selfie').disabled")
                    assert not any(p.get("publishing") for p in py.peers.values())


async def test_a_watch_only_link_asks_for_no_camera_and_watches(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        async with chromium_page(cam) as page:
            await page.add_init_script("""{
              const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
              window.cameraAsked = 0;
              navigator.mediaDevices.getUserMedia = (c) => { window.cameraAsked += 1; return original(c); };
            }""")
            await page.goto(join_link(server, SECRET, "viewer", publish=False))
            await page.wait_for_function(
                f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10", timeout=20000)
            assert await page.evaluate("window.cameraAsked") == 0
            assert "this link is for watching" in await page.text_content("#status")
            assert await page.evaluate("document.getElementById('selfie').disabled")


async def test_the_page_keeps_its_selfie_avatar_and_uses_it_when_it_joins_again(tmp_path):
    """Enroll once: the selfie's .gca is kept in the browser (IndexedDB) and sent back on the next join,
    with no new enrollment; "Forget my avatar" deletes it."""
    import torch

    from gramcast.avatar import Avatar

    enrolled = []

    def enroll(image: bytes, face: str = "only"):
        gen = torch.Generator().manual_seed(len(enrolled))
        enrolled.append(Avatar(torch.rand(1, 8, 8, generator=gen) * 0.01, torch.rand(1, 4, 16, 16, generator=gen),
                               0.14, {"method": "test"}))
        return enrolled[-1]

    cam = green_camera_file(tmp_path)

    async def join(server, page, name):
        await page.goto(join_link(server, SECRET, name))
        await page.wait_for_function("window.gramcast.me && (window.gramcast.framesDecoded['preview'] || 0) > 3",
                                     timeout=20000)
        return await page.evaluate("window.gramcast.me")

    async with running_server(SECRET, enroll_fn=enroll) as (server, _):
        async with chromium_page(cam) as page:
            first = await join(server, page, "first")
            await page.click("#selfie")
            await page.wait_for_function("window.gramcast.events.some((e) => e.includes('keeps it'))", timeout=20000)
            assert len(enrolled) == 1 and server.selfies[first][1] is enrolled[0]
            await page.click("#leave")
            second = await join(server, page, "second")
            await page.wait_for_function(
                "window.gramcast.events.some((e) => e.includes('kept from your last selfie'))", timeout=20000)
            assert len(enrolled) == 1                                   # no new enrollment
            kept = server.selfies[second][1]
            assert torch.equal(kept.textures, enrolled[0].textures.half().float())
            await page.click("#forget")
            await page.wait_for_function("document.getElementById('forget').disabled", timeout=5000)
            await page.click("#leave")
            third = await join(server, page, "third")
            await asyncio.sleep(1.0)
            assert third not in server.selfies and len(enrolled) == 1  # nothing kept, nothing sent


async def test_the_page_joins_with_the_avatar_its_link_names(tmp_path):
    cam = green_camera_file(tmp_path)
    async with running_server(SECRET, {"first": object(), "second": object()}) as (server, _):
        async with chromium_page(cam) as page:
            me = await join_page(page, join_link(server, SECRET, "a") + "&avatar=second")
            assert server.rooms.get("web", me).avatar_name == "second"
            await page.goto(join_link(server, SECRET, "b") + "&avatar=third")
            await page.wait_for_function(
                "window.gramcast.events.some((e) => e.includes(\"Could not join: no avatar 'third'\"))", timeout=15000)
            # refused: back to a page that has not joined, the reason kept on screen (it had sat "joined"
            # for 30 s, its stats requests answered "send 'join' first")
            await page.wait_for_function("document.getElementById('join').disabled === false", timeout=15000)
            await asyncio.sleep(1.5)
            assert "available: ['first', 'second']" in await page.text_content("#status")
            assert await page.evaluate("document.getElementById('selfie').disabled")


async def test_a_full_server_turns_the_camera_away_and_the_page_publishes_when_a_place_frees(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET, max_sessions=1) as (server, py):
        async with chromium_page(cam) as page:
            await page.goto(join_link(server, SECRET))
            await page.wait_for_function(
                "window.gramcast.events.some((e) => e.includes('not publishing your camera'))", timeout=20000)
            status = await page.text_content("#status")
            assert "already streams 1 avatars" in status, status
            await page.wait_for_function(
                f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10", timeout=20000)
            assert await page.evaluate("window.gramcast.camera === null && window.gramcast.publishPc === null")
            assert "publishes it when a place frees" in status, status
            await py.close()                      # the server's one place frees: the page takes it
            await page.wait_for_function(
                "window.gramcast.events.some((e) => e.startsWith('Publishing in room'))", timeout=20000)
            assert await page.evaluate("window.gramcast.publishPc !== null && window.gramcast.camera !== null")
            assert sum(c.publish_pc is not None for c in server.connections.values()) == 1



async def test_a_dropped_connection_joins_again_and_a_refused_one_does_not(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        async with chromium_page(cam) as page:
            first = await join_page(page, join_link(server, SECRET))
            await server.connections[first].ws.close()            # the network drops
            await page.wait_for_function(f"window.gramcast.me && window.gramcast.me !== '{first}'", timeout=15000)
            assert await page.evaluate("window.gramcast.events.some((e) => e.includes('joining again in 1 s'))")
            await page.wait_for_function(f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10",
                                         timeout=20000)
            second = await page.evaluate("window.gramcast.me")
            assert first not in server.connections and second in server.connections
        # a token the server refuses (expired): one try, its reason shown, no second
        async with chromium_page(cam) as page:
            await page.goto(join_link(server, SECRET, "late", ttl_s=0.001))
            await page.wait_for_function("document.getElementById('join').disabled === false", timeout=15000)
            await asyncio.sleep(2.0)
            assert "token expired" in await page.text_content("#status")
            assert not await page.evaluate("window.gramcast.events.some((e) => e.includes('joining again'))")


async def test_a_page_told_the_server_stops_or_drains_joins_again_when_it_takes_calls(tmp_path):
    """A server replaced under its calls: the page told "shutting_down" and then, on its next try,
    "draining" keeps trying (1 s, then 2 s) and is back in the call once the server takes calls again."""
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        async with chromium_page(cam) as page:
            first = await join_page(page, join_link(server, SECRET))
            server.draining = True
            await server.connections[first].close(going_away="this server is shutting down; join again")
            await page.wait_for_function("window.gramcast.events.some((e) => e.includes('takes no new calls'))",
                                         timeout=15000)
            server.draining = False
            await page.wait_for_function(f"window.gramcast.me && window.gramcast.me !== '{first}'", timeout=15000)
            await page.wait_for_function(f"(window.gramcast.framesDecoded['{py.participant}'] || 0) > 10",
                                         timeout=20000)
            events = await page.evaluate("window.gramcast.events")
            assert any("shutting down; join again (joining again in 1 s" in e for e in events), events
            assert any("takes no new calls" in e and "(joining again in 2 s" in e for e in events), events


async def test_the_selfie_button_waits_for_the_camera_and_leaving_says_so(tmp_path):
    cam = green_camera_file(tmp_path)
    async with server_with_publisher(SECRET) as (server, py):
        async with chromium_page(cam) as page:
            await page.goto(join_link(server, SECRET).replace("&autojoin=1", ""))
            await page.click("#join")
            # not before the camera is published (a click then had no picture: a TypeError on screen)
            assert await page.evaluate("document.getElementById('selfie').disabled")
            await page.wait_for_function("document.getElementById('selfie').disabled === false", timeout=20000)
            assert await page.evaluate("window.gramcast.publishPc !== null")
            await page.click("#leave")
            assert await page.text_content("#status") == "Left the call."
            assert await page.evaluate("document.getElementById('selfie').disabled")
            assert await page.text_content("#stats") == ""
