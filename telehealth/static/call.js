// The call page of a built-in room: signaling over the server's websocket ($visit-ws), media
// peer to peer. The newcomer offers to everyone already in the room; the others answer.
// window.visit shows the state (status, peers, their connection state and remote video).
(() => {
  "use strict";
  const state = window.visit = { status: "starting", reason: null, peer: null, peers: {} };
  const statusLine = document.getElementById("status");
  const remotes = document.getElementById("remotes");
  const say = (text) => { statusLine.textContent = text; };

  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  // The token leaves the address bar (and the history) at once.
  history.replaceState(null, "", location.pathname + location.search);
  const room = decodeURIComponent(location.pathname.split("/").pop());
  const socketUrl = new URL("../$visit-ws", location.href);
  socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
  socketUrl.hash = "";

  const peers = new Map();  // peer id -> {pc, video, chain}
  let socket = null;
  let iceServers = [];
  let localMedia = null;  // a promise of the camera and microphone

  function refuse(reason) {
    state.status = "refused";
    state.reason = reason;
    say("You cannot join this visit: " + reason);
  }

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function report(id) {
    const entry = peers.get(id);
    const shown = state.peers[id];
    if (!entry || !shown) return;
    const stream = entry.video.srcObject;
    shown.connectionState = entry.pc.connectionState;
    shown.remoteVideoTracks = stream ? stream.getVideoTracks().filter((t) => t.readyState === "live").length : 0;
    shown.videoWidth = entry.video.videoWidth;
    const names = Object.values(state.peers).filter((p) => p.connectionState === "connected").map((p) => p.display || p.participant);
    say(names.length ? "In the visit with " + names.join(", ") : "Waiting for the others…");
  }

  function connect(info, offerer) {
    const pc = new RTCPeerConnection({ iceServers });
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.autoplay = true;
    video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = info.display || info.participant;
    figure.append(video, caption);
    remotes.append(figure);
    const entry = { pc, video, figure, chain: Promise.resolve() };
    peers.set(info.peer, entry);
    state.peers[info.peer] = { participant: info.participant, display: info.display, connectionState: "new",
                               remoteVideoTracks: 0, videoWidth: 0 };
    pc.onicecandidate = (event) => { if (event.candidate) send({ type: "signal", to: info.peer, data: { candidate: event.candidate } }); };
    pc.ontrack = (event) => { video.srcObject = event.streams[0] || new MediaStream([event.track]); report(info.peer); };
    pc.onconnectionstatechange = () => report(info.peer);
    video.onloadedmetadata = () => report(info.peer);
    video.onresize = () => report(info.peer);
    entry.chain = entry.chain.then(async () => {
      const stream = await localMedia;
      stream.getTracks().forEach((track) => pc.addTrack(track, stream));
      if (offerer) {
        await pc.setLocalDescription(await pc.createOffer());
        send({ type: "signal", to: info.peer, data: { sdp: pc.localDescription } });
      }
    });
    return entry;
  }

  function leave(id) {
    const entry = peers.get(id);
    if (!entry) return;
    entry.pc.close();
    entry.figure.remove();
    peers.delete(id);
    delete state.peers[id];
  }

  async function apply(id, data) {
    const pc = peers.get(id).pc;
    if (data.sdp) {
      await pc.setRemoteDescription(data.sdp);
      if (data.sdp.type === "offer") {
        await pc.setLocalDescription(await pc.createAnswer());
        send({ type: "signal", to: id, data: { sdp: pc.localDescription } });
      }
    } else if (data.candidate) {
      await pc.addIceCandidate(data.candidate);
    }
  }

  function receive(message) {
    if (message.type === "refused") {
      refuse(message.reason);
    } else if (message.type === "welcome") {
      state.status = "joined";
      state.peer = message.peer;
      iceServers = message.iceServers || [];
      localMedia = navigator.mediaDevices.getUserMedia({ video: true, audio: true }).then((stream) => {
        document.getElementById("local").srcObject = stream;
        return stream;
      });
      localMedia.catch((error) => say("No camera or microphone: " + error.message));
      say(message.peers.length ? "Connecting…" : "Waiting for the others…");
      message.peers.forEach((info) => connect(info, true));
    } else if (message.type === "signal") {
      const entry = peers.get(message.from) || connect({ peer: message.from, participant: "", display: "" }, false);
      entry.chain = entry.chain.then(() => apply(message.from, message.data)).catch((error) => console.error(error));
    } else if (message.type === "peer-joined") {
      // The newcomer offers; remember who they are for when their offer comes.
      state.names = Object.assign(state.names || {}, { [message.peer]: message });
    } else if (message.type === "peer-left") {
      leave(message.peer);
      report(null);
    }
    if (message.type === "signal" && state.names && state.names[message.from]) {
      const info = state.names[message.from];
      Object.assign(state.peers[message.from], { participant: info.participant, display: info.display });
    }
  }

  if (!token) {
    refuse("this link has no join token");
    return;
  }
  socket = new WebSocket(socketUrl);
  socket.onopen = () => send({ type: "join", room, token });
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = () => {
    if (state.status !== "refused") { state.status = "left"; say("You left the visit."); }
    peers.forEach((_, id) => leave(id));
  };
  document.getElementById("leave").onclick = () => socket.close(1000, "left");
})();
