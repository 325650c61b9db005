"""Any aiortc app can send an avatar instead of the camera: wrap the camera track in an AvatarSession.

This example plays a video file through the avatar pipeline and records what a remote peer would receive
into an MP4 (10 seconds of it), without any server:

    python examples/aiortc_avatar_track.py me.gca input.mp4 avatar.mp4

For a webcam, give what ffmpeg opens (on Linux ``/dev/video0``; MediaPlayer(source, format="v4l2")).
"""
import asyncio
import sys

from aiortc.contrib.media import MediaPlayer, MediaRecorder

from gramcast import Avatar, AvatarSession, SessionConfig


async def main(avatar_path: str, source: str, target: str) -> None:
    player = MediaPlayer(source)                                   # or your RTCPeerConnection's track
    session = AvatarSession(Avatar.load(avatar_path), SessionConfig(output_size="480p", background="blur"))
    avatar_track = session.attach(player.video)                    # pc.addTrack(avatar_track) in a call
    recorder = MediaRecorder(target)
    recorder.addTrack(avatar_track)
    await recorder.start()
    await asyncio.sleep(10)
    await recorder.stop()
    print(session.stats())
    await session.close()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
