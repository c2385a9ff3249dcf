// The ring and call-waiting banners, the 1:1 call screen and the stats panel.

import { h, fill, videoFor } from "./dom.js";
import { icon } from "./icons.js";
import { callStatus, formatBitrate, shortName } from "./format.js";
import { initial } from "./view_rooms.js";
import { inCall, remoteByPurpose } from "./state.js";
import { groupRingBanner } from "./view_group.js";

export function renderBanners(el, vm, actions) {
  const parts = [];
  if (!vm.e2ee) {
    parts.push(
      h(
        "div",
        { class: "banner danger", "data-testid": "no-transform-warning", role: "alert" },
        icon("warn"),
        h("div", {}, h("strong", {}, "Calls cannot be end-to-end encrypted in this browser."), " It lacks RTCRtpScriptTransform, so sealcall places no calls here. Use a current Chromium, Firefox or Safari."),
      ),
    );
  }
  if (vm.ringing) parts.push(vm.e2ee ? ringBanner(vm.ringing, actions) : cannotAnswer(vm.ringing, actions));
  if (vm.waiting) parts.push(waitingBanner(vm.waiting, actions));
  for (const ring of vm.group_rings ?? []) parts.push(groupRingBanner(ring, actions));
  if (vm.notice) {
    parts.push(
      h("div", { class: "banner info", "data-testid": "notice", role: "status" }, h("span", {}, vm.notice.text), h("button", { class: "btn small", onclick: actions.dismissNotice }, "OK")),
    );
  }
  fill(el, parts);
}

function ringBanner(call, actions) {
  const name = shortName(call.peer);
  const kind = call.video ? "video call" : "audio call";
  if (!call.encrypted) {
    return h(
      "div",
      { class: "banner ring danger", "data-testid": "ring-banner", "data-call-id": call.call_id, role: "alert" },
      h("div", { class: "ring-who" }, h("span", { class: "avatar big" }, initial(name)), h("div", {}, h("strong", {}, `${name} is calling`), h("div", { class: "sub" }, kind))),
      h(
        "div",
        { class: "e2ee-warning", "data-testid": "e2ee-warning" },
        icon("warn"),
        h("div", {}, h("strong", {}, "This call would not be end-to-end encrypted."), ` ${name}'s app cannot encrypt call media. Servers relaying the call could see and hear it.`),
      ),
      h(
        "div",
        { class: "ring-actions" },
        h("button", { class: "btn danger", "data-testid": "reject", onclick: () => actions.reject(call.call_id) }, "Reject"),
        h("button", { class: "btn", "data-testid": "continue-unencrypted", onclick: () => actions.answer(call.call_id, call.video, true) }, "Continue unencrypted"),
      ),
    );
  }
  return h(
    "div",
    { class: "banner ring", "data-testid": "ring-banner", "data-call-id": call.call_id, role: "alert" },
    h("div", { class: "ring-who" }, h("span", { class: "avatar big pulse" }, initial(name)), h("div", {}, h("strong", {}, `${name} is calling`), h("div", { class: "sub" }, `Incoming ${kind} · end-to-end encrypted`))),
    h(
      "div",
      { class: "ring-actions" },
      h("button", { class: "btn danger", "data-testid": "reject", onclick: () => actions.reject(call.call_id) }, "Reject"),
      h("button", { class: "btn accept", "data-testid": "accept-audio", onclick: () => actions.answer(call.call_id, false, false) }, icon("phone"), "Accept audio"),
      call.video ? h("button", { class: "btn accept", "data-testid": "accept-video", onclick: () => actions.answer(call.call_id, true, false) }, icon("video"), "Accept video") : null,
    ),
  );
}

function cannotAnswer(call, actions) {
  const name = shortName(call.peer);
  return h(
    "div",
    { class: "banner ring danger", "data-testid": "ring-banner", "data-call-id": call.call_id, role: "alert" },
    h("div", { class: "ring-who" }, h("span", { class: "avatar big" }, initial(name)), h("div", {}, h("strong", {}, `${name} is calling`), h("div", { class: "sub" }, "This browser cannot encrypt calls: answer on another device."))),
    h("div", { class: "ring-actions" }, h("button", { class: "btn danger", "data-testid": "reject", onclick: () => actions.reject(call.call_id) }, "Reject")),
  );
}

function waitingBanner({ call, current_call_id }, actions) {
  const name = shortName(call.peer);
  // A call that cannot be encrypted is answered only by the user's explicit choice, here too.
  const plain = !call.encrypted;
  return h(
    "div",
    { class: `banner ring waiting${plain ? " danger" : ""}`, "data-testid": "call-waiting", "data-call-id": call.call_id, role: "alert" },
    h("div", { class: "ring-who" }, h("span", { class: "avatar" }, initial(name)), h("div", {}, h("strong", {}, `${name} is calling`), h("div", { class: "sub" }, "Call waiting"))),
    plain
      ? h("div", { class: "e2ee-warning", "data-testid": "e2ee-warning" }, icon("warn"), h("div", {}, h("strong", {}, "This call would not be end-to-end encrypted."), ` ${name}'s app cannot encrypt call media. Servers relaying the call could see and hear it.`))
      : null,
    h(
      "div",
      { class: "ring-actions" },
      h("button", { class: "btn danger", "data-testid": "reject", onclick: () => actions.reject(call.call_id) }, "Reject"),
      h("button", { class: "btn", "data-testid": plain ? "hold-continue-unencrypted" : "hold-answer", onclick: () => actions.holdAndAnswer(current_call_id, call, plain) }, plain ? "Hold & continue unencrypted" : "Hold & answer"),
      h("button", { class: "btn", "data-testid": plain ? "end-continue-unencrypted" : "end-answer", onclick: () => actions.endAndAnswer(current_call_id, call, plain) }, plain ? "End & continue unencrypted" : "End & answer"),
    ),
  );
}

const liveVideo = (stream) => (stream?.getVideoTracks() ?? []).some((t) => t.readyState === "live");

export function renderCall(el, call, ctx, actions) {
  const name = shortName(call.peer);
  const streams = ctx.remoteStreams(call.call_id);
  const { user, screen } = remoteByPurpose(streams, call.remote.streams);
  const userMeta = Object.values(call.remote.streams).find((s) => s.purpose === "m.usermedia");
  // The far side's own metadata says whether it sends its camera (an audio call it upgraded
  // does); before any metadata, the call's kind does.
  const remoteCameraOff = userMeta ? Boolean(userMeta.video_muted) : !call.video;
  const cameraOff = remoteCameraOff || call.remote.on_hold || !liveVideo(user);
  const connectedAt = ctx.connectedAt(call.call_id);
  const status = callStatus(call.state, connectedAt ? (Date.now() - connectedAt) / 1000 : null);
  const local = call.local;
  const localStream = ctx.localStream(call.call_id);
  const remoteVideo = videoFor(`call:${call.call_id}:remote`, user);
  remoteVideo.dataset.testid = "remote-video";
  remoteVideo.hidden = cameraOff;

  fill(
    el,
    h(
      "div",
      { class: "call-screen", "data-testid": "call-screen", "data-call-id": call.call_id, "data-state": call.state },
      h(
        "header",
        { class: "call-top" },
        h("div", {}, h("strong", { "data-testid": "call-peer" }, name), h("span", { class: "sub", "data-testid": "call-status" }, ` · ${status}`)),
        e2eeBadge(ctx.lastStats(call.call_id), call.encrypted),
      ),
      !call.encrypted
        ? h("div", { class: "e2ee-warning", "data-testid": "e2ee-warning" }, icon("warn"), h("div", {}, h("strong", {}, "Not end-to-end encrypted."), " You chose to continue although the other side cannot encrypt call media."))
        : null,
      !call.owner ? h("div", { class: "banner info" }, "This call's media runs in another sealcall window.") : null,
      h(
        "div",
        { class: `stage${screen ? " with-screen" : ""}` },
        screen ? h("div", { class: "tile screen", "data-testid": "remote-screen" }, videoFor(`call:${call.call_id}:screen`, screen, { muted: true })) : null,
        h(
          "div",
          { class: "tile remote" },
          remoteVideo,
          cameraOff
            ? h(
                "div",
                { class: "placeholder", "data-testid": "remote-placeholder" },
                h("span", { class: "avatar huge" }, initial(name)),
                h("span", {}, call.remote.on_hold ? `${name} put the call on hold` : name),
                userMeta?.audio_muted ? h("span", { class: "sub" }, "microphone muted") : null,
              )
            : null,
          local.on_hold ? h("div", { class: "hold-note", "data-testid": "on-hold" }, "On hold") : null,
          userMeta?.audio_muted && !cameraOff ? h("div", { class: "muted-note", "data-testid": "remote-muted" }, icon("mic-off"), `${name} is muted`) : null,
        ),
        localStream && call.video && !local.video_muted
          ? h("div", { class: "tile local", "data-testid": "local-video" }, videoFor(`call:${call.call_id}:local`, localStream, { muted: true, mirror: true }))
          : null,
      ),
      ctx.statsOpen ? statsPanel(ctx.lastStats(call.call_id)) : null,
      controls(
        [
          toggle("mute", local.audio_muted, local.audio_muted ? "mic-off" : "mic", local.audio_muted ? "Unmute" : "Mute", () => actions.mute(call)),
          toggle("camera", call.video && local.video_muted, call.video && local.video_muted ? "video-off" : "video", !call.video ? "Start camera" : local.video_muted ? "Camera on" : "Camera off", () => actions.camera(call)),
          toggle("screen", local.screen, "screen", local.screen ? "Stop sharing" : "Share screen", () => actions.screen(call)),
          toggle("hold", local.on_hold, "pause", local.on_hold ? "Resume" : "Hold", () => actions.hold(call), !inCall(call)),
          toggle("stats", ctx.statsOpen, "stats", "Stats", actions.toggleStats),
        ],
        h("button", { class: "btn round danger", "data-testid": "hangup", title: "Hang up", onclick: () => actions.hangup(call.call_id) }, icon("phone", "hangup"), h("span", {}, "Hang up")),
      ),
    ),
  );
}

export function toggle(testid, pressed, iconName, label, onclick, disabled = false) {
  return h(
    "button",
    { class: `btn round${pressed ? " pressed" : ""}`, "data-testid": testid, "aria-pressed": String(Boolean(pressed)), title: label, disabled, onclick },
    icon(iconName),
    h("span", {}, label),
  );
}

export function controls(buttons, end) {
  return h("div", { class: "controls" }, buttons, end);
}

export function e2eeBadge(stats, encrypted) {
  const on = Boolean(encrypted && stats?.e2ee);
  return h(
    "span",
    { class: `badge ${on ? "ok" : "off"}`, "data-testid": "e2ee-badge", "data-e2ee": String(on) },
    icon("lock"),
    on ? "end-to-end encrypted" : encrypted ? "waiting for encrypted media…" : "not encrypted",
  );
}

export function statsPanel(s) {
  const row = (testid, label, value) => h("div", { class: "stat" }, h("span", {}, label), h("strong", { "data-testid": testid }, value));
  return h(
    "div",
    { class: "stats-panel", "data-testid": "stats-panel" },
    row("stat-inbound", "In", formatBitrate(s?.inbound_bps ?? 0)),
    row("stat-outbound", "Out", formatBitrate(s?.outbound_bps ?? 0)),
    row("stat-rtt", "RTT", s?.rtt_ms == null ? "–" : `${s.rtt_ms} ms`),
    row("stat-decrypted", "Frames decrypted", String(s?.decrypted ?? 0)),
    row("stat-dropped", "Frames dropped", String(s?.dropped ?? 0)),
    row("stat-decoded", "Frames decoded", String(s?.frames_decoded ?? 0)),
    row("stat-lost", "Packets lost", String(s?.packets_lost ?? 0)),
    row("stat-e2ee", "End-to-end encrypted", s?.e2ee ? "yes" : "no"),
  );
}
