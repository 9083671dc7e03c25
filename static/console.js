// The VE console page (templates/ves/console.html): xterm.js on a WebSocket to the panel.
// A POST to the VE's ticket URL mints a one-time ticket; the WebSocket handshake carries it.
// Binary frames are terminal bytes both ways; text frames are JSON control messages.
(function () {
  "use strict";
  const el = document.getElementById("terminal");
  const state = document.getElementById("console-state");
  const again = document.getElementById("console-reconnect");
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000,
    fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.hakoTerminal = term; // for the browser tests: they read the screen from its buffer
  const enc = new TextEncoder();
  let ws = null;

  function setState(name, text) {
    state.dataset.state = name;
    state.textContent = text;
  }

  async function connect() {
    setState("connecting", state.textContent);
    let resp, data;
    try {
      resp = await fetch(el.dataset.ticketUrl, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRFToken": el.dataset.csrf },
        body: new URLSearchParams({ kind: el.dataset.kind }) });
      data = await resp.json();
    } catch (e) {
      data = { error: String(e) };
    }
    if (!resp || !resp.ok) {
      setState("error", (data && data.error) || (resp && resp.statusText) || "error");
      again.hidden = false;
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(proto + "//" + location.host + el.dataset.wsPath + "?ticket=" +
      encodeURIComponent(data.ticket) + "&cols=" + term.cols + "&rows=" + term.rows);
    ws.binaryType = "arraybuffer";
    ws.onopen = function () { setState("open", el.dataset.msgOpen); term.focus(); };
    ws.onmessage = function (ev) {
      if (typeof ev.data !== "string") {
        term.write(new Uint8Array(ev.data));
        return;
      }
      const msg = JSON.parse(ev.data);
      if (msg.type === "exit") setState("exited", el.dataset.msgExit + " " + msg.code);
      else if (msg.type === "closed") setState("closed", el.dataset.msgIdle);
      else if (msg.type === "error") setState("error", msg.message || el.dataset.msgSilent);
    };
    ws.onclose = function () {
      if (state.dataset.state === "open" || state.dataset.state === "connecting") {
        setState("closed", el.dataset.msgClosed);
      }
      again.hidden = false;
    };
  }

  term.onData(function (d) { if (ws && ws.readyState === 1) ws.send(enc.encode(d)); });
  term.onBinary(function (d) {
    if (ws && ws.readyState === 1) ws.send(Uint8Array.from(d, function (c) { return c.charCodeAt(0); }));
  });
  term.onResize(function (size) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "resize", cols: size.cols, rows: size.rows }));
  });
  window.addEventListener("resize", function () { fit.fit(); });
  again.addEventListener("click", function () {
    again.hidden = true;
    term.reset();
    connect();
  });
  connect();
})();
