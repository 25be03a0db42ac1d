// tradewatch /ui: renders the collector's board, kept live by server-sent events.
// No framework, no remote request: everything comes from this origin.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var MAX_POINTS = 1800;
  var SHAPE = { ok: "\u2714", warn: "\u25B2", bad: "\u2716", neutral: "" };
  var state = { epoch: 0, panels: {}, alerts: [], actions: false, components: [] };
  var seen = {}; // "epoch/id" -> ms when first shown
  var $ = function (id) { return document.getElementById(id); };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function toneText(tone, text) {
    var s = SHAPE[tone] || "";
    return s ? s + " " + text : text;
  }
  function fmtTime(ms) {
    var d = new Date(ms);
    return d.toLocaleTimeString();
  }

  // ---- merging messages -------------------------------------------------------------
  function apply(msg, full) {
    if (full || msg.epoch !== state.epoch) {
      state.panels = {};
    }
    state.epoch = msg.epoch;
    var ids = {};
    msg.panels.forEach(function (p) {
      ids[p.id] = true;
      var old = state.panels[p.id];
      if (old && !full) {
        for (var k in p.series) {
          var o = old.series[k];
          if (o) {
            // The server sends only points this page has not had yet.
            p.series[k].points.forEach(function (pt) { o.points.push(pt); });
            if (o.points.length > MAX_POINTS) o.points.splice(0, o.points.length - MAX_POINTS);
            o.limit = p.series[k].limit;
            p.series[k] = o;
          }
        }
      }
      state.panels[p.id] = p;
    });
    state.alerts = msg.alerts;
    state.actions = msg.actions_enabled;
    state.components = msg.components;
    state.status = msg.status;
    state.nowMs = msg.now_ms;
    render();
  }

  // ---- rendering ----------------------------------------------------------------------
  function chart(key, s) {
    var W = 300, H = 90, P = 4;
    var fig = el("figure");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("role", "img");
    svg.setAttribute("data-series", key);
    svg.setAttribute("data-points", String(s.points.length));
    var pts = s.points;
    var last = pts.length ? pts[pts.length - 1][1] : null;
    var label = s.label + (last !== null ? ": " + last.toFixed(2) + s.unit : "") +
      (s.limit !== undefined && s.limit !== null ? " (limit " + s.limit + s.unit + ")" : "");
    svg.setAttribute("aria-label", label);
    var bg = document.createElementNS(SVG, "rect");
    bg.setAttribute("class", "bg"); bg.setAttribute("width", W); bg.setAttribute("height", H);
    svg.appendChild(bg);
    if (pts.length) {
      var lo = Infinity, hi = -Infinity, t0 = pts[0][0], t1 = pts[pts.length - 1][0];
      pts.forEach(function (p) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); });
      var hasLimit = s.limit !== undefined && s.limit !== null;
      if (hasLimit) { lo = Math.min(lo, s.limit); hi = Math.max(hi, s.limit); }
      if (hi === lo) { hi += 1; lo -= 1; }
      var pad = (hi - lo) * 0.08; hi += pad; lo -= pad;
      var x = function (t) { return P + (t1 === t0 ? W - 2 * P : (t - t0) / (t1 - t0) * (W - 2 * P)); };
      var y = function (v) { return H - P - (v - lo) / (hi - lo) * (H - 2 * P); };
      if (hasLimit) {
        var ln = document.createElementNS(SVG, "line");
        ln.setAttribute("class", "limit");
        ln.setAttribute("x1", 0); ln.setAttribute("x2", W);
        ln.setAttribute("y1", y(s.limit)); ln.setAttribute("y2", y(s.limit));
        svg.appendChild(ln);
        var tl = document.createElementNS(SVG, "text");
        tl.setAttribute("x", W - P); tl.setAttribute("y", Math.max(11, y(s.limit) - 3));
        tl.setAttribute("text-anchor", "end");
        tl.textContent = "limit " + s.limit + s.unit;
        svg.appendChild(tl);
      }
      [[hi, 11], [lo, H - 3]].forEach(function (a) {
        var t = document.createElementNS(SVG, "text");
        t.setAttribute("class", "axis"); t.setAttribute("x", P); t.setAttribute("y", a[1]);
        t.textContent = a[0].toFixed(Math.abs(a[0]) >= 100 ? 0 : 2);
        svg.appendChild(t);
      });
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", "line");
      line.setAttribute("points", pts.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" "));
      svg.appendChild(line);
    }
    fig.appendChild(svg);
    fig.appendChild(el("figcaption", null, label));
    return fig;
  }

  function panelNode(p, container) {
    var sel = '[data-panel="' + CSS.escape(p.id) + '"]';
    var node = container.querySelector(sel);
    if (!node) {
      node = el("article", { "class": "panel", "data-panel": p.id, "aria-label": p.title });
      node.appendChild(el("h3"));
      node.appendChild(el("dl"));
      node.appendChild(el("div", { "class": "charts" }));
      node.appendChild(el("div", { "class": "table" }));
      node.appendChild(el("div", { "class": "actions" }));
      container.appendChild(node);
    }
    var h = node.children[0];
    h.textContent = "";
    h.appendChild(el("span", null, p.title));
    if (p.badge) {
      h.appendChild(el("span", { "class": "badge", "data-badge": p.badge.text, "data-tone": p.badge.tone }, toneText(p.badge.tone, p.badge.text)));
    }
    var dl = node.children[1];
    dl.textContent = "";
    p.fields.forEach(function (f) {
      dl.appendChild(el("dt", null, f.label));
      var dd = el("dd", { "data-field": f.key, "data-tone": f.tone }, toneText(f.tone, f.text));
      if (f.value !== undefined) dd.setAttribute("data-value", String(f.value));
      dl.appendChild(dd);
    });
    var charts = node.children[2];
    charts.textContent = "";
    Object.keys(p.series).forEach(function (k) { charts.appendChild(chart(k, p.series[k])); });
    var tdiv = node.children[3];
    tdiv.textContent = "";
    if (p.table && p.table.rows) {
      var t = el("table");
      t.appendChild(el("caption", null, p.table.title));
      var tr = el("tr");
      p.table.columns.forEach(function (c) { tr.appendChild(el("th", { scope: "col" }, c)); });
      t.appendChild(tr);
      p.table.rows.forEach(function (r) {
        var row = el("tr");
        r.forEach(function (c) { row.appendChild(el("td", null, c)); });
        t.appendChild(row);
      });
      if (!p.table.rows.length) {
        var e = el("tr"); e.appendChild(el("td", { colspan: p.table.columns.length }, "none")); t.appendChild(e);
      }
      tdiv.appendChild(t);
    }
    // Buttons are kept (not rebuilt) so keyboard focus survives updates.
    var adiv = node.children[4];
    var want = state.actions ? p.actions : [];
    Array.prototype.slice.call(adiv.children).forEach(function (b) {
      if (!want.some(function (a) { return a.key === b.getAttribute("data-action"); })) adiv.removeChild(b);
    });
    want.forEach(function (a) {
      if (!adiv.querySelector('[data-action="' + CSS.escape(a.key) + '"]')) {
        var b = el("button", { type: "button", "data-action": a.key }, a.label);
        b.addEventListener("click", function () {
          act("/ui/api/panels/" + encodeURIComponent(p.id) + "/actions/" + encodeURIComponent(a.key), a.label + " (" + p.title + ")");
        });
        adiv.appendChild(b);
      }
    });
  }

  function renderAlerts() {
    var ol = $("timeline");
    var keep = {};
    var list = state.alerts.slice().reverse();
    list.forEach(function (a, i) {
      var key = state.epoch + "/" + a.id;
      keep[key] = true;
      if (!seen[key]) seen[key] = Date.now();
      var li = ol.querySelector('[data-key="' + key + '"]');
      if (!li) {
        li = el("li", { "data-key": key, "data-alert-id": String(a.id), "data-alert-name": a.name,
          "data-state": a.state, "data-severity": a.severity, "data-at-ms": String(a.at_ms),
          "data-seen-ms": String(seen[key]), tabindex: "-1" });
        li.appendChild(el("div", { "class": "head" }));
        li.appendChild(el("div", { "class": "summary" }, a.summary));
        li.appendChild(el("div", { "class": "meta" }));
        li.appendChild(el("div", { "class": "channels" }));
        li.appendChild(el("div", { "class": "ack" }));
      }
      var pos = ol.children[i];
      if (pos !== li) ol.insertBefore(li, pos || null);
      var head = li.children[0];
      head.textContent = "";
      var tone = a.state === "resolved" ? "ok" : (a.severity === "critical" ? "bad" : (a.severity === "warning" ? "warn" : "neutral"));
      head.appendChild(el("span", { "class": "tone", "data-tone": tone }, toneText(tone, a.state.toUpperCase() + " " + a.severity)));
      head.appendChild(document.createTextNode(" " + a.name));
      var bot = (a.labels || []).filter(function (l) { return l[0] === "bot"; })[0];
      li.children[2].textContent = fmtTime(a.at_ms) + " \u00b7 " + a.source + (bot ? " \u00b7 bot " + bot[1] : "");
      var ch = li.children[3];
      ch.textContent = "";
      a.channels.forEach(function (c) {
        ch.appendChild(el("span", { "class": "tone", "data-channel": c.channel, "data-tone": c.ok ? "ok" : "bad" },
          toneText(c.ok ? "ok" : "bad", c.channel + (c.ok ? " sent" : ": " + c.detail))));
        ch.appendChild(document.createTextNode(" "));
      });
      var ack = li.children[4];
      li.setAttribute("data-acknowledged", a.acknowledged_ms ? "1" : "0");
      if (a.acknowledged_ms) {
        ack.textContent = "acknowledged " + fmtTime(a.acknowledged_ms);
      } else if (state.actions && a.state === "firing") {
        if (!ack.querySelector("button")) {
          ack.textContent = "";
          var b = el("button", { type: "button", "data-ack": String(a.id) }, "Acknowledge");
          b.addEventListener("click", function () { act("/ui/api/alerts/" + a.id + "/ack", "acknowledge " + a.name); });
          ack.appendChild(b);
        }
      } else {
        ack.textContent = "";
      }
    });
    Array.prototype.slice.call(ol.children).forEach(function (li) {
      if (!keep[li.getAttribute("data-key")]) ol.removeChild(li);
    });
    if (!list.length && !ol.children.length) ol.appendChild(el("li", { "class": "empty", "data-key": "none" }, "No alert yet."));
  }

  function render() {
    var bots = $("bots"), coll = $("collector");
    var ids = {};
    Object.keys(state.panels).forEach(function (id) {
      var p = state.panels[id];
      ids[id] = true;
      panelNode(p, p.group === "collector" ? coll : bots);
    });
    [bots, coll].forEach(function (c) {
      Array.prototype.slice.call(c.querySelectorAll("[data-panel]")).forEach(function (n) {
        if (!ids[n.getAttribute("data-panel")]) c.removeChild(n);
      });
      var empty = c.querySelector(".empty");
      if (empty && c.querySelector("[data-panel]")) c.removeChild(empty);
    });
    renderAlerts();
    var ov = $("overall");
    var tone = state.status === "HEALTHY" ? "ok" : (state.status === "DEGRADED" ? "warn" : "bad");
    ov.setAttribute("data-status", state.status);
    ov.textContent = "";
    ov.appendChild(el("span", { "class": "badge", "data-tone": tone }, toneText(tone, state.status)));
    var ul = $("components");
    ul.textContent = "";
    state.components.forEach(function (c) {
      var t = c.state === "ok" || c.state === "stopped" ? "ok" : (c.state === "failed" ? "bad" : "warn");
      ul.appendChild(el("li", { "data-component": c.kind + " " + c.id, "data-tone": t }, toneText(t, c.kind + " " + c.id + ": " + c.state)));
    });
    $("token-form").hidden = !state.actions;
  }

  // ---- actions ------------------------------------------------------------------------
  function token() { try { return sessionStorage.getItem("tradewatch-ui-token") || ""; } catch (e) { return ""; } }
  function act(url, what) {
    var out = $("action-result");
    out.textContent = what + "\u2026";
    fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Authorization": "Bearer " + token(), "X-Tradewatch-UI": "1" }
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        out.setAttribute("data-code", String(r.status));
        out.textContent = r.ok ? toneText("ok", what + ": done" + (body.result ? " (" + body.result + ")" : ""))
          : toneText("bad", what + ": refused (" + r.status + (body.error ? ": " + body.error : "") + ")");
      });
    }, function (e) { out.textContent = toneText("bad", what + ": " + e); });
  }
  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    try { sessionStorage.setItem("tradewatch-ui-token", $("token").value); } catch (e) { /* private mode */ }
    $("token").value = "";
    $("token-state").textContent = "set for this tab";
    $("token-state").setAttribute("data-set", "1");
  });

  // ---- the event stream (EventSource reconnects by itself) --------------------------
  var conn = $("conn");
  var snapshots = 0;
  function connState(s, text) {
    conn.setAttribute("data-state", s);
    conn.children[0].textContent = s === "live" ? "\u25CF" : "\u25CB";
    conn.children[1].textContent = text;
  }
  var es = new EventSource("/ui/events");
  es.onopen = function () { connState("live", "live"); };
  es.onerror = function () { connState("reconnecting", "reconnecting\u2026"); };
  es.addEventListener("snapshot", function (e) {
    snapshots += 1;
    conn.setAttribute("data-snapshots", String(snapshots));
    connState("live", "live");
    apply(JSON.parse(e.data), true);
    conn.setAttribute("data-epoch", String(state.epoch));
  });
  es.addEventListener("update", function (e) {
    apply(JSON.parse(e.data), false);
    conn.setAttribute("data-updated-ms", String(Date.now()));
  });
})();
