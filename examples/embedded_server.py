"""Run the gramcast server inside your own asyncio application.

Your application decides who may join which room and hands each user a token: here a speaker link for two
people and a watch-only link for an audience (your backend can mint the same tokens in any language: they are
JWTs signed with the server's secret). gramcast serves the web page, the signaling and the avatar video.

    python examples/embedded_server.py me.gca [--port 8765] [--seconds 600]
"""
import argparse
import asyncio
import secrets

import gramcast
from gramcast.server import GramcastServer, ServerConfig, mint_token


async def main(avatar_path: str, port: int, seconds: float) -> None:
    secret = secrets.token_urlsafe(32)                  # share it with your backend to mint tokens there
    server = GramcastServer({"me": gramcast.Avatar.load(avatar_path)},
                            ServerConfig(port=port, secret=secret, max_sessions=4, metrics=True))
    await server.start()
    for user in ("alice", "bob"):
        print(f"{user}: {server.url}?room=standup&token={mint_token(server.secret, 'standup', user)}", flush=True)
    audience = mint_token(server.secret, "standup", "audience", publish=False, enroll=False)
    print(f"audience (watch only): {server.url}?room=standup&token={audience}", flush=True)
    try:
        await asyncio.sleep(seconds)                    # your application runs here
    finally:
        print(f"{server.rooms.participant_count()} participants in calls when the app stopped", flush=True)
        await server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("avatar", help="an avatar file (.gca), e.g. from `gramcast enroll` or `gramcast demo`")
    ap.add_argument("--port", type=int, default=8765, help="0 picks a free one")
    ap.add_argument("--seconds", type=float, default=600.0, help="how long to serve")
    args = ap.parse_args()
    asyncio.run(main(args.avatar, args.port, args.seconds))
