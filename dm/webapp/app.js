// pointer-dm web client: plain JavaScript, no build step, no third-party code.
//
// The session JWT lives in this tab's memory (and sessionStorage, so a reload keeps you in;
// localStorage keeps only the ids, names and dev sign-in keys of users this browser created); it is sent only as "Authorization: Bearer" to dm and the edge, and as a WebSocket
// subprotocol to /v1/stream. It never goes into a URL. Videos play in a plain <video>:
// the edge recognises the browser by an HttpOnly media cookie set by
// POST /v1/playback-session, and the pointer in the video URL names the recipient.
"use strict";

const S = {
  cfg: null, token: null, me: null, ws: null, current: null, currentMode: null,
  media: [], selected: null, playbackTimer: null, seen: new Set(),
};
const $ = (id) => document.getElementById(id);

// Edge and dm error codes in words a person understands.
const WORDS = {
  session_missing: "you are not signed in to the video server",
  session_invalid: "your sign-in is not valid for the video server",
  session_expired: "your sign-in has expired; sign in again",
  playback_ended: "this browser signed out of the video server; sign in again",
  pointer_wrong_recipient: "this link was shared with someone else, not with you",
  pointer_required: "this video can only be watched from a message it was shared in",
  pointer_media_mismatch: "this link is for a different video",
  token_expired: "this link has expired; reopen the conversation for a fresh one",
  token_bad_signature: "this link has been tampered with",
  token_malformed: "this link is damaged",
  token_unknown_key: "this link was signed by a key the server does not know",
  message_unsent: "it was unsent by its sender",
  media_taken_down: "it has been taken down by moderators",
  grant_revoked: "its sender revoked it",
  not_a_member: "you are no longer in the conversation it was shared in",
  age_restricted: "it is restricted by age",
  region_restricted: "it is not available in your region",
  share_not_allowed: "you may not share this video",
  revocation_stale: "the video server cannot confirm it is still shared; try again shortly",
  media_not_found: "it no longer exists",
  playback_disabled: "the video server does not allow browser playback",
  not_member: "you are not in this conversation",
  blocked: "this person has blocked you",
  network: "the video server could not be reached",
};

function words(code) { return WORDS[code] || (code ? code.replace(/_/g, " ") : "no reason given"); }

function notice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = !text;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function call(url, { method = "GET", json, body, headers = {}, credentials = "same-origin" } = {}) {
  const h = { ...headers };
  if (S.token) h.Authorization = "Bearer " + S.token;
  if (json !== undefined) { h["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  let resp;
  try {
    resp = await fetch(url, { method, headers: h, body, credentials, referrerPolicy: "no-referrer",
                              cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "network", "the server could not be reached");
  }
  let doc = null;
  try { doc = await resp.json(); } catch (e) { doc = null; }
  if (!resp.ok) {
    const err = (doc && doc.error) || {};
    throw new ApiError(resp.status, err.code || "", err.message || resp.statusText);
  }
  return doc;
}
const dm = (path, opts) => call(path, opts);
const edge = (path, opts) => call(S.cfg.edge_url + path, { credentials: "include", ...opts });

function explain(err) {
  if (err instanceof ApiError) return `${words(err.code)} (${err.status || "no answer"} ${err.code})`;
  return String(err);
}

// -- signing in ------------------------------------------------------------------------------

function subOf(token) {
  // Display only: the servers verify the token; the page just shows who it says you are.
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).sub || "?";
  } catch (e) { return "?"; }
}

async function signIn(token, userId) {
  S.token = token;
  S.me = userId || subOf(token);
  try {
    await refreshPlayback();
  } catch (err) {
    S.token = null; S.me = null;
    notice("Could not sign in to the video server: " + explain(err));
    return;
  }
  sessionStorage.setItem("pdm.session", JSON.stringify({ token, user_id: S.me }));
  notice("");
  $("whoami").textContent = "signed in as " + S.me;
  $("whoami").dataset.user = S.me;
  $("sign-out").hidden = false;
  $("sign-in").hidden = true;
  $("app").hidden = false;
  renderMedia();
  await loadConversations();
  connectStream();
}

async function refreshPlayback() {
  // The edge sets an HttpOnly cookie (Path=/m/) bound to this user; the page never sees it.
  const r = await edge("/v1/playback-session", { method: "POST" });
  clearTimeout(S.playbackTimer);
  const wait_s = Math.max(10, r.expires_at - Date.now() / 1000 - 60);
  S.playbackTimer = setTimeout(() => refreshPlayback().catch((e) => notice(explain(e))), wait_s * 1000);
  return r;
}

async function signOut() {
  try { await edge("/v1/playback-session", { method: "DELETE" }); } catch (e) { /* expired */ }
  clearTimeout(S.playbackTimer);
  const ws = S.ws; S.ws = null; if (ws) ws.close();
  sessionStorage.removeItem("pdm.session");
  sessionStorage.removeItem("pdm.media");
  location.reload();
}

// -- users this browser created (dev issuer) --------------------------------------------------
// Remembered in localStorage as ids, the names typed here and each user's sign-in key (the
// dev issuer's password for that user), never a session token: picking one asks the dev
// issuer for a fresh session (POST /v1/dev/sessions with the key).

const KNOWN = "pdm.known-users";

function knownUsers() {
  try {
    const list = JSON.parse(localStorage.getItem(KNOWN) || "[]");
    return Array.isArray(list) ? list.filter((u) => u && typeof u.id === "string") : [];
  } catch (e) { return []; }
}

function saveKnownUsers(list) {
  localStorage.setItem(KNOWN, JSON.stringify(
    list.map((u) => ({ id: u.id, name: u.name || "", key: u.key || "" }))));
  renderKnownUsers();
}

function remember(id, name, key) {
  saveKnownUsers([{ id, name, key }, ...knownUsers().filter((u) => u.id !== id)].slice(0, 20));
}

function forget(id) { saveKnownUsers(knownUsers().filter((u) => u.id !== id)); }

function renderKnownUsers() {
  const list = knownUsers();
  const ul = $("known-user-list");
  ul.textContent = "";
  for (const u of list) {
    const li = document.createElement("li");
    li.dataset.id = u.id;
    const pick = document.createElement("button");
    pick.className = "pick";
    pick.textContent = "Sign in as " + (u.name ? `${u.name} (${u.id})` : u.id);
    pick.addEventListener("click", () => pickUser(u.id, u.key || ""));
    const drop = document.createElement("button");
    drop.className = "forget";
    drop.textContent = "Forget";
    drop.addEventListener("click", () => forget(u.id));
    li.append(pick, " ", drop);
    ul.append(li);
  }
  $("known-users").hidden = list.length === 0;
}

async function pickUser(id, key) {
  try {
    const u = await dm("/v1/dev/sessions", { method: "POST", json: { user_id: id, sign_in_key: key } });
    await signIn(u.session_token, u.user_id);
  } catch (err) {
    if (err instanceof ApiError && ["user_not_found", "sign_in_refused"].includes(err.code)) forget(id);
    notice("Could not sign in as " + id + ": " + explain(err));
  }
}

// -- conversations ---------------------------------------------------------------------------

async function loadConversations() {
  // The list holds ids; each conversation's members and mode come from its own record.
  const { conversations: ids } = await dm("/v1/conversations");
  const found = await Promise.all(ids.slice(0, 100).map(
    (id) => dm("/v1/conversations/" + encodeURIComponent(id)).catch(() => null)));
  const ul = $("conversations");
  ul.textContent = "";
  for (const c of found) {
    if (!c) continue;
    const li = document.createElement("li");
    li.dataset.id = c.id;
    const others = (c.members || []).filter((u) => u !== S.me).join(", ") || c.id;
    li.textContent = others + " ";
    const badge = document.createElement("span");
    badge.className = "badge " + c.mode;
    badge.textContent = c.mode;
    li.append(badge);
    if (c.id === S.current) li.classList.add("active");
    li.addEventListener("click", () => openConversation(c.id).catch((e) => notice(explain(e))));
    ul.append(li);
  }
}

async function createConversation(ev) {
  ev.preventDefault();
  const members = $("new-members").value.split(",").map((s) => s.trim()).filter(Boolean);
  try {
    const c = await dm("/v1/conversations", { method: "POST", json: { members, mode: $("new-mode").value } });
    $("new-members").value = "";
    await loadConversations();
    await openConversation(c.id);
  } catch (err) { notice("Could not open the conversation: " + explain(err)); }
}

async function openConversation(cid) {
  const c = await dm("/v1/conversations/" + encodeURIComponent(cid));
  S.current = c.id;
  S.currentMode = c.mode;
  S.seen.clear();
  for (const li of $("conversations").children) li.classList.toggle("active", li.dataset.id === c.id);
  $("no-conversation").hidden = true;
  $("conversation-view").hidden = false;
  $("conversation-title").textContent = "with " + (c.members.filter((u) => u !== S.me).join(", ") || "nobody");
  const badge = $("conversation-mode");
  badge.className = "badge " + c.mode;
  badge.textContent = c.mode + " mode";
  $("sealed-note").hidden = c.mode !== "sealed";
  $("send").disabled = c.mode === "sealed";
  $("messages").textContent = "";
  let after = null;
  for (let i = 0; i < 4; i++) {  // the latest 200 at most; enough for a demo
    const q = after ? "&after=" + encodeURIComponent(after) : "";
    const page = await dm(`/v1/conversations/${encodeURIComponent(c.id)}/messages?limit=50${q}`);
    page.messages.forEach(addMessage);
    if (!page.more) break;
    after = page.next_cursor;
  }
}

async function leave() {
  if (!S.current) return;
  try {
    await dm(`/v1/conversations/${encodeURIComponent(S.current)}/members/${encodeURIComponent(S.me)}`,
             { method: "DELETE" });
    S.current = null;
    $("conversation-view").hidden = true;
    $("no-conversation").hidden = false;
    await loadConversations();
  } catch (err) { notice("Could not leave: " + explain(err)); }
}

// -- messages and playback -------------------------------------------------------------------

function addMessage(m) {
  if (S.seen.has(m.id)) return;
  S.seen.add(m.id);
  const li = document.createElement("li");
  li.dataset.id = m.id;
  const mine = m.sender === S.me;
  if (mine) li.classList.add("mine");
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = (mine ? "you" : m.sender) + " · " + new Date(m.sent_at_ms).toLocaleTimeString();
  li.append(meta);
  if (m.kind === "sealed") {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "Sealed message: open it with the SDK.";
    li.append(p);
  }
  if (m.text) {
    const p = document.createElement("p");
    p.className = "text";
    p.textContent = m.text;
    li.append(p);
  }
  if (m.media) li.append(player(m, mine));
  if (mine) {
    const b = document.createElement("button");
    b.className = "unsend";
    b.textContent = "Unsend";
    b.addEventListener("click", () => unsend(m.id, b));
    li.append(b);
  }
  $("messages").append(li);
}

function player(m, mine) {
  const box = document.createElement("div");
  box.className = "media";
  const status = document.createElement("div");
  status.className = "status muted";
  // Readers get a URL with a pointer minted for them; the sender's own copy may have none,
  // and an owner needs none.
  const url = m.media.url || (mine ? `${S.cfg.edge_url}/m/${encodeURIComponent(m.media.id)}` : null);
  if (!url) {
    status.textContent = "Video " + m.media.id + " (read the conversation again for a link)";
    box.append(status);
    return box;
  }
  const video = document.createElement("video");
  video.controls = true;
  video.preload = "metadata";
  video.crossOrigin = "use-credentials";  // a CORS request: the edge must allow this origin
  video.setAttribute("playsinline", "");
  video.dataset.mediaId = m.media.id;
  let retried = false;
  video.addEventListener("playing", () => { status.className = "status playing"; status.textContent = "playing"; });
  video.addEventListener("error", async () => {
    const refusal = await probe(url);
    // Renew the media cookie once and reload when it may just be stale: expired (401), or
    // replaced by another user signing in in another tab of this browser profile (a video
    // in one of my conversations is meant for me, so a 403 may mean the cookie is not mine).
    const renewable = refusal && (refusal.status === 401 ||
      (refusal.status === 403 && m.conversation_id));
    if (renewable && !retried) {
      retried = true;
      try {
        await refreshPlayback();
        const at = video.currentTime;
        const resume = !video.paused;  // a play() asked for before the error still counts
        video.load();
        video.currentTime = at;
        if (resume) video.play().catch(() => { /* the error handler explains */ });
        return;
      } catch (e) { /* fall through and explain */ }
    }
    status.className = "status refusal";
    status.dataset.code = refusal ? refusal.code : "media_error";
    status.textContent = refusal
      ? `The video server refused this video: ${words(refusal.code)} (${refusal.status} ${refusal.code}).`
      : "This video could not be played by this browser.";
  });
  video.src = url;
  box.append(video, status);
  return box;
}

async function probe(url) {
  // A <video> error says nothing about why; ask the edge for one byte to learn the reason.
  try {
    const r = await fetch(url, { credentials: "include", headers: { Range: "bytes=0-0" },
                                 referrerPolicy: "no-referrer", cache: "no-store" });
    if (r.ok) return null;
    let code = "";
    try { code = (await r.json()).error.code; } catch (e) { code = ""; }
    return { status: r.status, code };
  } catch (e) {
    return { status: 0, code: "network" };
  }
}

function markUnsent(id) {
  const li = document.querySelector(`#messages li[data-id="${CSS.escape(id)}"]`);
  if (!li || li.classList.contains("unsent")) return;
  li.classList.add("unsent");
  const meta = li.querySelector(".meta");
  meta.textContent += " · unsent by the sender";
  const b = li.querySelector("button.unsend");
  if (b) b.remove();
}

async function unsend(id, button) {
  button.disabled = true;
  try {
    await dm(`/v1/conversations/${encodeURIComponent(S.current)}/messages/${encodeURIComponent(id)}`,
             { method: "DELETE" });
    markUnsent(id);
  } catch (err) { button.disabled = false; notice("Could not unsend: " + explain(err)); }
}

async function send(ev) {
  ev.preventDefault();
  if (!S.current || S.currentMode === "sealed") return;
  const body = {};
  const text = $("text").value.trim();
  if (text) body.text = text;
  if ($("attach").checked) {
    const id = $("media-id").value.trim() || S.selected;
    if (!id) { notice("Pick or upload a video to attach."); return; }
    body.media_id = id;
  }
  if (!body.text && !body.media_id) return;
  try {
    const m = await dm(`/v1/conversations/${encodeURIComponent(S.current)}/messages`,
                       { method: "POST", json: body, headers: { "Idempotency-Key": randomKey() } });
    $("text").value = "";
    notice("");
    addMessage(m);
  } catch (err) { notice("Not sent: " + explain(err)); }
}

function randomKey() {
  const a = new Uint8Array(12);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function openLink(ev) {
  ev.preventDefault();
  const url = $("link-url").value.trim();
  if (!url.startsWith(S.cfg.edge_url + "/m/")) { notice("That is not a video link of this server."); return; }
  const id = decodeURIComponent(url.slice(S.cfg.edge_url.length + 3).split("?")[0]);
  const box = $("link-player");
  box.textContent = "";
  box.append(player({ media: { id, url } }, false));
}

// -- my videos -------------------------------------------------------------------------------

async function upload() {
  const file = $("upload-file").files[0];
  if (!file) { notice("Pick a video file first."); return; }
  const meta = { content_type: file.type || "video/mp4", visibility: "private",
                 min_age: Number($("upload-min-age").value) || 0 };
  const form = new FormData();
  form.append("metadata", new Blob([JSON.stringify(meta)], { type: "application/json" }));
  form.append("file", file, file.name);
  $("upload").disabled = true;
  try {
    const r = await edge("/v1/media", { method: "POST", body: form });
    S.media.push({ id: r.id, name: file.name });
    sessionStorage.setItem("pdm.media", JSON.stringify(S.media));
    S.selected = r.id;
    $("attach").checked = true;
    renderMedia();
    notice("");
  } catch (err) { notice("Upload refused: " + explain(err)); }
  finally { $("upload").disabled = false; }
}

function renderMedia() {
  const ul = $("my-media");
  ul.textContent = "";
  for (const m of S.media) {
    const li = document.createElement("li");
    li.textContent = `${m.name} (${m.id})`;
    li.dataset.id = m.id;
    if (m.id === S.selected) li.classList.add("selected");
    li.addEventListener("click", () => { S.selected = m.id; $("media-id").value = ""; renderMedia(); });
    ul.append(li);
  }
}

// -- live delivery ---------------------------------------------------------------------------

function connectStream() {
  const url = location.origin.replace(/^http/, "ws") + "/v1/stream";
  // The session rides in the subprotocol list, never in the URL; the server answers with
  // "pointer-dm.v1" only.
  const ws = new WebSocket(url, ["pointer-dm.v1", "bearer." + S.token]);
  S.ws = ws;
  ws.addEventListener("open", () => { document.body.dataset.live = "1"; });
  ws.addEventListener("message", (ev) => {
    try { onEvent(JSON.parse(ev.data)); } catch (e) { console.error(e); }
  });
  ws.addEventListener("close", () => {
    document.body.dataset.live = "0";
    if (S.ws === ws && S.token) setTimeout(() => { if (S.ws === ws) connectStream(); }, 2000);
  });
}

function onEvent(ev) {
  if (ev.type === "joined" || ev.type === "member_left") {
    loadConversations().catch((e) => notice(explain(e)));
    if (ev.type === "member_left" && ev.conversation_id === S.current && ev.user_id !== S.me) {
      notice(`${ev.user_id} left the conversation.`);
    }
    return;
  }
  if (ev.conversation_id !== S.current) {
    const li = document.querySelector(`#conversations li[data-id="${CSS.escape(ev.conversation_id)}"]`);
    if (li && ev.type === "message") li.style.fontWeight = "bold";
    return;
  }
  if (ev.type === "message") addMessage(ev.message);
  else if (ev.type === "unsent") markUnsent(ev.message_id);
}

// -- start -----------------------------------------------------------------------------------

async function start() {
  S.cfg = await dm("/app/config.json");
  $("dev-sign-in").hidden = !S.cfg.dev_issuer;
  if (S.cfg.dev_issuer) renderKnownUsers();
  $("create-user").addEventListener("click", async () => {
    try {
      const u = await dm("/v1/users", { method: "POST", json: {
        age: $("new-age").value, region: $("new-region").value.trim().toUpperCase() } });
      remember(u.user_id, $("new-name").value.trim(), u.sign_in_key);
      await signIn(u.session_token, u.user_id);
    } catch (err) { notice("Could not create a user: " + explain(err)); }
  });
  $("use-token").addEventListener("click", () => {
    const t = $("paste-token").value.trim();
    $("paste-token").value = "";
    if (t) signIn(t, null);
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-conversation").addEventListener("submit", createConversation);
  $("composer").addEventListener("submit", send);
  $("upload").addEventListener("click", upload);
  $("leave").addEventListener("click", leave);
  $("open-link").addEventListener("submit", openLink);
  S.media = JSON.parse(sessionStorage.getItem("pdm.media") || "[]");
  const saved = JSON.parse(sessionStorage.getItem("pdm.session") || "null");
  if (saved && saved.token) await signIn(saved.token, saved.user_id);
}

start().catch((e) => notice("The web client could not start: " + explain(e)));
