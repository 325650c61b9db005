// gramcast web client: join a room, publish camera + mic, show everyone's avatars.
// Signaling messages are msgpack maps (see gramcast/server/protocol.py for the full list).
"use strict";

const PROTOCOL_VERSION = 1;
const $ = (id) => document.getElementById(id);
const state = {
  ws: null, me: null, camera: null, publishPc: null,
  subscriptions: new Map(),       // participant id -> {pc, tile}
  pendingAnswers: new Map(),      // target ("" = publish) -> {resolve, reject}
  framesDecoded: {},              // participant id (or "preview") -> count, for tests and stats
  lastStats: null, events: [],
  ice: { iceServers: [], iceTransportPolicy: "all" },   // the server's STUN/TURN servers, from "joined"
};
window.gramcast = state;

// The participant's own avatar (the .gca bytes of its last selfie, from "enrolled"), kept in this browser and
// sent back when it joins again: enroll once. "Forget my avatar" deletes it.
const avatarStore = {
  open() {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open("gramcast", 1);
      req.onupgradeneeded = () => req.result.createObjectStore("avatars");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  },
  async run(mode, action) {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("avatars", mode);
      const req = action(tx.objectStore("avatars"));
      tx.oncomplete = () => { db.close(); resolve(req.result); };
      tx.onerror = () => { db.close(); reject(tx.error); };
    });
  },
  get() { return this.run("readonly", (store) => store.get("mine")); },
  put(bytes) { return this.run("readwrite", (store) => store.put(bytes, "mine")); },
  forget() { return this.run("readwrite", (store) => store.delete("mine")); },
};

function status(text) { $("status").textContent = text; state.events.push(text); }

function send(type, fields = {}) {
  state.ws.send(MessagePack.encode({ v: PROTOCOL_VERSION, type, ...fields }));
}

async function gatheringComplete(pc) {
  // aiortc does not trickle ICE: send the offer only when all candidates are in it.
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const check = () => { if (pc.iceGatheringState === "complete") { pc.removeEventListener("icegatheringstatechange", check); resolve(); } };
    pc.addEventListener("icegatheringstatechange", check);
  });
}

async function negotiate(pc, target) {
  await pc.setLocalDescription(await pc.createOffer());
  await gatheringComplete(pc);
  const answered = new Promise((resolve, reject) => state.pendingAnswers.set(target || "", { resolve, reject }));
  const fields = { sdp: pc.localDescription.sdp, sdp_type: "offer" };
  if (target) fields.target = target;
  send("offer", fields);
  const answer = await answered;
  await pc.setRemoteDescription({ type: answer.sdp_type, sdp: answer.sdp });
}

function addTile(id, label) {
  const fig = document.createElement("figure");
  fig.className = "tile"; fig.id = `tile-${id}`;
  const video = document.createElement("video");
  video.autoplay = true; video.playsInline = true;
  const cap = document.createElement("figcaption"); cap.textContent = label;
  fig.append(video, cap); $("tiles").append(fig);
  return { fig, video };
}

async function openCamera() {
  // Camera and microphone; without a microphone, the camera alone (the avatar still shows, silent).
  const video = { width: 640, height: 480 };
  try {
    return await navigator.mediaDevices.getUserMedia({ video, audio: true });
  } catch (err) {
    return await navigator.mediaDevices.getUserMedia({ video, audio: false });
  }
}

// The server's answers to a camera's offer that refuse it (a full server, a token for watching).
const PUBLISH_REFUSALS = new Set(["server_full", "not_allowed", "no_video", "bad_sdp", "already_publishing"]);

// Publishes the camera; returns null, or why it is not published (no camera, not allowed, the server refused).
async function publish(preview) {
  try {
    state.camera = await openCamera();
  } catch (err) {
    return err.name ? `${err.name}: ${err.message}` : `${err}`;
  }
  $("camera").srcObject = state.camera;
  const pc = new RTCPeerConnection(state.ice);
  state.publishPc = pc;
  const [video] = state.camera.getVideoTracks();
  pc.addTransceiver(video, { direction: preview ? "sendrecv" : "sendonly", streams: [state.camera] });
  for (const audio of state.camera.getAudioTracks()) pc.addTransceiver(audio, { direction: "sendonly" });
  pc.ontrack = (ev) => {
    if (ev.track.kind === "video") $("preview-video").srcObject = new MediaStream([ev.track]);
  };
  try {
    await negotiate(pc, null);
  } catch (err) {   // refused: stop the camera rather than leave it on for nothing
    stopCamera();
    return err.message || `${err}`;
  }
  return null;
}

// Publishes the camera once joined, and says whether the others see this participant.
async function startPublishing() {
  const ws = state.ws;
  state.cameraProblem = await publish($("preview").checked);
  if (ws !== state.ws || ws.readyState !== WebSocket.OPEN) return;   // closed meanwhile: its own message stays
  if (state.cameraProblem) {
    const later = state.waitingForPlace ? " This page publishes it when a place frees." : "";
    status(`Watching room ${state.room}, not publishing your camera (${state.cameraProblem}): the others do not see you.${later}`);
  } else {
    status(`Publishing in room ${state.room}` +
           (state.keptAvatarUsed ? " with the avatar this browser kept from your last selfie." : "."));
    showOwnTiles(true);
    $("selfie").disabled = !state.mayEnroll;
  }
}

async function subscribe(pid, name) {
  if (state.subscriptions.has(pid)) return;
  const pc = new RTCPeerConnection(state.ice);
  const tile = addTile(pid, name);
  state.subscriptions.set(pid, { pc, tile });
  const stream = new MediaStream();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (ev) => { stream.addTrack(ev.track); tile.video.srcObject = stream; };
  await negotiate(pc, pid);
}

function unsubscribe(pid) {
  const sub = state.subscriptions.get(pid);
  if (!sub) return;
  sub.pc.close(); sub.tile.fig.remove(); state.subscriptions.delete(pid);
  delete state.framesDecoded[pid];
}

async function onMessage(msg) {
  switch (msg.type) {
    case "joined":
      state.me = msg.participant;
      state.tries = 0;
      state.ice = { iceServers: msg.ice_servers || [], iceTransportPolicy: msg.ice_transport_policy || "all" };
      state.room = msg.room; state.mayEnroll = msg.may_enroll !== false; state.waitingForPlace = false;
      status(`Joined room ${msg.room} as ${msg.participant}.`);
      // the others first: someone without a camera (or who refused it) still watches the call
      for (const p of msg.peers) if (p.publishing) subscribe(p.participant, p.name).catch(() => undefined);
      if (msg.may_enroll === false) {
        $("selfie").title = "this link does not let you enroll a selfie avatar";
      } else {
        const kept = await avatarStore.get().catch(() => undefined);
        if (kept) {   // the avatar of an earlier selfie: no new enrollment needed
          state.restoring = true;
          send("avatar", { file: kept });
        }
      }
      if (msg.may_publish === false) {   // a link for watching: no camera asked for
        state.cameraProblem = "this link is for watching";
        status(`Watching room ${msg.room}: this link is for watching, the others do not see you.`);
        break;
      }
      await startPublishing();
      break;
    case "answer": {
      const pending = state.pendingAnswers.get(msg.target || "");
      state.pendingAnswers.delete(msg.target || "");
      if (pending) pending.resolve(msg);
      break;
    }
    case "peer":
      if (msg.event === "publishing") subscribe(msg.participant, msg.name).catch(() => undefined);   // closed meanwhile
      if (msg.event === "left") unsubscribe(msg.participant);
      status(msg.event === "joined" ? `${msg.name} joined the call.`
           : msg.event === "publishing" ? `${msg.name} is on camera.` : `${msg.name} left the call.`);
      break;
    case "stats": state.lastStats = msg.stats; break;
    case "place_free":   // the server that was full has a place: offer the camera again
      if (state.waitingForPlace && !state.publishPc) {
        state.waitingForPlace = false;
        status(`A place freed in room ${state.room}: publishing your camera...`);
        await startPublishing();
      }
      break;
    case "enrolled":
      $("forget").disabled = false;
      $("selfie").disabled = !state.publishPc;
      if (msg.file) {
        await avatarStore.put(msg.file).catch((err) => status(`Could not keep the avatar in this browser: ${err}`));
        status(`Enrolled a new avatar (${msg.avatar}); this browser keeps it for your next calls.` +
               (msg.warnings ? ` Note: ${msg.warnings.join(" ")}` : ""));
      } else {
        status(state.restoring ? "Using the avatar this browser kept from your last selfie." : `Avatar ${msg.avatar}.`);
        state.keptAvatarUsed = state.restoring;
      }
      state.restoring = false;
      break;
    case "error": {   // a selfie the server could not use says what to change (face the camera, come closer...)
      // Refused for good: a fatal error (an expired token, a full room), or any answer to the join but a
      // draining server's, which asks to come back later.
      const joining = !state.me;
      if (msg.fatal || (joining && !COME_BACK.has(msg.code))) state.refused = true;
      if (COME_BACK.has(msg.code)) { state.comeBack = msg.message; break; }   // said when the socket closes
      if (joining) {
        status(`Could not join: ${msg.message}`);
        state.ws.close();
        break;
      }
      if (msg.code === "enroll_failed" || msg.code === "enroll_busy") $("selfie").disabled = !state.publishPc;
      if (msg.code === "bad_avatar") {   // the kept avatar no longer fits this server (e.g. an older format)
        state.restoring = false;
        await avatarStore.forget().catch(() => undefined);
        status(`The avatar this browser kept could not be used (${msg.message}). Take a new selfie.`);
        break;
      }
      if (PUBLISH_REFUSALS.has(msg.code) && state.pendingAnswers.has("")) {   // the camera's offer, refused
        state.waitingForPlace = msg.code === "server_full";    // the server says when a place frees
        state.pendingAnswers.get("").reject(new Error(msg.message));
        state.pendingAnswers.delete("");
        break;
      }
      status(msg.code === "enroll_failed" ? `Could not enroll that selfie: ${msg.message}`
           : msg.code === "enroll_busy" ? `Could not enroll now: ${msg.message}`
           : `Server error ${msg.code}: ${msg.message}`);
      break;
    }
  }
}

// Errors of a server that stops or drains: not a refusal, the page joins again (the socket then closes).
const COME_BACK = new Set(["draining", "shutting_down"]);

function showOwnTiles(shown) {   // a page that watches has no camera or avatar of its own to show
  $("tile-camera").hidden = !shown;
  $("tile-preview").hidden = !shown || !$("preview").checked;
}

async function collectStats() {
  const all = [["preview", state.publishPc], ...[...state.subscriptions].map(([k, v]) => [k, v.pc])];
  for (const [id, pc] of all) {
    if (!pc) continue;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") state.framesDecoded[id] = s.framesDecoded || 0;
    });
  }
  if (state.ws && state.ws.readyState === WebSocket.OPEN && state.me) send("stats");
  $("stats").textContent = JSON.stringify({ framesDecoded: state.framesDecoded, server: state.lastStats }, null, 1);
}

// How often, and after how long, a page whose connection dropped joins again (1, 2, 4, 8, 16 s).
const REJOIN_TRIES = 5;

function join(ev) {
  ev.preventDefault();
  state.wanted = true; state.tries = 0; state.refused = false;
  $("join").disabled = true; $("leave").disabled = false;
  state.statsTimer = setInterval(collectStats, 1000);
  connect();
}

function connect() {
  // beside the page, so that a proxy serving it under a path (https://example.org/avatars/) serves this too
  const address = new URL("ws", location.href);
  address.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  address.search = ""; address.hash = "";
  const ws = new WebSocket(address.href);
  ws.binaryType = "arraybuffer";
  state.ws = ws; state.me = null; state.comeBack = null; state.keptAvatarUsed = false;
  const fields = { token: $("token").value.trim(), room: $("room").value.trim(), preview: $("preview").checked };
  if ($("avatar").value.trim()) fields.avatar = $("avatar").value.trim();   // one of the server's avatars
  ws.onopen = () => send("join", fields);
  ws.onmessage = (e) => onMessage(MessagePack.decode(new Uint8Array(e.data))).catch((err) => status(`Error: ${err}`));
  ws.onclose = () => {
    if (ws !== state.ws) return;     // an earlier connection's late close
    dropMedia();
    // a dropped network, a restarted server: join again, unless the server refused this page for good
    if (state.wanted && !state.refused && state.tries < REJOIN_TRIES) {
      const delay = 1000 * 2 ** state.tries++;
      status(state.comeBack ? `${state.comeBack} (joining again in ${delay / 1000} s...)`
                            : `Connection lost; joining again in ${delay / 1000} s...`);
      state.rejoinTimer = setTimeout(connect, delay);
    } else {
      if (state.wanted && !state.refused) status("Disconnected.");   // a refusal's own message stays
      leave();
    }
  };
}

function stopCamera() {
  if (state.publishPc) state.publishPc.close();
  if (state.camera) state.camera.getTracks().forEach((t) => t.stop());
  state.publishPc = null; state.camera = null;
}

function dropMedia() {
  for (const pid of [...state.subscriptions.keys()]) unsubscribe(pid);
  stopCamera();
  $("selfie").disabled = true;
  showOwnTiles(false);
  for (const pending of state.pendingAnswers.values()) pending.reject(new Error("the connection closed"));
  state.pendingAnswers.clear();
}

function leave() {
  state.wanted = false;
  clearTimeout(state.rejoinTimer);
  if (state.ws && state.ws.readyState === WebSocket.OPEN) { send("leave"); state.ws.close(); }
  dropMedia();
  clearInterval(state.statsTimer);
  state.lastStats = null; $("stats").textContent = "";
  $("join").disabled = false; $("leave").disabled = true; $("selfie").disabled = true;
}

async function takeSelfie() {
  const video = $("camera");
  if (!state.publishPc || !video.videoWidth) return;   // no camera picture yet
  $("selfie").disabled = true;                         // one enrollment at a time: back on its answer
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  status("Enrolling your selfie (this takes a few seconds)...");
  // A snapshot of the participant's own camera: they are the one in the middle, whoever is beside them.
  send("enroll", { image: new Uint8Array(await blob.arrayBuffer()), face: "center" });
}

const params = new URLSearchParams(location.search);
$("room").value = params.get("room") || "";
$("token").value = params.get("token") || "";
$("avatar").value = params.get("avatar") || "";
$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", () => { leave(); status("Left the call."); });
$("selfie").addEventListener("click", () => takeSelfie().catch((err) => status(`Error: ${err}`)));
$("forget").addEventListener("click", () => avatarStore.forget().then(() => {
  $("forget").disabled = true;
  status("This browser no longer keeps your avatar (this call still shows it).");
}).catch((err) => status(`Error: ${err}`)));
avatarStore.get().then((kept) => { if (kept) $("forget").disabled = false; }).catch(() => undefined);
if (params.get("autojoin") === "1" && $("room").value && $("token").value) $("join").click();
