// The left column (rooms) and the selected room's timeline of call items.

import { h, fill } from "./dom.js";
import { icon } from "./icons.js";

export function renderRooms(el, vm, actions) {
  fill(
    el,
    vm.rooms.length === 0 ? h("li", { class: "empty" }, vm.connected ? "No rooms yet" : "Connecting…") : null,
    vm.rooms.map((r) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            class: `room${r.selected ? " selected" : ""}`,
            "data-testid": "room",
            "data-room-id": r.room_id,
            "data-kind": r.kind,
            "aria-current": r.selected ? "true" : null,
            onclick: () => actions.selectRoom(r.room_id),
          },
          h("span", { class: `avatar ${r.kind}` }, r.kind === "group" ? icon("group") : initial(r.name)),
          h("span", { class: "room-name" }, r.name),
          r.in_call ? h("span", { class: "live", title: "call in progress" }, "●") : null,
        ),
      ),
    ),
  );
}

export function initial(name) {
  const m = /[\p{L}\p{N}]/u.exec(name ?? "");
  return m ? m[0].toUpperCase() : "?";
}

let scrolledFor = null;

export function renderRoom(el, vm, actions) {
  const room = vm.room;
  if (!room) {
    fill(el, h("div", { class: "empty-room" }, vm.connected ? "Choose a room" : "Connecting to sealcall…"));
    return;
  }
  const disabled = !room.can_call;
  const buttons =
    room.kind === "group"
      ? [
          h("button", { class: "btn primary", "data-testid": "join-call", disabled, onclick: () => actions.joinGroup(false) }, icon("phone"), "Join call"),
          h("button", { class: "btn", "data-testid": "join-video", disabled, onclick: () => actions.joinGroup(true) }, icon("video"), "Join with video"),
        ]
      : [
          h("button", { class: "btn primary", "data-testid": "call-audio", disabled, onclick: () => actions.placeCall(false) }, icon("phone"), "Audio call"),
          h("button", { class: "btn primary", "data-testid": "call-video", disabled, onclick: () => actions.placeCall(true) }, icon("video"), "Video call"),
        ];
  fill(
    el,
    h(
      "header",
      { class: "room-header" },
      h("div", {}, h("h2", { "data-testid": "room-title" }, room.name), h("div", { class: "sub" }, room.kind === "group" ? "Group room" : room.peer ?? "")),
      h("div", { class: "room-actions" }, buttons),
    ),
    h(
      "ol",
      { class: "timeline", "data-testid": "timeline" },
      vm.timeline.length === 0 ? h("li", { class: "empty" }, "No calls yet") : null,
      vm.timeline.map((it) =>
        h(
          "li",
          {
            class: `call-item ${it.outcome} ${it.direction}`,
            "data-testid": "history-item",
            "data-call-id": it.call_id,
            "data-outcome": it.outcome,
            "data-direction": it.direction,
            "data-video": String(it.video),
          },
          h("span", { class: "call-icon" }, icon(it.kind === "video" ? "video" : "phone")),
          h("span", { class: "arrow", "aria-label": it.direction }, it.arrow),
          h("span", { class: "call-text" }, h("span", { class: "title" }, it.title), h("span", { class: "detail" }, it.detail)),
          h("time", {}, it.time),
        ),
      ),
    ),
  );
  // Scroll to the newest call when one was added (not on every render: the user may be reading).
  const list = el.querySelector(".timeline");
  const key = `${room.room_id}:${vm.timeline.length}`;
  if (scrolledFor !== key) {
    scrolledFor = key;
    list.scrollTop = list.scrollHeight;
  }
}
