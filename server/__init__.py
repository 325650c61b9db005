"""gramcast.server: the WebRTC server (signaling, rooms, avatar tracks, the web client)."""
